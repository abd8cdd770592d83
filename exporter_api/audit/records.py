"""What an audit record holds, and the details recorded for each kind of event.

Records never hold a secret: no password, token, signed link or connection string. A login is
recorded by its database login name; a download by the file, never the link that reached it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from exporter_api.config import ExportConfig
    from exporter_api.runs.filerecords import StoredFile
    from exporter_api.runs.models import RunState, ScriptState

LOGIN_SUCCEEDED: Final = "login.succeeded"
LOGIN_FAILED: Final = "login.failed"  # the database refused the credentials
LOGIN_LOCKED_OUT: Final = "login.locked_out"  # this failure locked the (login, client) out
LOGIN_THROTTLED: Final = "login.throttled"  # refused (429) without asking the database
LOGOUT: Final = "logout"
RUN_STARTED: Final = "run.started"
RUN_ENDED: Final = "run.ended"
RUN_CANCEL_REQUESTED: Final = "run.cancel_requested"
DOWNLOAD_FILE: Final = "download.file"
DOWNLOAD_ZIP: Final = "download.zip"

ACTIONS: Final = (
    LOGIN_SUCCEEDED,
    LOGIN_FAILED,
    LOGIN_LOCKED_OUT,
    LOGIN_THROTTLED,
    LOGOUT,
    RUN_STARTED,
    RUN_ENDED,
    RUN_CANCEL_REQUESTED,
    DOWNLOAD_FILE,
    DOWNLOAD_ZIP,
)

COLUMNS: Final = ("event_id", "at", "action", "login", "database_id", "client", "run_id", "details")


class AuditRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One line of the trail (also one JSON line of the sink and of ``exporter-api audit``)."""

    event_id: str
    at: str
    action: str
    login: str
    database_id: str
    client: str
    run_id: str | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)


def run_started_details(state: RunState, config: ExportConfig) -> dict[str, Any]:
    """Who asked for what: manager, stream, mode, and every script with its variants, export
    mode, columns and output format (the run's choice, else ``[output] format``) in the output
    profile it resolves to (the script's, else the database's, else ``[output]``'s own)."""
    return {
        "manager_id": state.manager_id,
        "stream_id": state.stream_id,
        "mode": state.mode,
        "scripts": [
            {
                "group_id": group.group_id,
                "script_id": script.script_id,
                "variants": [v.variant for v in script.variants],
                "export_mode": script.export_mode,
                "columns": script.columns,
                "format": _format(config, state.database_id, group.group_id, script),
            }
            for group in state.groups
            for script in group.scripts
        ],
    }


def _format(
    config: ExportConfig, database_id: str, group_id: str, script: ScriptState
) -> dict[str, Any]:
    """A script's effective file format and CSV style, resolved as the executor's
    ``output_spec`` resolves them."""
    output = config.output
    fmt = script.format or output.format
    database = next((d for d in config.databases if d.id == database_id), None)
    catalog = next(
        (
            s
            for g in config.groups
            if g.id == group_id
            for s in g.scripts
            if s.id == script.script_id
        ),
        None,
    )
    profile_id = (catalog.output_profile if catalog else "") or (
        database.output_profile if database else ""
    )
    # Imported here: the runs package records through this module (no import cycle).
    from exporter_api.runs.writers.formats import CsvStyle

    profile, style = CsvStyle.resolve(output, profile_id)
    details: dict[str, Any] = {"type": fmt, "profile": profile}
    if fmt == "xlsx":  # typed cells: no delimiter, encoding or text style applies
        return details
    return details | {
        "delimiter": style.delimiter,
        "encoding": style.encoding,
        "header": style.header,
        "decimal_separator": style.decimal_separator,
        "date_format": style.date_format,
    }


def run_ended_details(state: RunState, files: list[StoredFile]) -> dict[str, Any]:
    """How it ended, what it produced: rows, bytes, and every file with its sha256."""
    scripts = [s for g in state.groups for s in g.scripts]
    return {
        "manager_id": state.manager_id,
        "stream_id": state.stream_id,
        "status": state.status,
        "error": state.error,
        "created_at": state.created_at,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "rows": sum(s.rows_exported for s in scripts),
        "bytes": sum(s.bytes_written for s in scripts),
        "scripts": {s.script_id: s.status for s in scripts},
        "files": [
            {
                "file_id": f.file_id,
                "name": f.name,
                "script_id": f.script_id,
                "variant": f.variant,
                "rows": f.rows,
                "size_bytes": f.size_bytes,
                "sha256": f.sha256,
            }
            for f in files
        ],
    }


def download_details(files: list[StoredFile], *, via: str, ranged: bool = False) -> dict[str, Any]:
    """Which file(s), and how the request was authorised: ``token`` (Bearer) or ``link``."""
    details: dict[str, Any] = {
        "via": via,
        "files": [{"file_id": f.file_id, "name": f.name, "sha256": f.sha256} for f in files],
    }
    if ranged:
        details["range"] = True
    return details


__all__ = [
    "ACTIONS",
    "COLUMNS",
    "DOWNLOAD_FILE",
    "DOWNLOAD_ZIP",
    "LOGIN_FAILED",
    "LOGIN_LOCKED_OUT",
    "LOGIN_SUCCEEDED",
    "LOGIN_THROTTLED",
    "LOGOUT",
    "RUN_CANCEL_REQUESTED",
    "RUN_ENDED",
    "RUN_STARTED",
    "AuditRecord",
    "download_details",
    "run_ended_details",
    "run_started_details",
]
