"""Helpers for driving a RunEngine directly: real store, real providers, recorded events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from exporter_api.config import ExportConfig
from exporter_api.errors import Unauthorized
from exporter_api.providers.base import DatabaseProvider
from exporter_api.providers.postgres import PostgresProvider
from exporter_api.runs.engine import RunEngine
from exporter_api.runs.models import RunCreateRequest, RunState
from exporter_api.runs.repository import RunOwner, RunRepository
from exporter_api.runs.selection import RunPlan, plan_run
from exporter_api.security import AuthenticatedUser
from exporter_api.store import Store, open_store
from tests.exporter_api.runs.conftest import USER1, USER1_PASSWORD, USER2, USER2_PASSWORD


@dataclass
class Recorded:
    method: str
    payload: dict[str, Any]
    at: float


@dataclass
class RecordingPublisher:
    """Stands in for the hub (tested separately through the official client)."""

    events: list[Recorded] = field(default_factory=list)

    async def publish(self, run_id: str, method: str, payload: object) -> None:
        as_dict = msgspec.to_builtins(payload)
        assert isinstance(as_dict, dict)
        self.events.append(Recorded(method, as_dict, time.monotonic()))

    def of(self, method: str, **match: object) -> list[dict[str, Any]]:
        return [
            e.payload
            for e in self.events
            if e.method == method and all(e.payload.get(k) == v for k, v in match.items())
        ]


@dataclass
class StaticCredentials:
    """The vault's `get` for known sessions (the vault itself is tested with security); an
    unknown session fails as the vault does when a session's entry is gone."""

    secrets: dict[str, tuple[str, str]]

    async def get(self, session_id: str) -> tuple[str, str]:
        if session_id not in self.secrets:
            raise Unauthorized("the session's credentials cannot be read")
        return self.secrets[session_id]


def user(
    login: str, session_id: str, *, database_id: str = "db-pg", stream_id: str = "s1"
) -> AuthenticatedUser:
    return AuthenticatedUser(
        login=login,
        database_id=database_id,
        manager_id="m1",
        stream_id=stream_id,
        session_id=session_id,
    )


def plan(config: ExportConfig, body: dict[str, Any]) -> RunPlan:
    return plan_run(msgspec.convert(body, RunCreateRequest), config)


def single(script_id: str, group_id: str, **script: Any) -> dict[str, Any]:
    return {
        "mode": "SingleScript",
        "selection": {
            "groups": [
                {
                    "groupId": group_id,
                    "enabled": True,
                    "scripts": [{"scriptId": script_id, **script}],
                }
            ]
        },
    }


# The runs catalog's two users, each with a session: the credentials an engine kit reads for
# them (session id -> login, password) and who starts a run.
CREDS = {"sess-1": (USER1, USER1_PASSWORD), "sess-2": (USER2, USER2_PASSWORD)}
U1 = user(USER1, "sess-1")
U2 = user(USER2, "sess-2")


def owner(session_id: str = "sess-1") -> RunOwner:
    """Whose a run of U1's is in the store (the database, manager and stream it was made in)."""
    return RunOwner(USER1, "db-pg", "m1", "s1", session_id)


# One run of g-sales's s-orders and s-customers: two lanes at once.
LANES = {
    "mode": "SingleGroup",
    "selection": {
        "groups": [
            {
                "groupId": "g-sales",
                "scripts": [{"scriptId": "s-orders"}, {"scriptId": "s-customers"}],
            }
        ]
    },
}


@dataclass
class EngineKit:
    engine: RunEngine
    store: Store
    repo: RunRepository
    events: RecordingPublisher
    files_root: Path

    async def run_to_end(self, who: AuthenticatedUser, run_plan: RunPlan) -> RunState:
        state = await self.engine.start(who, run_plan)
        await self.engine.wait(state.run_id)
        loaded = await self.repo.load(state.run_id)
        assert loaded is not None
        return loaded

    async def left_running(
        self, run_plan: RunPlan, instance_id: str, *, session_id: str = "sess-1"
    ) -> RunState:
        """U1's run of ``run_plan`` as the instance ``instance_id`` left it in the store:
        Running, and so are its first group, that group's first script and its first variant."""
        state = self.engine._initial_state(U1, run_plan)
        group = state.groups[0]
        script = group.scripts[0]
        state.status = group.status = script.status = script.variants[0].status = "Running"
        assert await self.repo.insert_run(state, owner(session_id), instance_id, max_active=None)
        return state


@asynccontextmanager
async def engine_kit(
    config: ExportConfig,
    data_dir: Path,
    credentials: dict[str, tuple[str, str]],
    providers: dict[str, DatabaseProvider] | None = None,
    state_url: str | None = None,
    **engine_options: Any,
) -> AsyncIterator[EngineKit]:
    store = await open_store(data_dir, state_url)
    try:
        repo = RunRepository(store)
        events = RecordingPublisher()
        providers = providers or {
            db.id: PostgresProvider(db) for db in config.databases if db.provider == "postgres"
        }
        engine = RunEngine(
            config=config,
            repository=repo,
            providers=providers,
            credentials=StaticCredentials(credentials),
            publisher=events,
            files_root=data_dir / "exports",
            exclusive_store=store.backend == "sqlite",
            **engine_options,
        )
        async with engine.running():
            yield EngineKit(engine, store, repo, events, data_dir / "exports")
    finally:
        await store.aclose()
