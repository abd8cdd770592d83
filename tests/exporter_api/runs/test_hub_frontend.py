"""An existing frontend written against the contract (section 7.3) on /hubs/runs, with the
official @microsoft/signalr client (Node): the run id in the query string, operator-mapped
method names with either argument shape, the user feed, and the exact event shapes over JSON
and MessagePack. Runs of others are refused on every way in with zero events leaked."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.exporter_api.conftest import create_pg_database
from tests.exporter_api.runs.conftest import (
    USER1,
    USER1_PASSWORD,
    USER2,
    USER2_PASSWORD,
    ExportDatabase,
    write_catalog,
)
from tests.exporter_api.runs.live import Service, _node, bearer, events, live_service
from tests.exporter_api.runs.test_runs_live import FAST, single, start
from tests.services import PostgresCluster, RedisServer, async_wait_until

pytestmark = pytest.mark.compat

HUB_FRONTEND = Path(__file__).with_name("hub_frontend.mjs")
SLOW = single("g-slow", "s-slow")
ALIASES = """
[server.hub]
subscribe_methods = ["SubscribeRun", "JoinRun", "join_run_group"]
unsubscribe_methods = ["UnsubscribeRun", "LeaveRun"]
"""
Lines = list[dict[str, Any]]
Call = Callable[[str, object], Awaitable[dict[str, Any]]]


@asynccontextmanager
async def frontend(
    service: Service, token: str, *, run_ids: tuple[str, ...] = (), protocol: str = "json"
) -> AsyncIterator[tuple[Lines, Call]]:
    """hub_frontend.mjs connected to ``/hubs/runs?runId=...`` (each of ``run_ids``); ``await
    call(method, arg)`` invokes a hub method and returns its outcome line."""
    hub = f"{service.base}/hubs/runs"
    if run_ids:
        hub += "?" + urlencode([("runId", run_id) for run_id in run_ids])
    command = ["node", str(HUB_FRONTEND), "--hub", hub, "--token", token, "--protocol", protocol]
    async with _node(command, stdin=True) as (lines, process):
        assert process.stdin is not None
        stdin = process.stdin
        await until(lines, lambda: any(line["type"] == "connected" for line in lines))
        calls = 0

        async def call(method: str, arg: object) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            number = calls
            message = {"call": number, "method": method, "arg": arg}
            await stdin.send(json.dumps(message).encode() + b"\n")
            outcome: dict[str, Any] = {}

            def answered() -> bool:
                found = [line for line in lines if line.get("call") == number]
                outcome.update(found[0] if found else {})
                return bool(found)

            await until(lines, answered)
            return outcome

        try:
            yield lines, call
        finally:
            await stdin.send(b"stop\n")


async def until(lines: Lines, check: Callable[[], bool], limit_s: float = 20) -> None:
    """Poll ``check`` (the lines fill from a pipe) until it holds; fails after ``limit_s``, or
    as soon as the client's connection is closed or refused."""

    def holds() -> bool:
        if check():
            return True
        assert not any(line["type"] in {"closed", "connect_error"} for line in lines), lines
        return False

    await async_wait_until(holds, limit_s, "the hub client's lines", interval=0.02)


def of_run(lines: Lines, run_id: str) -> Lines:
    return [
        line for line in lines if line["type"] == "event" and line["payload"]["runId"] == run_id
    ]


def has_event(lines: Lines, name: str, **match: object) -> Callable[[], bool]:
    return lambda: bool(events(lines, name, **match))


async def cancel(service: Service, token: str, run_id: str) -> None:
    response = await service.http.post(f"/api/runs/{run_id}/cancel", headers=bearer(token))
    assert response.status_code == 202, response.text


# --- 1. the run id in the query string ------------------------------------------------------


async def test_run_id_in_the_query_string_subscribes_and_foreign_ids_leak_nothing(
    catalog_path: Path, tmp_path: Path
) -> None:
    async with live_service(catalog_path, tmp_path / "data") as service:
        token1 = await service.login(USER1, USER1_PASSWORD)
        token2 = await service.login(USER2, USER2_PASSWORD)
        run_id = await start(service, token1, SLOW)
        other = await start(service, token1, SLOW)
        async with (
            frontend(service, token1, run_ids=(run_id, "not-a-run-id")) as (mine, _),
            frontend(service, token2, run_ids=(run_id, other)) as (foreign, _),
        ):
            # Joined at connect: the run's own events (not only the user feed's run.updated).
            await until(mine, has_event(mine, "script.progress", runId=run_id))
            await cancel(service, token1, run_id)
            await cancel(service, token1, other)
            await until(mine, has_event(mine, "run.updated", runId=run_id, status="Cancelled"))
            await until(mine, has_event(mine, "run.updated", runId=other, status="Cancelled"))
            await until(mine, has_event(mine, "group.updated", runId=run_id, status="Cancelled"))

    # The status read right after the join comes first, then the changes; each event once
    # although the connection is in the run's group and in its user's group.
    statuses = [e["status"] for e in events(mine, "run.updated", runId=run_id)]
    assert statuses in (["Running", "Cancelled"], ["Queued", "Running", "Cancelled"])
    # The other run is the user's too: the feed brings its run.updated, but nothing else.
    assert {line["name"] for line in of_run(mine, other)} == {"run.updated"}
    # The other user asked for both runs at connect: refused, zero events.
    assert of_run(foreign, run_id) == []
    assert of_run(foreign, other) == []
    assert [line["type"] for line in foreign] == ["connected", "done"]


