from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from exporter_api.errors import Unauthorized
from exporter_api.notify import Handler
from exporter_api.security.keys import KeyRing
from exporter_api.security.tokens import TokenService
from exporter_api.security.vault import CredentialVault
from exporter_api.store import Store

PASSWORD = "Very$ecret-pa55word"
KEY = b"k" * 32


def _service(store: Store, access_ttl_s: int = 300, reuse_grace_s: float = 0) -> TokenService:
    vault = CredentialVault(store, b"v" * 32)
    return TokenService(
        store,
        vault,
        KEY,
        access_ttl_s=access_ttl_s,
        refresh_ttl_s=3600,
        reuse_grace_s=reuse_grace_s,
    )


async def _login(tokens: TokenService) -> tuple[str, str, str]:
    issued = await tokens.create_session("USER1", "db-test", "m1", "s1", PASSWORD)
    return issued.access_token, issued.refresh_token, issued.user.session_id


async def test_access_token_verifies_and_holds_no_secret(store: Store) -> None:
    tokens = _service(store)
    access, refresh, session_id = await _login(tokens)
    user = await tokens.verify_access_token(access)
    assert (user.login, user.database_id, user.manager_id, user.stream_id) == (
        "USER1",
        "db-test",
        "m1",
        "s1",
    )
    assert user.session_id == session_id
    payload = base64.urlsafe_b64decode(access.split(".")[1] + "==")
    assert PASSWORD.encode() not in payload
    assert PASSWORD not in refresh


async def test_forged_and_expired_tokens_are_refused(store: Store) -> None:
    tokens = _service(store)
    access, _, _ = await _login(tokens)
    claims = jwt.decode(access, OctKey.import_key(KEY), algorithms=["HS256"]).claims
    forged = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(b"x" * 32))
    with pytest.raises(Unauthorized):
        await tokens.verify_access_token(forged)
    expired = jwt.encode(
        {"alg": "HS256"}, {**claims, "exp": claims["iat"] - 60}, OctKey.import_key(KEY)
    )
    with pytest.raises(Unauthorized):
        await tokens.verify_access_token(expired)
    parts = [
        base64.urlsafe_b64encode(json.dumps(v).encode()).decode().rstrip("=")
        for v in ({"alg": "none", "typ": "JWT"}, claims)
    ]
    unsigned = ".".join([*parts, ""])
    with pytest.raises(Unauthorized):
        await tokens.verify_access_token(unsigned)
    with pytest.raises(Unauthorized):
        await tokens.verify_access_token("not.a.token")


async def test_refresh_rotates_and_reuse_revokes_the_session(store: Store) -> None:
    tokens = _service(store)
    access, refresh1, session_id = await _login(tokens)
    issued = await tokens.refresh(refresh1)
    assert issued.refresh_token != refresh1
    assert issued.user.session_id == session_id
    await tokens.verify_access_token(issued.access_token)
    # The first token again: reuse. The whole session ends, the newest tokens too.
    with pytest.raises(Unauthorized):
        await tokens.refresh(refresh1)
    with pytest.raises(Unauthorized):
        await tokens.refresh(issued.refresh_token)
    with pytest.raises(Unauthorized):
        await tokens.verify_access_token(access)
    row = await store.fetch_one(
        "SELECT revoked_reason FROM sessions WHERE id = :id", {"id": session_id}
    )
    assert row == ("refresh_token_reuse",)


async def test_a_token_reused_within_the_grace_gets_a_new_pair_and_later_ends_the_session(
    store: Store,
) -> None:
    # A page reloaded while its refresh was in flight sends the old token again.
    tokens = _service(store, reuse_grace_s=10)
    _, refresh1, session_id = await _login(tokens)
    first = await tokens.refresh(refresh1)
    again = await tokens.refresh(refresh1)
    assert again.user.session_id == session_id
    assert len({refresh1, first.refresh_token, again.refresh_token}) == 3
    await tokens.verify_access_token(again.access_token)
    live = await store.fetch_one(
        "SELECT count(*) FROM refresh_tokens WHERE session_id = :sid AND used_at IS NULL",
        {"sid": session_id},
    )
    assert live == (1,)  # no second chain forked by the replay
    # One live chain: the successor issued first was retired by the grace reuse, so the
    # client that kept `again` goes on, and the retired token counts as used.
    third = await tokens.refresh(again.refresh_token)
    # Out of the grace (every use moved back) the retired token is a theft: the session ends.
    await store.execute("UPDATE refresh_tokens SET used_at = :t", {"t": "2000-01-01T00:00:00.000Z"})
    with pytest.raises(Unauthorized):
        await tokens.refresh(first.refresh_token)
    with pytest.raises(Unauthorized):
        await tokens.verify_access_token(third.access_token)
    with pytest.raises(Unauthorized):
        await tokens.refresh(refresh1)
    row = await store.fetch_one(
        "SELECT revoked_reason FROM sessions WHERE id = :id", {"id": session_id}
    )
    assert row == ("refresh_token_reuse",)


