"""Persistence of run trees through the state store (tables from migration 0002_runs.sql).

The engine keeps the live ``RunState`` of each active run in memory and writes every change here
as it happens; readers (REST, hub subscription) always read the store, so one source of truth
serves running and finished runs alike. Who drives a run (claims, heartbeats, cancel flags) is
`exporter_api.runs.queue`'s; the rows and queries of its recorded files are
`exporter_api.runs.filerecords`' (a save records a variant's files in its transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from exporter_api.runs import filerecords
from exporter_api.runs.filerecords import StoredFile
from exporter_api.runs.models import (
    GroupState,
    RunState,
    RunSummary,
    ScriptState,
    VariantState,
)
from exporter_api.runs.queue import store_clock

if TYPE_CHECKING:
    from exporter_api.store import Store

# SQL below spells ``ACTIVE_STATUSES`` out as ('Queued', 'Running'); Python code uses is_active().


class RunNotOwned(Exception):
    """A save by an instance that no longer drives the run (another one took it over)."""


@dataclass(frozen=True)
class RunOwner:
    """Who a run belongs to: the user and the context chosen at login."""

    login: str
    database_id: str
    manager_id: str
    stream_id: str
    session_id: str

    def owns(self, login: str, database_id: str, manager_id: str, stream_id: str) -> bool:
        return (self.login, self.database_id, self.manager_id, self.stream_id) == (
            login,
            database_id,
            manager_id,
            stream_id,
        )


class RunRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- writes -----------------------------------------------------------------------------

    async def insert_run(
        self, state: RunState, owner: RunOwner, instance_id: str, *, max_active: int | None
    ) -> bool:
        """Insert a new run with its tree; ``False`` (nothing written) when the owner already
        has ``max_active`` runs Queued or Running."""
        async with self.store.transaction():
            if max_active is not None:
                # Count and insert under one lock per owner: two instances (or two requests)
                # cannot both see "limit - 1" active runs and both insert.
                await self.store.lock(f"active-runs\n{owner.login}\n{owner.database_id}")
                row = await self.store.fetch_one(
                    "SELECT COUNT(*) FROM runs WHERE login = :login AND database_id = :db"
                    " AND status IN ('Queued', 'Running')",
                    {"login": owner.login, "db": owner.database_id},
                )
                if row is not None and int(row[0]) >= max_active:
                    return False
            beat = store_clock(self.store)  # the store's clock, as every heartbeat's
            await self.store.execute(
                "INSERT INTO runs (run_id, login, database_id, manager_id, stream_id, session_id,"  # noqa: S608 - no user input
                " mode, status, error, instance_id, heartbeat_at, created_at, updated_at,"
                " started_at, finished_at) VALUES (:run_id, :login, :database_id, :manager_id,"
                f" :stream_id, :session_id, :mode, :status, :error, :instance_id, {beat},"
                " :created_at, :updated_at, :started_at, :finished_at)",
                {
                    "run_id": state.run_id,
                    "login": owner.login,
                    "database_id": owner.database_id,
                    "manager_id": owner.manager_id,
                    "stream_id": owner.stream_id,
                    "session_id": owner.session_id,
                    "mode": state.mode,
                    "status": state.status,
                    "error": state.error,
                    "instance_id": instance_id,
                    "created_at": state.created_at,
                    "updated_at": state.updated_at,
                    "started_at": state.started_at,
                    "finished_at": state.finished_at,
                },
            )
            for gpos, group in enumerate(state.groups):
                await self.store.execute(
                    "INSERT INTO run_groups (run_id, group_id, position, display_name, status)"
                    " VALUES (:run_id, :group_id, :position, :display_name, :status)",
                    {
                        "run_id": state.run_id,
                        "group_id": group.group_id,
                        "position": gpos,
                        "display_name": group.display_name,
                        "status": group.status,
                    },
                )
                for spos, script in enumerate(group.scripts):
                    await self.store.execute(
                        "INSERT INTO run_scripts (run_id, group_id, script_id, position,"
                        " display_name, execution_lane, export_mode, column_ids, status, message,"
                        " format) VALUES (:run_id, :group_id, :script_id, :position,"
                        " :display_name, :lane, :export_mode, :column_ids, :status, :message,"
                        " :format)",
                        {
                            "run_id": state.run_id,
                            "group_id": group.group_id,
                            "script_id": script.script_id,
                            "position": spos,
                            "display_name": script.display_name,
                            "lane": script.execution_lane,
                            "export_mode": script.export_mode,
                            "column_ids": (
                                msgspec.json.encode(script.columns).decode()
                                if script.columns is not None
                                else None
                            ),
                            "status": script.status,
                            "message": script.message,
                            "format": script.format,
                        },
                    )
                    for variant in script.variants:
                        await self.store.execute(
                            "INSERT INTO run_variants (run_id, script_id, variant, status, message)"
                            " VALUES (:run_id, :script_id, :variant, :status, :message)",
                            {
                                "run_id": state.run_id,
                                "script_id": script.script_id,
                                "variant": variant.variant,
                                "status": variant.status,
                                "message": variant.message,
                            },
                        )
        return True

    async def save(
        self,
        state: RunState,
        *,
        group: GroupState | None = None,
        script: ScriptState | None = None,
        variants: list[VariantState] | None = None,
        file: StoredFile | None = None,
        files: Sequence[StoredFile] = (),
        instance_id: str | None = None,
    ) -> None:
        """Persist the run row and the given changed parts (and new ``file`` / ``files``),
        in one transaction. With
        ``instance_id``, only while that instance still drives the run (else ``RunNotOwned``,
        nothing written)."""
        async with self.store.transaction():
            await self._save_run(state, instance_id)
            if group is not None:
                await self._save_group(state.run_id, group)
            if script is not None:
                await self._save_script(state.run_id, script)
            if variants and script is not None:
                for variant in variants:
                    await self._save_variant(state.run_id, script.script_id, variant)
            for new in [file, *files] if file is not None else files:
                await filerecords.insert(self.store, new)

    async def save_all(self, state: RunState, instance_id: str | None = None) -> None:
        """Persist the whole tree (after a cancel or a failure touched many parts); with
        ``instance_id`` only while that instance still drives the run, as in :meth:`save`."""
        async with self.store.transaction():
            await self._save_run(state, instance_id)
            for group in state.groups:
                await self._save_group(state.run_id, group)
                for script in group.scripts:
                    await self._save_script(state.run_id, script)
                    for variant in script.variants:
                        await self._save_variant(state.run_id, script.script_id, variant)

    async def _save_run(self, state: RunState, instance_id: str | None) -> None:
        # A save proves its instance alive now (by the store's clock, as every heartbeat):
        # never the older time of the change saved, else a long variant's progress saves
        # would make its run look abandoned to the other instances.
        beat = store_clock(self.store)
        changed = await self.store.execute(
            "UPDATE runs SET status = :status, error = :error, updated_at = :updated_at,"  # noqa: S608 - no user input
            f" heartbeat_at = {beat}, started_at = :started_at,"
            " finished_at = :finished_at WHERE run_id = :run_id"
            " AND (:instance = '' OR instance_id = :instance)",
            {
                "instance": instance_id or "",
                "run_id": state.run_id,
                "status": state.status,
                "error": state.error,
                "updated_at": state.updated_at,
                "started_at": state.started_at,
                "finished_at": state.finished_at,
            },
        )
        if instance_id is not None and changed == 0:
            raise RunNotOwned(state.run_id)

    async def _save_group(self, run_id: str, group: GroupState) -> None:
        await self.store.execute(
            "UPDATE run_groups SET status = :status WHERE run_id = :run_id AND group_id = :gid",
            {"run_id": run_id, "gid": group.group_id, "status": group.status},
        )

    async def _save_script(self, run_id: str, script: ScriptState) -> None:
        await self.store.execute(
            "UPDATE run_scripts SET status = :status, message = :message,"
            " rows_exported = :rows, bytes_written = :bytes, started_at = :started_at,"
            " finished_at = :finished_at, error = :error, rows_expected = :expected,"
            " eta_seconds = :eta WHERE run_id = :run_id AND script_id = :sid",
            {
                "run_id": run_id,
                "sid": script.script_id,
                "status": script.status,
                "message": script.message,
                "rows": script.rows_exported,
                "bytes": script.bytes_written,
                "started_at": script.started_at,
                "finished_at": script.finished_at,
                "error": script.error,
                "expected": script.rows_expected,
                "eta": script.eta_seconds,
            },
        )

    async def last_rows(
        self, database_id: str, manager_id: str, stream_id: str, script_id: str
    ) -> int | None:
        """Rows the last successful run of ``script_id`` for this database, manager and stream
        exported (whoever ran it), or None when it never succeeded there."""
        row = await self.store.fetch_one(
            "SELECT s.rows_exported FROM run_scripts s JOIN runs r ON r.run_id = s.run_id"
            " WHERE r.database_id = :db AND r.manager_id = :manager AND r.stream_id = :stream"
            " AND s.script_id = :sid AND s.status = 'Success'"
            " ORDER BY s.finished_at DESC LIMIT 1",
            {"db": database_id, "manager": manager_id, "stream": stream_id, "sid": script_id},
        )
        return int(row[0]) if row is not None else None

    async def _save_variant(self, run_id: str, script_id: str, variant: VariantState) -> None:
        await self.store.execute(
            "UPDATE run_variants SET status = :status, message = :message,"
            " rows_exported = :rows, bytes_written = :bytes, started_at = :started_at,"
            " finished_at = :finished_at, error = :error, file_id = :file_id"
            " WHERE run_id = :run_id AND script_id = :sid AND variant = :variant",
            {
                "run_id": run_id,
                "sid": script_id,
                "variant": variant.variant,
                "status": variant.status,
                "message": variant.message,
                "rows": variant.rows_exported,
                "bytes": variant.bytes_written,
                "started_at": variant.started_at,
                "finished_at": variant.finished_at,
                "error": variant.error,
                "file_id": variant.file_id,
            },
        )

    async def finished_before(self, cutoff: str, limit: int = 500) -> list[str]:
        """Runs that ended before ``cutoff`` (ISO time), oldest first."""
        rows = await self.store.fetch_all(
            "SELECT run_id FROM runs WHERE status NOT IN ('Queued', 'Running')"
            " AND COALESCE(finished_at, updated_at) < :cutoff ORDER BY run_id LIMIT :limit",
            {"cutoff": cutoff, "limit": limit},
        )
        return [str(r[0]) for r in rows]

    async def delete_run(self, run_id: str) -> bool:
        """Delete a finished run; its groups, scripts, variants and file rows go with it
        (``ON DELETE CASCADE``)."""
        deleted = await self.store.execute(
            "DELETE FROM runs WHERE run_id = :run_id AND status NOT IN ('Queued', 'Running')",
            {"run_id": run_id},
        )
        return deleted > 0

    # --- reads ------------------------------------------------------------------------------

    async def owner(self, run_id: str) -> RunOwner | None:
        row = await self.store.fetch_one(
            "SELECT login, database_id, manager_id, stream_id, session_id FROM runs"
            " WHERE run_id = :run_id",
            {"run_id": run_id},
        )
        return RunOwner(*(str(v) for v in row)) if row is not None else None

    async def load(self, run_id: str) -> RunState | None:
        row = await self.store.fetch_one(
            "SELECT run_id, status, mode, login, database_id, manager_id, stream_id, created_at,"
            " updated_at, started_at, finished_at, error FROM runs WHERE run_id = :run_id",
            {"run_id": run_id},
        )
        if row is None:
            return None
        state = RunState(
            run_id=row[0],
            status=row[1],
            mode=row[2],
            login=row[3],
            database_id=row[4],
            manager_id=row[5],
            stream_id=row[6],
            created_at=row[7],
            updated_at=row[8],
            started_at=row[9],
            finished_at=row[10],
            error=row[11],
        )
        params = {"run_id": run_id}
        groups: dict[str, GroupState] = {}
        for g in await self.store.fetch_all(
            "SELECT group_id, display_name, status FROM run_groups WHERE run_id = :run_id"
            " ORDER BY position",
            params,
        ):
            groups[g[0]] = GroupState(group_id=g[0], display_name=g[1], status=g[2])
        scripts: dict[str, ScriptState] = {}
        for s in await self.store.fetch_all(
            "SELECT group_id, script_id, display_name, execution_lane, export_mode, column_ids,"
            " status, message, rows_exported, bytes_written, started_at, finished_at, error,"
            " format, rows_expected, eta_seconds FROM run_scripts WHERE run_id = :run_id"
            " ORDER BY position",
            params,
        ):
            script = ScriptState(
                script_id=s[1],
                display_name=s[2],
                execution_lane=int(s[3]),
                export_mode=s[4],
                columns=msgspec.json.decode(s[5], type=list[str]) if s[5] else None,
                status=s[6],
                message=s[7],
                rows_exported=int(s[8]),
                bytes_written=int(s[9]),
                started_at=s[10],
                finished_at=s[11],
                error=s[12],
                format=s[13],
                rows_expected=int(s[14]) if s[14] is not None else None,
                eta_seconds=int(s[15]) if s[15] is not None else None,
            )
            scripts[script.script_id] = script
            groups[s[0]].scripts.append(script)
        for v in await self.store.fetch_all(
            "SELECT script_id, variant, status, message, rows_exported, bytes_written,"
            " started_at, finished_at, error, file_id FROM run_variants WHERE run_id = :run_id"
            " ORDER BY script_id, variant",
            params,
        ):
            scripts[v[0]].variants.append(
                VariantState(
                    variant=int(v[1]),
                    status=v[2],
                    message=v[3],
                    rows_exported=int(v[4]),
                    bytes_written=int(v[5]),
                    started_at=v[6],
                    finished_at=v[7],
                    error=v[8],
                    file_id=v[9],
                )
            )
        state.groups = list(groups.values())
        return state

    async def list_runs(
        self,
        login: str,
        database_id: str,
        manager_id: str,
        stream_id: str,
        *,
        limit: int,
        cursor: str | None,
    ) -> list[RunSummary]:
        """The owner's runs, newest first (ULIDs sort by time), after ``cursor`` if given."""
        rows = await self.store.fetch_all(
            "SELECT run_id, status, mode, database_id, manager_id, stream_id, created_at,"
            " updated_at, started_at, finished_at, error FROM runs"
            " WHERE login = :login AND database_id = :db AND manager_id = :manager"
            " AND stream_id = :stream AND (:cursor = '' OR run_id < :cursor)"
            " ORDER BY run_id DESC LIMIT :limit",
            {
                "login": login,
                "db": database_id,
                "manager": manager_id,
                "stream": stream_id,
                "cursor": cursor or "",
                "limit": limit,
            },
        )
        return [
            RunSummary(
                run_id=r[0],
                status=r[1],
                mode=r[2],
                database_id=r[3],
                manager_id=r[4],
                stream_id=r[5],
                created_at=r[6],
                updated_at=r[7],
                started_at=r[8],
                finished_at=r[9],
                error=r[10],
            )
            for r in rows
        ]

    async def files(self, run_id: str) -> list[StoredFile]:
        return await filerecords.files(self.store, run_id)

    async def file(self, run_id: str, file_id: str) -> StoredFile | None:
        return await filerecords.file(self.store, run_id, file_id)


__all__ = ["RunNotOwned", "RunOwner", "RunRepository"]