# --- 2. method names an operator maps, both argument shapes ---------------------------------


async def test_mapped_method_names_take_a_string_or_an_object(
    catalog_path: Path, tmp_path: Path
) -> None:
    with catalog_path.open("a", encoding="utf-8") as file:
        file.write(ALIASES)
    async with live_service(catalog_path, tmp_path / "data") as service:
        token1 = await service.login(USER1, USER1_PASSWORD)
        token2 = await service.login(USER2, USER2_PASSWORD)
        run_id = await start(service, token1, SLOW)
        async with (
            frontend(service, token1) as (mine, call),
            frontend(service, token2) as (foreign, call2),
        ):
            by_string = await call("JoinRun", run_id)
            by_object = await call("JoinRunGroup", {"runId": run_id})  # '_' and case ignored
            by_builtin = await call("SubscribeRun", {"runId": run_id})
            for outcome in (by_string, by_object, by_builtin):
                assert outcome["type"] == "result", outcome
                assert outcome["result"]["runId"] == run_id
                assert outcome["result"]["groups"][0]["groupId"] == "g-slow"
            await until(mine, has_event(mine, "script.progress", runId=run_id))

            refusals = [
                await call2(method, arg)
                for method in ("JoinRun", "join_run_group", "SubscribeRun")
                for arg in (run_id, {"runId": run_id})
            ]
            for refusal in refusals:
                assert refusal["type"] == "error", refusal
                assert refusal["message"].endswith(f"HubException: Run {run_id} not found")
            malformed = await call2("JoinRun", {"run": run_id})
            assert malformed["type"] == "error"

            # LeaveRun (an unsubscribe alias): the run's own events stop; the feed goes on.
            left = await call("LeaveRun", {"runId": run_id})
            assert left == {"type": "result", "call": left["call"], "result": None}
            count = len(mine)
            await cancel(service, token1, run_id)
            await until(mine, has_event(mine, "run.updated", runId=run_id, status="Cancelled"))
            after = [line for line in mine[count:] if line["type"] == "event"]
            assert {line["name"] for line in after} == {"run.updated"}

    assert of_run(foreign, run_id) == []
    assert [line["type"] for line in foreign if line["type"] not in {"result", "error"}] == [
        "connected",
        "done",
    ]


# --- 3. the user feed -----------------------------------------------------------------------


async def test_user_feed_brings_run_updated_of_each_of_the_users_runs(
    catalog_path: Path, tmp_path: Path
) -> None:
    async with live_service(catalog_path, tmp_path / "data") as service:
        token1 = await service.login(USER1, USER1_PASSWORD)
        token2 = await service.login(USER2, USER2_PASSWORD)
        async with (
            frontend(service, token1) as (mine, _),
            frontend(service, token2) as (foreign, _),
        ):
            first = await start(service, token1, FAST)
            second = await start(service, token1, SLOW)
            await until(mine, has_event(mine, "run.updated", runId=first, status="Failed"))
            await until(mine, has_event(mine, "run.updated", runId=second, status="Running"))
            await cancel(service, token1, second)
            await until(mine, has_event(mine, "run.updated", runId=second, status="Cancelled"))

    for run_id, final in ((first, "Failed"), (second, "Cancelled")):
        statuses = [e["status"] for e in events(mine, "run.updated", runId=run_id)]
        assert statuses == ["Running", final]
        assert {line["name"] for line in of_run(mine, run_id)} == {"run.updated"}  # no more
        assert of_run(foreign, run_id) == []


async def test_user_feed_can_be_turned_off(catalog_path: Path, tmp_path: Path) -> None:
    with catalog_path.open("a", encoding="utf-8") as file:
        file.write("\n[server.hub]\nuser_feed = false\n")
    async with live_service(catalog_path, tmp_path / "data") as service:
        token = await service.login(USER1, USER1_PASSWORD)
        async with (
            frontend(service, token) as (quiet, _),
            frontend(service, token) as (watching, call),
        ):
            run_id = await start(service, token, SLOW)
            assert (await call("SubscribeRun", run_id))["type"] == "result"
            await cancel(service, token, run_id)
            await until(watching, has_event(watching, "run.updated", status="Cancelled"))
    assert [line["type"] for line in quiet] == ["connected", "done"]


# --- 4. the events exactly as the contract shows them --------------------------------------

UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
STATUSES = {"Queued", "Running", "Success", "NoData", "Failed", "Cancelled"}
# The contract's examples (section 7.3): field names and JSON types, nothing nested.
CONTRACT: dict[str, dict[str, type | tuple[type, ...]]] = {
    "run.updated": {"runId": str, "status": str, "updatedAt": str},
    "group.updated": {"runId": str, "groupId": str, "status": str},
    "script.updated": {
        "runId": str,
        "groupId": str,
        "scriptId": str,
        "status": str,
        "message": (str, type(None)),
        # additive: the running variant (none once final) and the script's variant count
        "variant": (int, type(None)),
        "variantCount": int,
    },
    "script.progress": {"runId": str, "scriptId": str, "rowsExported": int, "bytesWritten": int},
}


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_events_have_the_contract_shapes(
    catalog_path: Path, tmp_path: Path, protocol: str
) -> None:
    async with live_service(catalog_path, tmp_path / "data") as service:
        token = await service.login(USER1, USER1_PASSWORD)
        run_id = await start(service, token, SLOW)
        async with frontend(service, token, run_ids=(run_id,), protocol=protocol) as (lines, _):
            await until(lines, has_event(lines, "script.progress", runId=run_id))
            await cancel(service, token, run_id)
            await until(lines, has_event(lines, "run.updated", runId=run_id, status="Cancelled"))
            await until(lines, has_event(lines, "script.updated", status="Cancelled"))

    seen = {line["name"] for line in of_run(lines, run_id)}
    assert seen == set(CONTRACT)
    for line in of_run(lines, run_id):
        payload, shape = line["payload"], CONTRACT[line["name"]]
        assert set(payload) == set(shape), line
        for field, kind in shape.items():
            value = payload[field]
            assert isinstance(value, kind), (field, line)
            assert not isinstance(value, bool), (field, line)
        assert payload["runId"] == run_id
        if "status" in payload:
            assert payload["status"] in STATUSES
        if "updatedAt" in payload:
            assert UTC_MS.match(payload["updatedAt"]), payload
    assert events(lines, "script.updated", status="Cancelled")[-1] == {
        "runId": run_id,
        "groupId": "g-slow",
        "scriptId": "s-slow",
        "status": "Cancelled",
        "message": "Cancelled",
        "variant": None,
        "variantCount": 1,
    }


# --- 5. reconnects ----------------------------------------------------------------------------


async def test_the_run_id_in_the_url_subscribes_again_after_a_reconnect(
    catalog_path: Path, tmp_path: Path
) -> None:
    async with live_service(catalog_path, tmp_path / "data") as service:
        token = await service.login(USER1, USER1_PASSWORD)
        run_id = await start(service, token, SLOW)
        async with frontend(service, token, run_ids=(run_id,)) as (lines, _):
            await until(lines, has_event(lines, "script.progress", runId=run_id))
            # The server ends the connection but lets the client reconnect (as on a restart).
            closed = await service.app.state.runs.hub_endpoint.hub_context.close_connections(
                where=lambda ctx: True, error="restarting", allow_reconnect=True
            )
            assert closed == 1
            await until(lines, lambda: any(line["type"] == "reconnected" for line in lines))
            mark = next(i for i, line in enumerate(lines) if line["type"] == "reconnected")
            # No call after the reconnect: the URL's runId joined the new connection.
            await until(lines, lambda: bool(events(lines[mark:], "script.progress", runId=run_id)))
            await cancel(service, token, run_id)
            await until(lines, has_event(lines, "run.updated", runId=run_id, status="Cancelled"))

    statuses = [e["status"] for e in events(lines, "run.updated", runId=run_id)]
    if statuses[0] == "Queued":  # connected before the run started: then its start follows
        statuses = statuses[1:]
    assert statuses == ["Running", "Running", "Cancelled"]  # one at each connect, then the end
    assert "closed" not in [line["type"] for line in lines]


# --- 6. the user feed across instances (Redis backplane) -----------------------------------


async def test_user_feed_crosses_instances(
    tmp_path: Path, export_db: ExportDatabase, pg: PostgresCluster, redis: RedisServer
) -> None:
    catalog_path = write_catalog(tmp_path / "cat", export_db)
    url = create_pg_database(pg, "frontend_feed")
    data = tmp_path / "data"
    async with (
        live_service(catalog_path, data, state_url=url, redis_url=redis.url) as a,
        live_service(catalog_path, data, state_url=url, redis_url=redis.url) as b,
    ):
        token = await a.login(USER1, USER1_PASSWORD)
        async with frontend(b, token) as (lines, _):  # on B; the run starts through A
            run_id = await start(a, token, FAST)
            await until(lines, has_event(lines, "run.updated", runId=run_id, status="Failed"))
    assert [e["status"] for e in events(lines, "run.updated", runId=run_id)] == [
        "Running",
        "Failed",
    ]
    assert {line["name"] for line in of_run(lines, run_id)} == {"run.updated"}
