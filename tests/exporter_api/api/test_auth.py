from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from exporter_api.api.auth import REFRESH_COOKIE, LoginRequest
from exporter_api.app import create_app
from exporter_api.config import Settings
from exporter_api.logging import configure_logging
from exporter_api.problems import PROBLEM_CONTENT_TYPE
from exporter_api.security.passwords import hash_password
from tests.exporter_api.conftest import (
    DEMO_LOGIN,
    NoRuns,
    app_client,
    demo_config_with,
    running_app,
)

SAME_ORIGIN = {"X-Requested-With": "XMLHttpRequest"}


async def _login(client: httpx.AsyncClient, **changes: str) -> httpx.Response:
    return await client.post("/api/auth/login", json={**DEMO_LOGIN, **changes})


async def test_contract_login_body_works_verbatim(settings: Settings) -> None:
    async with app_client(settings) as client:
        response = await _login(client)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"accessToken", "user"}
        assert body["user"] == {
            "login": "USER1",
            "databaseId": "db-test",
            "managerId": "m1",
            "streamId": "s1",
        }
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{REFRESH_COOKIE}=")
        assert "HttpOnly" in cookie
        assert "Path=/api/auth" in cookie
        assert "SameSite=strict" in cookie
        assert "Secure" not in cookie  # plain http on loopback (Settings.cookie_secure)
        assert response.headers["cache-control"] == "no-store"


