"""Section 7 of the owner's contract, walked end to end against the bundled demo.

Every request body below is the contract's own example, verbatim (the login's password is the
demo's `demo` in place of the contract's `******`). Every DTO field name, status value and hub
event listed in section 7 is checked, REST and hub alike (the official Node client).
"""

from __future__ import annotations

import re
from typing import Any

import anyio
import httpx
import pytest

from exporter_api.config import Settings, default_config_path
from tests.exporter_api.runs.live import (
    Service,
    bearer,
    events,
    hub_watch,
    live_service,
    wait_for_type,
)

pytestmark = pytest.mark.compat

# --- the contract's example bodies, verbatim ---------------------------------------------------

LOGIN = {
    "dbUsername": "USER1",
    "dbPassword": "demo",
    "databaseId": "db-test",
    "managerId": "m1",
    "streamId": "s1",
}

RUN = {
    "mode": "AllGroups",
    "selection": {
        "groups": [
            {
                "groupId": "g-sales",
                "enabled": True,
                "scripts": [
                    {
                        "scriptId": "s-orders",
                        "enabled": True,
                        "exportMode": "CustomColumns",
                        "selectedColumnItemIds": ["order_id", "customer"],
                    }
                ],
            }
        ]
    },
}

# --- what section 7 names ----------------------------------------------------------------------

STATUSES = {"Queued", "Running", "Success", "NoData", "Failed", "Cancelled"}
FINAL = {"Success", "NoData", "Failed", "Cancelled"}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")  # 2026-01-23T12:34:56.000Z
PROBLEM = "application/problem+json"

EVENT_FIELDS = {
    "run.updated": {"runId", "status", "updatedAt"},
    "group.updated": {"runId", "groupId", "status"},
    "script.updated": {"runId", "groupId", "scriptId", "status", "message"},
    "script.progress": {"runId", "scriptId", "rowsExported", "bytesWritten"},
}
# Fields added after the contract, present only when known (the contract's own stay as they are).
OPTIONAL_EVENT_FIELDS = {"script.progress": {"rowsExpected", "etaSeconds"}}


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    if field is not None:
        assert body.get("field") == field, body


async def login(service: Service) -> tuple[str, httpx.Response]:
    response = await service.http.post("/api/auth/login", json=LOGIN)
    assert response.status_code == 200, response.text
    token: str = response.json()["accessToken"]
    return token, response


# Additive, beyond section 7: the running variant and the variant count (issue 12), always sent.
EVENT_FIELDS["script.updated"] = EVENT_FIELDS["script.updated"] | {"variant", "variantCount"}