async def test_revoke_ends_access_tokens_at_once_and_drops_credentials(store: Store) -> None:
    tokens = _service(store)
    access, _, session_id = await _login(tokens)
    vault = CredentialVault(store, b"v" * 32)
    assert await vault.get(session_id) == ("USER1", PASSWORD)
    await tokens.verify_access_token(access)  # now cached as live
    await tokens.revoke_session(session_id, "logout")
    with pytest.raises(Unauthorized):
        await tokens.verify_access_token(access)
    with pytest.raises(Unauthorized):
        await vault.get(session_id)
    assert await store.fetch_all("SELECT * FROM session_credentials") == []


async def test_revocation_by_another_instance_is_seen_within_a_second(store: Store) -> None:
    import anyio

    tokens, other = _service(store), _service(store)
    access, _, session_id = await _login(tokens)
    await tokens.verify_access_token(access)
    await other.revoke_session(session_id, "logout")
    await anyio.sleep(1.1)
    with pytest.raises(Unauthorized):
        await tokens.verify_access_token(access)


class _DroppingNotifier:
    """A notifier whose deliveries are lost (this instance's LISTEN connection reconnecting)."""

    async def notify(self, channel: str, payload: str) -> None:
        pass

    def listen(self, channel: str, handler: Handler) -> Callable[[], None]:
        return lambda: None


async def test_revoking_runs_this_instances_listeners_without_the_notification(
    store: Store,
) -> None:
    vault = CredentialVault(store, b"v" * 32)
    tokens = TokenService(
        store, vault, KEY, access_ttl_s=300, refresh_ttl_s=3600, notifier=_DroppingNotifier()
    )
    _, _, session_id = await _login(tokens)
    revoked: list[tuple[str, str]] = []

    async def listener(session: str, reason: str) -> None:
        revoked.append((session, reason))

    tokens.on_revoked(listener)
    await tokens.revoke_session(session_id, "logout")
    assert revoked == [(session_id, "logout")]  # at once, not at the next check


async def test_expired_sessions_are_purged(store: Store) -> None:
    tokens = _service(store)
    _, _, _session_id = await _login(tokens)
    await store.execute("UPDATE sessions SET expires_at = '2000-01-01T00:00:00.000Z'")
    assert await tokens.purge_expired() == 1
    assert await store.fetch_all("SELECT * FROM session_credentials") == []


async def test_rotated_signing_key_keeps_old_tokens_valid(store: Store) -> None:
    old_key, new_key = b"o" * 32, b"n" * 32
    vault = CredentialVault(store, b"v" * 32)
    before = TokenService(store, vault, old_key, access_ttl_s=300, refresh_ttl_s=3600)
    old_access = (
        await before.create_session("USER1", "db-test", "m1", "s1", PASSWORD)
    ).access_token
    rotated = TokenService(store, vault, [new_key, old_key], access_ttl_s=300, refresh_ttl_s=3600)
    new_access = (
        await rotated.create_session("USER1", "db-test", "m1", "s1", PASSWORD)
    ).access_token
    # New tokens are signed with the first key and say so in their kid.
    header = json.loads(base64.urlsafe_b64decode(new_access.split(".")[0] + "=="))
    assert header["kid"] == KeyRing.kid(new_key)
    jwt.decode(new_access, OctKey.import_key(new_key), algorithms=["HS256"])
    # Tokens signed with the previous key still verify on the rotated instance ...
    assert (await rotated.verify_access_token(old_access)).login == "USER1"
    assert (await rotated.verify_access_token(new_access)).login == "USER1"
    # ... until the old key leaves the ring.
    dropped = TokenService(store, vault, [new_key], access_ttl_s=300, refresh_ttl_s=3600)
    with pytest.raises(Unauthorized):
        await dropped.verify_access_token(old_access)
    assert (await dropped.verify_access_token(new_access)).login == "USER1"
    # A kid naming an unknown key is no way round the signature check.
    claims = jwt.decode(old_access, OctKey.import_key(old_key), algorithms=["HS256"]).claims
    forged = jwt.encode(
        {"alg": "HS256", "kid": KeyRing.kid(new_key)}, claims, OctKey.import_key(b"x" * 32)
    )
    with pytest.raises(Unauthorized):
        await rotated.verify_access_token(forged)