async def test_secure_cookie_when_not_on_loopback(settings: Settings) -> None:
    settings.host = "0.0.0.0"  # noqa: S104
    async with running_app(create_app(settings, runs=NoRuns())) as client:
        response = await _login(client)
    assert "Secure" in response.headers["set-cookie"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"databaseId": "nope"}, "databaseId"),
        ({"managerId": "nope"}, "managerId"),
        ({"streamId": "s3"}, "streamId"),  # s3 belongs to m2
        ({"dbUsername": ""}, "dbUsername"),
        ({"dbUsername": "USER1\x00"}, "dbUsername"),
        ({"dbUsername": "US\nER1"}, "dbUsername"),
        ({"dbUsername": "U" * 129}, "dbUsername"),
        ({"dbPassword": "de\x00mo"}, "dbPassword"),
        ({"dbPassword": "x" * 1025}, "dbPassword"),
        ({"databaseId": "db-test\x00"}, "databaseId"),
        ({"managerId": "m" * 129}, "managerId"),
        ({"streamId": "s1\x7f"}, "streamId"),
    ],
)
async def test_unknown_ids_and_bad_input_are_400_naming_the_field(
    settings: Settings, changes: dict[str, str], field: str
) -> None:
    async with app_client(settings) as client:
        response = await _login(client, **changes)
        assert response.status_code == 400
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        (b'{"dbUsername": 1}', "dbUsername", "Expected `str`, got `int`"),
        (
            json.dumps({k: v for k, v in DEMO_LOGIN.items() if k != "streamId"}).encode(),
            "streamId",
            "missing required field",
        ),
        (b"{not json", None, "malformed JSON"),
        (json.dumps({**DEMO_LOGIN, "extra": 1}).encode(), "extra", "unknown field `extra`"),
    ],
)
async def test_malformed_bodies_are_400(
    settings: Settings, body: bytes, field: str | None, detail: str
) -> None:
    async with app_client(settings) as client:
        response = await client.post(
            "/api/auth/login", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        problem = response.json()
        assert problem["status"] == 400
        assert problem.get("field") == field
        assert detail in problem["detail"]


async def test_body_size_limit_is_413(settings: Settings) -> None:
    async with app_client(settings) as client:
        response = await _login(client, dbPassword="x" * 70_000)
        assert response.status_code == 413
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE


async def test_wrong_password_is_401_then_throttled_429(settings: Settings) -> None:
    async with app_client(settings) as client:
        for _ in range(5):  # login_max_failures in the demo config
            response = await _login(client, dbPassword="wrong")
            assert response.status_code == 401
            assert "wrong" not in response.text
        response = await _login(client, dbPassword="wrong")
        assert response.status_code == 429
        assert 1 <= int(response.headers["retry-after"]) <= 60
        # Locked even with the right password, for this user and client only.
        assert (await _login(client)).status_code == 429
        assert (await _login(client, dbUsername="USER2")).status_code == 200


async def test_scripts_need_a_token(settings: Settings) -> None:
    async with app_client(settings) as client:
        response = await client.get("/api/catalog/scripts")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        bad = await client.get("/api/catalog/scripts", headers={"Authorization": "Bearer x.y.z"})
        assert bad.status_code == 401


async def test_refresh_rotates_and_detects_reuse(settings: Settings, tmp_path: Path) -> None:
    # No grace for a token presented again (see security/test_tokens.py for the grace).
    settings.config_path = demo_config_with(tmp_path, "refresh_reuse_grace_s = 0")
    async with app_client(settings) as client:
        login = await _login(client)
        first = login.cookies[REFRESH_COOKIE]
        refreshed = await client.post("/api/auth/refresh", headers=SAME_ORIGIN)
        assert refreshed.status_code == 200
        token = refreshed.json()["accessToken"]
        second = refreshed.cookies[REFRESH_COOKIE]
        assert second != first
        ok = await client.get("/api/catalog/scripts", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        # Replaying the first cookie: reuse detected, the whole session is revoked.
        client.cookies.clear()
        client.cookies.set(REFRESH_COOKIE, first)
        replay = await client.post("/api/auth/refresh", headers=SAME_ORIGIN)
        assert replay.status_code == 401
        client.cookies.clear()
        client.cookies.set(REFRESH_COOKIE, second)
        after = await client.post("/api/auth/refresh", headers=SAME_ORIGIN)
        assert after.status_code == 401
        gone = await client.get(
            "/api/catalog/scripts", headers={"Authorization": f"Bearer {token}"}
        )
        assert gone.status_code == 401


async def test_refresh_demands_a_same_origin_signal(settings: Settings) -> None:
    async with app_client(settings) as client:
        await _login(client)
        assert (await client.post("/api/auth/refresh")).status_code == 403
        evil = await client.post("/api/auth/refresh", headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403
        null = await client.post("/api/auth/refresh", headers={"Origin": "null"})
        assert null.status_code == 403
        own = await client.post("/api/auth/refresh", headers={"Origin": "http://127.0.0.1:8000"})
        assert own.status_code == 200


async def test_refresh_without_cookie_is_401(settings: Settings) -> None:
    async with app_client(settings) as client:
        response = await client.post("/api/auth/refresh", headers=SAME_ORIGIN)
        assert response.status_code == 401


async def test_logout_revokes_access_tokens_at_once(settings: Settings) -> None:
    async with app_client(settings) as client:
        login = await _login(client)
        auth = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        assert (await client.get("/api/catalog/scripts", headers=auth)).status_code == 200
        logout = await client.post("/api/auth/logout")
        assert logout.status_code == 204
        assert f'{REFRESH_COOKIE}=""' in logout.headers["set-cookie"]
        assert "Max-Age=0" in logout.headers["set-cookie"]
        assert (await client.get("/api/catalog/scripts", headers=auth)).status_code == 401
        client.cookies.set(REFRESH_COOKIE, login.cookies[REFRESH_COOKIE])
        refresh = await client.post("/api/auth/refresh", headers=SAME_ORIGIN)
        assert refresh.status_code == 401


async def test_logout_with_the_access_token_only(settings: Settings) -> None:
    async with app_client(settings) as client:
        login = await _login(client)
        auth = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        client.cookies.clear()
        assert (await client.post("/api/auth/logout", headers=auth)).status_code == 204
        assert (await client.get("/api/catalog/scripts", headers=auth)).status_code == 401


async def test_password_never_in_logs_tokens_bodies_or_store(
    settings: Settings, tmp_path: Path
) -> None:
    secret = "Unique-S3cret-Marker"
    wrong = "Wr0ng-Pa55word-Marker"
    config_dir = tmp_path / "config"
    shutil.copytree(settings.config_path.parent, config_dir)
    config_path = config_dir / "exporter.toml"
    text = config_path.read_text(encoding="utf-8")
    user1_hash = text.split('password_hash = "', 1)[1].split('"', 1)[0]
    config_path.write_text(text.replace(user1_hash, hash_password(secret)), encoding="utf-8")
    settings.config_path = config_path
    stream = io.StringIO()
    configure_logging("debug", stream)
    try:
        with capture_logs() as captured:
            async with running_app(create_app(settings, runs=NoRuns())) as client:
                ok = await _login(client, dbPassword=secret)
                bad = await _login(client, dbUsername="USER2", dbPassword=wrong)
                refreshed = await client.post("/api/auth/refresh", headers=SAME_ORIGIN)
                await client.post("/api/auth/logout")
        async with running_app(create_app(settings, runs=NoRuns())) as client:
            await _login(client, dbPassword=secret)  # rendered JSON logs this time
    finally:
        structlog.reset_defaults()
    assert ok.status_code == 200
    assert bad.status_code == 401
    assert refreshed.status_code == 200
    events = {e["event"] for e in captured}
    assert {"login_succeeded", "login_failed", "session_created"} <= events
    token = ok.json()["accessToken"]
    refresh_token = ok.cookies[REFRESH_COOKIE]
    json_lines = stream.getvalue()
    assert '"event": "login_succeeded"' in json_lines
    for text in (repr(captured), json_lines, bad.text, refreshed.text, ok.text):
        assert secret not in text
        assert wrong not in text
    assert token not in repr(captured) + json_lines
    assert refresh_token not in repr(captured) + json_lines
    # The store files (database, WAL) never hold a password or a token in clear.
    for path in sorted(settings.data_dir.glob("state.sqlite3*")):
        raw = path.read_bytes()
        assert secret.encode() not in raw
        assert wrong.encode() not in raw
        assert token.encode() not in raw
        assert refresh_token.encode() not in raw


def test_login_request_repr_hides_the_password() -> None:
    body = LoginRequest("USER1", "Pa55-in-repr", "db-test", "m1", "s1")
    assert "Pa55-in-repr" not in repr(body)
    assert "Pa55-in-repr" not in str(body)