async def test_section_7_end_to_end(settings: Settings) -> None:
    async with live_service(default_config_path(), settings.data_dir, "db-test") as service:
        http = service.http

        # 7.1 Catalog for the login form: anonymous.
        databases = await http.get("/api/catalog/databases")
        assert databases.status_code == 200
        assert "db-test" in databases.text
        streams = await http.get("/api/catalog/streams")
        assert streams.status_code == 200
        assert '"m1"' in streams.text
        assert '"s1"' in streams.text

        # 7.1 Auth: login with the contract's body answers exactly the contract's body.
        token, response = await login(service)
        body = response.json()
        assert set(body) == {"accessToken", "user"}
        assert body["accessToken"].count(".") == 2  # a JWT
        assert body["user"] == {
            "login": "USER1",
            "databaseId": "db-test",
            "managerId": "m1",
            "streamId": "s1",
        }
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "path=/api/auth" in cookie
        assert "samesite=strict" in cookie
        assert body["accessToken"] not in response.headers["set-cookie"]

        # 7.1 Catalog: scripts, in the contract's shape.
        assert_problem(await http.get("/api/catalog/scripts"), 401)
        catalog = (await http.get("/api/catalog/scripts", headers=bearer(token))).json()
        assert set(catalog) == {"groups", "columnsProfiles"}
        for group in catalog["groups"]:
            assert {"id", "displayName", "scripts"} <= set(group)
            for script in group["scripts"]:
                assert {"id", "displayName", "executionLane", "columnsProfileId"} <= set(script)
                assert isinstance(script["executionLane"], int)
        sales = next(g for g in catalog["groups"] if g["id"] == "g-sales")
        orders = next(s for s in sales["scripts"] if s["id"] == "s-orders")
        assert orders["executionLane"] == 0
        assert orders["columnsProfileId"] == "orders_cols"
        profile = next(p for p in catalog["columnsProfiles"] if p["id"] == "orders_cols")
        items = {item["id"]: item["label"] for item in profile["items"]}
        assert items["order_id"] == "OrderId"
        assert items["customer"] == "Customer"

        # 7.1 Runs: POST /api/runs with the contract's body -> {"runId", "status": "Queued"}.
        created = await http.post("/api/runs", json=RUN, headers=bearer(token))
        assert created.status_code in (200, 201, 202), created.text
        assert set(created.json()) == {"runId", "status"}
        assert created.json()["status"] == "Queued"
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", created.json()["runId"])  # a ULID

        # 7.3 The same body started while the official client listens on /hubs/runs; its
        # scripts wait for a connection slot until the client has subscribed, so that every
        # script event reaches it.
        with anyio.fail_after(30):
            async with hub_watch(service, token, created.json()["runId"]):
                pass  # the run above has ended: no slot of its is taken from it below
            await service.hold_slots()
            async with hub_watch(service, token, create=RUN) as lines:
                await wait_for_type(lines, "state")
                await service.free_slots()
        created_line = next(line for line in lines if line["type"] == "created")
        assert created_line["status"] == "Queued"
        run_id = created_line["runId"]
        # only this run's events (the user's connections hear all the user's runs)
        lines = [
            line for line in lines if line["type"] != "event" or line["payload"]["runId"] == run_id
        ]
        kinds = [line["type"] for line in lines]
        assert "done" in kinds, kinds
        subscribed = next(line["state"] for line in lines if line["type"] == "state")
        assert subscribed["runId"] == run_id  # SubscribeRun answers the run's state
        for name, fields in EVENT_FIELDS.items():
            payloads = events(lines, name, runId=run_id)
            assert payloads, f"no {name} event"
            for payload in payloads:
                optional = OPTIONAL_EVENT_FIELDS.get(name, set())
                assert fields <= set(payload) <= fields | optional, (name, payload)
                if "status" in payload:
                    assert payload["status"] in STATUSES
        for payload in events(lines, "run.updated", runId=run_id):
            assert TIME.match(payload["updatedAt"])
        assert events(lines, "run.updated", runId=run_id)[-1]["status"] == "Success"
        assert events(lines, "group.updated", runId=run_id)[-1] == {
            "runId": run_id,
            "groupId": "g-sales",
            "status": "Success",
        }
        messages = [p["message"] for p in events(lines, "script.updated", scriptId="s-orders")]
        assert "Executing variant 1/3" in messages
        assert "Executing variant 2/3" in messages
        assert "Executing variant 3/3" in messages
        running = [
            (p["variant"], p["variantCount"])
            for p in events(lines, "script.updated", scriptId="s-orders")
            if p["status"] == "Running"
        ]
        assert {(1, 3), (2, 3), (3, 3)} <= set(running), running
        for payload in events(lines, "script.progress", runId=run_id):
            assert payload["scriptId"] == "s-orders"
            assert isinstance(payload["rowsExported"], int)
            assert isinstance(payload["bytesWritten"], int)
        final_progress = events(lines, "script.progress", runId=run_id)[-1]
        assert final_progress["rowsExported"] > 0
        assert final_progress["bytesWritten"] > 0

        # 7.1 GET /api/runs/{runId}: enough to rebuild the page after a reload.
        state = (await http.get(f"/api/runs/{run_id}", headers=bearer(token))).json()
        assert state["runId"] == run_id
        assert state["status"] == "Success"
        assert TIME.match(state["updatedAt"])
        assert TIME.match(state["createdAt"])
        assert state["mode"] == "AllGroups"
        (group,) = state["groups"]
        assert group["groupId"] == "g-sales"
        assert group["status"] == "Success"
        assert group["displayName"] == "Sales"
        (script,) = group["scripts"]
        assert script["scriptId"] == "s-orders"
        assert script["status"] == "Success"
        assert script["exportMode"] == "CustomColumns"
        assert script["columns"] == ["order_id", "customer"]
        assert script["rowsExported"] == final_progress["rowsExported"]
        assert script["bytesWritten"] == final_progress["bytesWritten"]
        assert [v["variant"] for v in script["variants"]] == [1, 2, 3]
        assert all(v["status"] in STATUSES for v in script["variants"])
        made = [v["fileId"] for v in script["variants"] if v["status"] == "Success"]
        assert sorted(f["fileId"] for f in state["files"]) == sorted(made)
        assert state["zipUrl"].startswith(f"/api/runs/{run_id}/files.zip?sig=")
        assert TIME.match(state["linksExpireAt"])

        # 7.1 GET /api/runs/{runId}/files: the same files, each one downloadable.
        files = (await http.get(f"/api/runs/{run_id}/files", headers=bearer(token))).json()
        assert files["runId"] == run_id
        assert [f["fileId"] for f in files["files"]] == [f["fileId"] for f in state["files"]]
        first = files["files"][0]
        download = await http.get(first["downloadUrl"])  # a signed link: no token needed
        assert download.status_code == 200
        assert download.text.splitlines()[0] == "OrderId,Customer"

        # 7.1 POST /api/runs/{runId}/cancel: a finished run cannot be cancelled (409) ...
        assert_problem(await http.post(f"/api/runs/{run_id}/cancel", headers=bearer(token)), 409)
        # ... a running one can: 202 with its state, ending Cancelled.
        big = {
            "mode": "SingleGroup",
            "selection": {
                "groups": [
                    {
                        "groupId": "g-big",
                        "enabled": True,
                        "scripts": [
                            {"scriptId": "s-ledger", "enabled": True, "exportMode": "AllColumns"}
                        ],
                    }
                ]
            },
        }
        big_id = (await http.post("/api/runs", json=big, headers=bearer(token))).json()["runId"]
        cancelled = await http.post(f"/api/runs/{big_id}/cancel", headers=bearer(token))
        assert cancelled.status_code == 202
        assert cancelled.json()["runId"] == big_id
        assert cancelled.json()["status"] == "Cancelled"

        # 7.1 Refresh: a new access token from the HttpOnly cookie.
        refreshed = await http.post("/api/auth/refresh", headers={"X-Requested-With": "test"})
        assert refreshed.status_code == 200
        assert set(refreshed.json()) == {"accessToken", "user"}
        new_token = refreshed.json()["accessToken"]
        assert (await http.get("/api/runs", headers=bearer(new_token))).status_code == 200

        # 7.1 Logout: the session is revoked and the cookie cleared; tokens stop at once.
        logout = await http.post(
            "/api/auth/logout", headers={**bearer(new_token), "X-Requested-With": "test"}
        )
        assert logout.status_code == 204
        assert "exporter_refresh=" in logout.headers["set-cookie"]
        assert "max-age=0" in logout.headers["set-cookie"].lower()
        assert_problem(await http.get(f"/api/runs/{run_id}", headers=bearer(token)), 401)
        assert_problem(await http.get(f"/api/runs/{run_id}", headers=bearer(new_token)), 401)
        assert_problem(await http.post("/api/auth/refresh", headers={"X-Requested-With": "t"}), 401)


