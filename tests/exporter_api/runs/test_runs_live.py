"""The service end to end on a real port: runs REST, downloads and /hubs/runs observed with the
official @microsoft/signalr client (Node), against the throwaway PostgreSQL cluster."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import httpx
import pytest

from tests.exporter_api.runs.conftest import (
    USER1,
    USER1_PASSWORD,
    USER2,
    USER2_PASSWORD,
    ExportDatabase,
    poll_until,
)
from tests.exporter_api.runs.live import (
    Service,
    bearer,
    events,
    held_hub_watch,
    hub_watch,
    live_service,
    wait_for_type,
)

pytestmark = pytest.mark.compat

FAST = {
    "mode": "AllGroups",
    "selection": {
        "groups": [
            {
                "groupId": "g-sales",
                "enabled": True,
                "scripts": [
                    {"scriptId": "s-orders", "enabled": True, "exportMode": "AllColumns"},
                    {"scriptId": "s-customers", "enabled": True, "exportMode": "AllColumns"},
                    {"scriptId": "s-empty", "enabled": True, "exportMode": "AllColumns"},
                ],
            },
            {
                "groupId": "g-misc",
                "enabled": True,
                "scripts": [{"scriptId": "s-bad", "enabled": True, "exportMode": "AllColumns"}],
            },
        ]
    },
}


def single(group_id: str, script_id: str) -> dict[str, Any]:
    return {
        "mode": "SingleScript",
        "selection": {
            "groups": [{"groupId": group_id, "enabled": True, "scripts": [{"scriptId": script_id}]}]
        },
    }


async def start(service: Service, token: str, body: dict[str, Any]) -> str:
    response = await service.http.post("/api/runs", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "Queued"
    assert len(created["runId"]) == 26
    assert response.headers["location"] == f"/api/runs/{created['runId']}"
    run_id: str = created["runId"]
    return run_id


async def test_full_run_observed_through_the_official_client(
    catalog_path: Path, tmp_path: Path
) -> None:
    async with live_service(catalog_path, tmp_path / "data") as service:
        token = await service.login(USER1, USER1_PASSWORD)
        async with hub_watch(service, token, create=FAST) as lines:
            pass
        # The run's first events reach the user's connection even before the POST's answer
        # is read, so "created" need not be the first line.
        created = next(line for line in lines if line["type"] == "created")
        assert created["status"] == "Queued"
        run_id = created["runId"]
        lines = [line for line in lines if line is not created]
        final = (await service.http.get(f"/api/runs/{run_id}", headers=bearer(token))).json()
        files = (await service.http.get(f"/api/runs/{run_id}/files", headers=bearer(token))).json()
        one = files["files"][0]
        download = await service.http.get(one["downloadUrl"], headers=bearer(token))
        archive = await service.http.get(f"/api/runs/{run_id}/files.zip", headers=bearer(token))
        listing = (await service.http.get("/api/runs", headers=bearer(token))).json()

    kinds = [line["type"] for line in lines]
    assert kinds.count("state") == 1  # events may arrive before the SubscribeRun result
    assert kinds[-1] == "done"
    assert "timeout" not in kinds
    # SubscribeRun answers the same DTO as GET /api/runs/{runId}
    state = next(line["state"] for line in lines if line["type"] == "state")
    assert state["runId"] == run_id
    assert set(state) == set(final)
    assert [g["groupId"] for g in state["groups"]] == ["g-sales", "g-misc"]

    # the events after the subscription, in the contract's names and shapes
    run_events = events(lines, "run.updated", runId=run_id)
    assert run_events[-1]["status"] == "Failed"
    assert run_events[-1]["updatedAt"].endswith("Z")
    orders = events(lines, "script.updated", scriptId="s-orders")
    messages = [e["message"] for e in orders if e["status"] == "Running"]
    assert messages == sorted(messages)  # variants in turn
    assert messages[-1] == "Executing variant 3/3"
    assert orders[-1] == {
        "runId": run_id,
        "groupId": "g-sales",
        "scriptId": "s-orders",
        "status": "Success",
        "message": "Success",
        "variant": None,
        "variantCount": 3,
    }
    assert events(lines, "group.updated", groupId="g-misc")[-1] == {
        "runId": run_id,
        "groupId": "g-misc",
        "status": "Failed",
    }
    progress = events(lines, "script.progress", scriptId="s-customers")
    customers = next(s for s in final["groups"][0]["scripts"] if s["scriptId"] == "s-customers")
    assert progress[-1] == {
        "runId": run_id,
        "scriptId": "s-customers",
        "rowsExported": customers["rowsExported"],
        "bytesWritten": customers["bytesWritten"],
    }

    # the final REST state
    assert final["status"] == "Failed"
    bad = next(s for s in final["groups"][1]["scripts"] if s["scriptId"] == "s-bad")
    assert [v["status"] for v in bad["variants"]] == ["Success", "Failed", "Success"]
    assert "division by zero" in bad["variants"][1]["error"]

    # files: one download, and all of them as a ZIP, match their recorded sha256
    assert len(files["files"]) == 6
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert hashlib.sha256(download.content).hexdigest() == one["sha256"]
    assert archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
        names = zf.namelist()
        assert sorted(names) == sorted(f["name"] for f in files["files"])
        for f in files["files"]:
            assert hashlib.sha256(zf.read(f["name"])).hexdigest() == f["sha256"]
    assert listing["items"][0]["runId"] == run_id


async def test_messagepack_long_polling_subscription(catalog_path: Path, tmp_path: Path) -> None:
    async with live_service(catalog_path, tmp_path / "data") as service:
        token = await service.login(USER1, USER1_PASSWORD)
        run_id = await start(service, token, single("g-misc", "s-bad"))
        async with hub_watch(
            service, token, run_id, protocol="messagepack", transport="LongPolling"
        ) as lines:
            pass
    state = next(line["state"] for line in lines if line["type"] == "state")
    assert state["runId"] == run_id
    final_state = state["status"]
    final_events = events(lines, "run.updated", runId=run_id)
    assert (final_events[-1]["status"] if final_events else final_state) == "Failed"


async def test_users_are_isolated(catalog_path: Path, tmp_path: Path) -> None:
    async with live_service(catalog_path, tmp_path / "data") as service:
        token1 = await service.login(USER1, USER1_PASSWORD)
        token2 = await service.login(USER2, USER2_PASSWORD)
        run_id = await start(service, token1, single("g-misc", "s-bad"))
        with anyio.fail_after(20):
            async with hub_watch(service, token1, run_id):
                pass
        files = await service.http.get(f"/api/runs/{run_id}/files", headers=bearer(token1))
        file_url = files.json()["files"][0]["downloadUrl"]
        http = service.http
        for response in (
            await http.get(f"/api/runs/{run_id}", headers=bearer(token2)),
            await http.get(f"/api/runs/{run_id}/files", headers=bearer(token2)),
            await http.get(file_url, headers=bearer(token2)),
            await http.get(f"/api/runs/{run_id}/files.zip", headers=bearer(token2)),
            await http.post(f"/api/runs/{run_id}/cancel", headers=bearer(token2)),
        ):
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/problem+json"
        assert (await http.get(f"/api/runs/{run_id}")).status_code == 401
        assert (await http.get("/api/runs", headers=bearer(token2))).json()["items"] == []
        async with hub_watch(service, token2, run_id) as lines:
            pass
        assert lines[0]["type"] == "subscribe_error"
        assert "not found" in lines[0]["message"]
        assert not [line for line in lines if line["type"] == "event"]

        # a Cyrillic login gives a Cyrillic file name, sent with RFC 5987 encoding
        own = await start(service, token2, single("g-misc", "s-bad"))
        async with hub_watch(service, token2, own):
            pass
        listed = (await http.get(f"/api/runs/{own}/files", headers=bearer(token2))).json()
        first = listed["files"][0]
        assert first["name"] == f"{USER2}_s-bad_v1.csv"
        download = await http.get(first["downloadUrl"], headers=bearer(token2))
        disposition = download.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="')
        encoded = disposition.split("filename*=UTF-8''", 1)[1]
        assert unquote(encoded, encoding="utf-8") == f"{USER2}_s-bad_v1.csv"
        assert disposition.isascii()


async def test_cancel_over_rest(
    catalog_path: Path, tmp_path: Path, export_db: ExportDatabase
) -> None:
    async with live_service(catalog_path, tmp_path / "data") as service:
        token = await service.login(USER1, USER1_PASSWORD)
        run_id = await start(service, token, single("g-slow", "s-slow"))

        async def running() -> bool:
            got = await service.http.get(f"/api/runs/{run_id}", headers=bearer(token))
            return bool(got.json()["status"] == "Running")

        await poll_until(running)
        cancel = await service.http.post(f"/api/runs/{run_id}/cancel", headers=bearer(token))
        assert cancel.status_code == 202
        assert cancel.json()["status"] == "Cancelled"
        again = await service.http.post(f"/api/runs/{run_id}/cancel", headers=bearer(token))
        assert again.status_code == 409
        files = await service.http.get(f"/api/runs/{run_id}/files", headers=bearer(token))
        assert files.json()["files"] == []


async def test_rest_errors_and_paging(catalog_path: Path, tmp_path: Path) -> None:
    async with live_service(catalog_path, tmp_path / "data") as service:
        token = await service.login(USER1, USER1_PASSWORD)
        http = service.http
        assert (await http.post("/api/runs", json=FAST)).status_code == 401
        bad_mode = await http.post(
            "/api/runs", json={**FAST, "mode": "Everything"}, headers=bearer(token)
        )
        assert bad_mode.status_code == 400
        assert bad_mode.json()["field"] == "mode"
        unknown = await http.post(
            "/api/runs", json=single("g-misc", "s-nope"), headers=bearer(token)
        )
        assert unknown.status_code == 400
        assert "g-misc/s-nope" in unknown.json()["detail"]
        wrong_type = await http.post(
            "/api/runs",
            json={"mode": "AllGroups", "selection": {"groups": 5}},
            headers=bearer(token),
        )
        assert wrong_type.status_code == 400
        assert wrong_type.json()["field"] == "selection.groups"
        assert (await http.get("/api/runs/not-a-run", headers=bearer(token))).status_code == 404

        # three active runs per user; the fourth is refused with 429
        slow = [await start(service, token, single("g-slow", "s-slow")) for _ in range(3)]
        refused = await http.post(
            "/api/runs", json=single("g-slow", "s-slow"), headers=bearer(token)
        )
        assert refused.status_code == 429
        assert "retry-after" in refused.headers
        for run_id in slow:
            assert (
                await http.post(f"/api/runs/{run_id}/cancel", headers=bearer(token))
            ).status_code == 202

        page1 = (await http.get("/api/runs?limit=2", headers=bearer(token))).json()
        assert [r["runId"] for r in page1["items"]] == slow[::-1][:2]
        page2 = (
            await http.get(f"/api/runs?limit=2&cursor={page1['nextCursor']}", headers=bearer(token))
        ).json()
        assert [r["runId"] for r in page2["items"]] == [slow[0]]
        assert page2["nextCursor"] is None
        assert (await http.get("/api/runs?limit=0", headers=bearer(token))).status_code == 400
        # a Unicode digit and a number past int()'s digit limit: 400 naming the field, not 500
        for bad in ("%C2%B2", "%D9%A1", "9" * 5000, "0" * 50 + "1"):
            refused = await http.get(f"/api/runs?limit={bad}", headers=bearer(token))
            assert refused.status_code == 400, bad
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["field"] == "limit"


async def test_logout_closes_hub_connections_at_once(catalog_path: Path, tmp_path: Path) -> None:
    async with live_service(catalog_path, tmp_path / "data") as service:
        token = await service.login(USER1, USER1_PASSWORD)
        # A second session of the same user, from another client (logout follows the cookie).
        async with httpx.AsyncClient(base_url=service.base) as elsewhere:
            other = await Service(service.base, elsewhere).login(USER1, USER1_PASSWORD)
        run_id = await start(service, token, single("g-misc", "s-bad"))
        async with (
            held_hub_watch(service, token, run_id) as (lines, tell),
            held_hub_watch(service, other, run_id) as (other_lines, _),
        ):
            # Run events may interleave with what this test looks at: compare the rest.
            def seen(watched: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return [line for line in watched if line["type"] != "event"]

            with anyio.fail_after(10):
                await wait_for_type(lines, "state")
                await wait_for_type(other_lines, "state")
            await tell("again")
            with anyio.fail_after(10):
                while len(seen(lines)) < 2:  # noqa: ASYNC110 - filled from the Node pipe
                    await anyio.sleep(0.02)
            assert seen(lines)[1]["type"] == "state"  # allowed on the open connection
            logout = await service.http.post(
                "/api/auth/logout", headers={**bearer(token), "X-Requested-With": "fetch"}
            )
            assert logout.status_code == 204
            with anyio.fail_after(2):
                closed = await wait_for_type(lines, "closed")
            assert "session has ended" in closed["message"]
            assert closed["t"] - seen(lines)[1]["t"] < 2000
            # a client that tried to reconnect would say "reconnecting" before it is done
            with anyio.fail_after(10):
                await wait_for_type(lines, "done")
            assert [line["type"] for line in seen(lines)] == ["state", "state", "closed", "done"]
            # the other session of the same user keeps its connection
            assert [line["type"] for line in seen(other_lines)] == ["state"]
        # a new connection with the revoked session's token is refused
        async with hub_watch(service, token, run_id) as again:
            pass
        assert again[0]["type"] == "connect_error"
