"""Validation of a ``POST /api/runs`` selection against the catalog, producing a run plan.

The plan is in catalog order (groups, then scripts) whatever the order of the request, so lanes
run their scripts in catalog order. Unknown ids are collected and reported together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args

from exporter_api.errors import BadRequest
from exporter_api.runs.models import (
    ExportMode,
    GroupState,
    RunCreateRequest,
    RunMode,
    RunState,
    ScriptSelection,
    ScriptState,
    VariantState,
    utc_now,
)
from exporter_api.runs.writers.formats import FILE_FORMATS, XLSX_MAX_COLUMNS

if TYPE_CHECKING:
    from exporter_api.config import (
        ColumnItem,
        ExportConfig,
        FileFormat,
        GroupConfig,
        ScriptConfig,
    )
    from exporter_api.security import AuthenticatedUser

RUN_MODES: tuple[str, ...] = get_args(RunMode)
EXPORT_MODES: tuple[str, ...] = get_args(ExportMode)


@dataclass(frozen=True)
class PlannedScript:
    group_id: str
    script: ScriptConfig
    export_mode: ExportMode
    columns: tuple[ColumnItem, ...]
    """Profile items to export, in profile order (every item for ``AllColumns``)."""
    format: FileFormat | None = None
    """The run's choice (``format`` of the selection); None = ``[output] format``."""


@dataclass(frozen=True)
class PlannedGroup:
    group: GroupConfig
    scripts: tuple[PlannedScript, ...]


@dataclass(frozen=True)
class RunPlan:
    mode: RunMode
    groups: tuple[PlannedGroup, ...]

    def scripts(self) -> list[PlannedScript]:
        return [s for g in self.groups for s in g.scripts]

    def lanes(self) -> dict[int, list[PlannedScript]]:
        """Scripts by execution lane, each lane in catalog order."""
        lanes: dict[int, list[PlannedScript]] = {}
        for script in self.scripts():
            lanes.setdefault(script.script.execution_lane, []).append(script)
        return dict(sorted(lanes.items()))


def _names(ids: list[str]) -> str:
    return ", ".join(repr(i) for i in ids)


def plan_run(request: RunCreateRequest, config: ExportConfig) -> RunPlan:
    """Check the request against the catalog; raise ``BadRequest`` naming what is wrong."""
    if request.mode not in RUN_MODES:
        raise BadRequest(
            f"mode must be one of {', '.join(RUN_MODES)}, not {request.mode!r}", field="mode"
        )
    mode: RunMode = request.mode  # type: ignore[assignment]  # checked just above

    groups_by_id = {g.id: g for g in config.groups}
    profiles = {p.id: p for p in config.columns_profiles}

    unknown_groups: list[str] = []
    unknown_scripts: list[str] = []
    unknown_columns: list[str] = []
    problems: list[tuple[str, str]] = []
    chosen: dict[str, dict[str, ScriptSelection]] = {}  # enabled group id -> enabled scripts
    seen_groups: set[str] = set()

    for gi, gsel in enumerate(request.selection.groups):
        group = groups_by_id.get(gsel.group_id)
        if group is None:
            unknown_groups.append(gsel.group_id)
            continue
        if gsel.group_id in seen_groups:
            problems.append(
                (f"selection.groups[{gi}].groupId", f"group {gsel.group_id!r} is listed twice")
            )
            continue
        seen_groups.add(gsel.group_id)
        scripts_by_id = {s.id: s for s in group.scripts}
        enabled: dict[str, ScriptSelection] = {}
        seen_scripts: set[str] = set()
        for si, ssel in enumerate(gsel.scripts):
            where = f"selection.groups[{gi}].scripts[{si}]"
            script = scripts_by_id.get(ssel.script_id)
            if script is None:
                unknown_scripts.append(f"{gsel.group_id}/{ssel.script_id}")
                continue
            if ssel.script_id in seen_scripts:
                problems.append((f"{where}.scriptId", f"script {ssel.script_id!r} is listed twice"))
                continue
            seen_scripts.add(ssel.script_id)
            if ssel.export_mode not in EXPORT_MODES:
                problems.append(
                    (
                        f"{where}.exportMode",
                        f"exportMode must be one of {', '.join(EXPORT_MODES)}, "
                        f"not {ssel.export_mode!r}",
                    )
                )
                continue
            if ssel.format is not None and ssel.format not in FILE_FORMATS:
                problems.append(
                    (
                        f"{where}.format",
                        f"format must be one of {', '.join(FILE_FORMATS)}, not {ssel.format!r}",
                    )
                )
                continue
            profile = profiles.get(script.columns_profile_id)
            known = {item.id for item in profile.items} if profile is not None else set()
            missing = [c for c in ssel.selected_column_item_ids if c not in known]
            unknown_columns.extend(f"{ssel.script_id}/{c}" for c in missing)
            if (
                ssel.export_mode == "CustomColumns"
                and ssel.enabled
                and not ssel.selected_column_item_ids
            ):
                problems.append(
                    (
                        f"{where}.selectedColumnItemIds",
                        f"CustomColumns needs at least one column for script {ssel.script_id!r}",
                    )
                )
            if ssel.enabled:
                enabled[ssel.script_id] = ssel
        if gsel.enabled:
            chosen[gsel.group_id] = enabled

    if unknown_groups:
        raise BadRequest(f"unknown group ids: {_names(unknown_groups)}", field="selection.groups")
    if unknown_scripts:
        raise BadRequest(
            f"unknown script ids (group/script): {_names(unknown_scripts)}",
            field="selection.groups.scripts",
        )
    if unknown_columns:
        raise BadRequest(
            f"unknown column item ids (script/column): {_names(unknown_columns)}",
            field="selection.groups.scripts.selectedColumnItemIds",
        )
    if problems:
        field, message = problems[0]
        raise BadRequest(message, field=field)

    enabled_groups = [gid for gid in chosen]
    enabled_scripts = sum(len(s) for s in chosen.values())
    if mode == "SingleGroup" and len(enabled_groups) != 1:
        raise BadRequest(
            f"mode SingleGroup needs exactly one enabled group, got {len(enabled_groups)}",
            field="selection.groups",
        )
    if mode == "SingleScript" and enabled_scripts != 1:
        raise BadRequest(
            f"mode SingleScript needs exactly one enabled script, got {enabled_scripts}",
            field="selection.groups.scripts",
        )
    if enabled_scripts == 0:
        raise BadRequest("the selection enables no script", field="selection.groups")

    planned_groups: list[PlannedGroup] = []
    for group in config.groups:  # catalog order
        if group.id not in chosen or not chosen[group.id]:
            continue
        selected = chosen[group.id]
        planned: list[PlannedScript] = []
        for script in group.scripts:  # catalog order
            picked = selected.get(script.id)
            if picked is None:
                continue
            profile = profiles[script.columns_profile_id]
            if picked.export_mode == "CustomColumns":
                wanted = set(picked.selected_column_item_ids)
                columns = tuple(item for item in profile.items if item.id in wanted)
            else:
                columns = tuple(profile.items)
            export_mode: ExportMode = (
                "CustomColumns" if picked.export_mode == "CustomColumns" else "AllColumns"
            )
            fmt: FileFormat | None = picked.format  # type: ignore[assignment]  # checked above
            if fmt == "xlsx" and len(columns) > XLSX_MAX_COLUMNS:
                raise BadRequest(
                    f"script {script.id!r} has {len(columns):,} columns; an XLSX sheet holds at "
                    f"most {XLSX_MAX_COLUMNS:,} (choose csv)",
                    field="selection.groups.scripts.format",
                )
            planned.append(PlannedScript(group.id, script, export_mode, columns, fmt))
        planned_groups.append(PlannedGroup(group, tuple(planned)))
    return RunPlan(mode, tuple(planned_groups))


