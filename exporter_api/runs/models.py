"""Wire types of the runs feature: REST bodies and hub event payloads (camelCase on the wire).

Names, fields and statuses follow section 7 of the owner's contract. Timestamps are ISO-8601 UTC
strings with millisecond precision (``2026-01-23T12:34:56.000Z``), as the contract shows.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import msgspec

from exporter_api.config import FileFormat

# Re-exported: the runs modules take the wire's timestamps from here.
from exporter_api.timestamps import format_time as format_time
from exporter_api.timestamps import utc_now as utc_now

Status = Literal["Queued", "Running", "Success", "NoData", "Failed", "Cancelled"]
"""RunStatus / GroupStatus / ScriptStatus / variant status: one vocabulary for all levels."""

STATUSES: tuple[Status, ...] = ("Queued", "Running", "Success", "NoData", "Failed", "Cancelled")
ACTIVE_STATUSES: frozenset[Status] = frozenset({"Queued", "Running"})

RunMode = Literal["AllGroups", "SingleGroup", "SingleScript"]
ExportMode = Literal["AllColumns", "CustomColumns"]

RUN_ID_PATTERN = "^[0-9A-HJKMNP-TV-Z]{26}$"
RunId = Annotated[
    str,
    msgspec.Meta(
        pattern=RUN_ID_PATTERN,
        description="A run id: a ULID (26 characters of Crockford's base32, sorts by time)",
        examples=["01KB5Q4ZK8M3T2V6W9YB0C1DEF"],
    ),
]
FILE_ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
FileId = Annotated[str, msgspec.Meta(pattern=FILE_ID_PATTERN, description="A file of a run")]
# The request keeps these two as strings (the selection validator names the accepted values in
# its 400); the document still lists them.
_RUN_MODE = Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(get_args(RunMode))})]
_EXPORT_MODE = Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(get_args(ExportMode))})]
_FILE_FORMAT = Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(get_args(FileFormat))})]


class _Camel(msgspec.Struct, rename="camel", kw_only=True):
    pass


# --- POST /api/runs -------------------------------------------------------------------------


class ScriptSelection(_Camel, forbid_unknown_fields=True):
    script_id: str
    enabled: bool = True
    export_mode: _EXPORT_MODE = "AllColumns"
    selected_column_item_ids: list[str] = msgspec.field(default_factory=list)
    # csv | csv.gz | xlsx; absent = the catalog's default (`[output] format`). Checked by the
    # selection validator (a 400 naming the field before the run).
    format: _FILE_FORMAT | None = None


class GroupSelection(_Camel, forbid_unknown_fields=True):
    group_id: str
    enabled: bool = True
    scripts: list[ScriptSelection] = msgspec.field(default_factory=list)


class Selection(_Camel, forbid_unknown_fields=True):
    groups: list[GroupSelection]


class RunCreateRequest(_Camel, forbid_unknown_fields=True):
    """The contract's body. ``mode`` / ``exportMode`` are checked by the selection validator so a
    wrong value is a 400 naming the field and the accepted values."""

    mode: _RUN_MODE
    selection: Selection


class RunCreated(_Camel):
    run_id: RunId
    status: Status


# --- GET /api/runs/{runId} ------------------------------------------------------------------


class VariantState(_Camel):
    variant: int
    status: Status
    message: str | None = None
    rows_exported: int = 0
    bytes_written: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    file_id: str | None = None


class ScriptState(_Camel):
    script_id: str
    display_name: str
    execution_lane: int
    export_mode: ExportMode
    columns: list[str] | None
    status: Status
    format: str | None = None  # the run's choice for this script; None = the catalog's default
    # Rows of the script's last successful run for the same database, manager and stream, and
    # the seconds left at this run's pace (both None when not known: never guessed).
    rows_expected: int | None = None
    eta_seconds: int | None = None
    message: str | None = None
    rows_exported: int = 0
    bytes_written: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    variants: list[VariantState] = msgspec.field(default_factory=list)


class GroupState(_Camel):
    group_id: str
    display_name: str
    status: Status
    scripts: list[ScriptState] = msgspec.field(default_factory=list)


class RunSummary(_Camel):
    run_id: RunId
    status: Status
    mode: RunMode
    database_id: str
    manager_id: str
    stream_id: str
    created_at: str
    updated_at: str
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None


class RunState(RunSummary, kw_only=True):
    """A run in full: its summary, whose it is, and its groups and files."""

    login: str
    groups: list[GroupState] = msgspec.field(default_factory=list)
    # Filled when the state is read for a user (REST, SubscribeRun), so a reloaded page needs
    # nothing else: the files made so far with signed download links, and the zip of them all.
    files: list[RunFile] = msgspec.field(default_factory=list)
    zip_url: str | None = None
    links_expire_at: str | None = None


class RunList(_Camel):
    """``GET /api/runs?limit=&cursor=``: newest first; pass ``nextCursor`` back as ``cursor``."""

    items: list[RunSummary]
    next_cursor: RunId | None = None


# --- files ----------------------------------------------------------------------------------


class RunFile(_Camel):
    """``downloadUrl`` is a signed, short-lived link (``?sig=``, see ``linksExpireAt``) that a
    plain ``<a download>`` can follow; the same path without ``sig`` takes a Bearer token."""

    file_id: FileId
    group_id: str
    script_id: str
    variant: int
    name: str
    size_bytes: int
    rows: int
    sha256: str
    created_at: str
    download_url: str
    format: str = "csv"  # csv | csv.gz | xlsx
    media_type: str = "text/csv"


class RunFiles(_Camel):
    run_id: RunId
    files: list[RunFile]
    zip_url: str
    links_expire_at: str


# --- hub events (server -> client) ----------------------------------------------------------

RUN_UPDATED = "run.updated"
GROUP_UPDATED = "group.updated"
SCRIPT_UPDATED = "script.updated"
SCRIPT_PROGRESS = "script.progress"


class RunUpdated(_Camel):
    run_id: str
    status: Status
    updated_at: str


class GroupUpdated(_Camel):
    run_id: str
    group_id: str
    status: Status


class ScriptUpdated(_Camel):
    run_id: str
    group_id: str
    script_id: str
    status: Status
    message: str | None = None
    # Beyond the contract (additive): the running variant (1-based) and how many the script has,
    # so a client need not parse them out of ``message``.
    variant: int | None = None
    variant_count: int | None = None


class ScriptProgress(_Camel, omit_defaults=True):
    """The contract's four fields, and ``rowsExpected`` / ``etaSeconds`` only when known."""

    run_id: str
    script_id: str
    rows_exported: int
    bytes_written: int
    rows_expected: int | None = None
    eta_seconds: int | None = None