BAD_BODIES: list[tuple[str, bytes | dict[str, Any], str | None]] = [
    ("malformed JSON", b'{"mode": "AllGroups", ', None),
    ("missing selection", {"mode": "AllGroups"}, "selection"),
    ("wrong type", {**RUN, "mode": 1}, "mode"),
    ("unknown mode", {**RUN, "mode": "Everything"}, "mode"),
    (
        "unknown group",
        {"mode": "AllGroups", "selection": {"groups": [{"groupId": "g-nope", "enabled": True}]}},
        "selection.groups",
    ),
    (
        "wrong column",
        {
            "mode": "SingleScript",
            "selection": {
                "groups": [
                    {
                        "groupId": "g-sales",
                        "enabled": True,
                        "scripts": [
                            {
                                "scriptId": "s-orders",
                                "enabled": True,
                                "exportMode": "CustomColumns",
                                "selectedColumnItemIds": ["order_id", "nope"],
                            }
                        ],
                    }
                ]
            },
        },
        "selection.groups.scripts.selectedColumnItemIds",
    ),
    ("unknown field", {**RUN, "extra": True}, "extra"),
    (
        "unknown format",
        {
            "mode": "SingleScript",
            "selection": {
                "groups": [
                    {
                        "groupId": "g-sales",
                        "enabled": True,
                        "scripts": [{"scriptId": "s-orders", "format": "pdf"}],
                    }
                ]
            },
        },
        "selection.groups[0].scripts[0].format",
    ),
]


async def test_every_error_is_problem_json(settings: Settings) -> None:
    async with live_service(default_config_path(), settings.data_dir, "db-test") as service:
        http = service.http
        token, _ = await login(service)
        auth = bearer(token)

        for _, body, field in BAD_BODIES:
            if isinstance(body, bytes):
                response = await http.post(
                    "/api/runs", content=body, headers={**auth, "Content-Type": "application/json"}
                )
            else:
                response = await http.post("/api/runs", json=body, headers=auth)
            assert_problem(response, 400, field)
        assert_problem(
            await http.post("/api/auth/login", json={**LOGIN, "databaseId": "db-nope"}),
            400,
            "databaseId",
        )
        assert_problem(
            await http.post("/api/auth/login", json={**LOGIN, "streamId": "s3"}), 400, "streamId"
        )
        missing = {k: v for k, v in LOGIN.items() if k != "dbPassword"}
        assert_problem(await http.post("/api/auth/login", json=missing), 400, "dbPassword")
        assert_problem(await http.post("/api/auth/login", json={**LOGIN, "dbPassword": "x"}), 401)

        # Unknown routes and wrong methods under /api: problem JSON, 405 with the full Allow.
        assert_problem(await http.get("/api/nope", headers=auth), 404)
        assert_problem(await http.get("/api/runs/not-a-run", headers=auth), 404)
        assert_problem(await http.get("/api/runs/01HZZZZZZZZZZZZZZZZZZZZZZZ", headers=auth), 404)
        wrong = await http.put("/api/runs", headers=auth)
        assert_problem(wrong, 405)
        assert set(wrong.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
        assert_problem(await http.delete("/api/runs/01HZZZZZZZZZZZZZZZZZZZZZZZ"), 405)
        assert_problem(await http.get("/api/auth/login"), 405)
        assert_problem(await http.post("/api/catalog/databases"), 405)
        assert_problem(await http.get("/api/runs"), 401)
        assert_problem(
            await http.post(
                "/api/runs",
                content=b"x" * 70_000,
                headers={**auth, "Content-Type": "application/json"},
            ),
            413,
        )