class PlanUnavailable(Exception):
    """A stored run can no longer be planned: the catalog changed under it."""


def plan_of(state: RunState, config: ExportConfig) -> RunPlan:
    """The plan of a stored run (one taken over from another instance), from the catalog.

    The run's scripts, export modes and column ids were fixed when it started; a catalog that
    no longer has one of its groups, scripts or variants cannot carry it on."""
    groups_by_id = {g.id: g for g in config.groups}
    profiles = {p.id: p for p in config.columns_profiles}
    planned_groups: list[PlannedGroup] = []
    for gstate in state.groups:
        group = groups_by_id.get(gstate.group_id)
        if group is None:
            raise PlanUnavailable(f"group {gstate.group_id!r} is no longer in the catalog")
        scripts_by_id = {s.id: s for s in group.scripts}
        planned: list[PlannedScript] = []
        for sstate in gstate.scripts:
            script = scripts_by_id.get(sstate.script_id)
            if script is None or {v.index for v in script.variants} != {
                v.variant for v in sstate.variants
            }:
                raise PlanUnavailable(
                    f"script {sstate.script_id!r} changed in the catalog since the run started"
                )
            profile = profiles.get(script.columns_profile_id)
            wanted = set(sstate.columns or ())
            columns = tuple(i for i in profile.items if i.id in wanted) if profile else ()
            fmt: FileFormat | None = (
                sstate.format if sstate.format in FILE_FORMATS else None  # type: ignore[assignment]
            )
            planned.append(PlannedScript(group.id, script, sstate.export_mode, columns, fmt))
        planned_groups.append(PlannedGroup(group, tuple(planned)))
    return RunPlan(state.mode, tuple(planned_groups))


def initial_state(plan: RunPlan, user: AuthenticatedUser, run_id: str) -> RunState:
    """The state of a new run of ``plan``: everything Queued."""
    now = utc_now()
    groups = [
        GroupState(
            group_id=pg.group.id,
            display_name=pg.group.display_name,
            status="Queued",
            scripts=[
                ScriptState(
                    script_id=ps.script.id,
                    display_name=ps.script.display_name,
                    execution_lane=ps.script.execution_lane,
                    export_mode=ps.export_mode,
                    columns=[c.id for c in ps.columns],
                    status="Queued",
                    format=ps.format,
                    message="Queued",
                    variants=[
                        VariantState(variant=v.index, status="Queued", message="Queued")
                        for v in ps.script.variants
                    ],
                )
                for ps in pg.scripts
            ],
        )
        for pg in plan.groups
    ]
    return RunState(
        run_id=run_id,
        status="Queued",
        mode=plan.mode,
        login=user.login,
        database_id=user.database_id,
        manager_id=user.manager_id,
        stream_id=user.stream_id,
        created_at=now,
        updated_at=now,
        groups=groups,
    )
