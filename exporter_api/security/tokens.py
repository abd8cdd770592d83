"""Sessions: short-lived JWT access tokens and rotating refresh tokens.

JWTs are made with joserfc, the authlib project's JOSE library (authlib 1.9 deprecates its own
`authlib.jose` in its favour and depends on it).

A login creates a session row, stores the database password in the vault and hands out an
access token (claims name the session, never a credential) plus a refresh token (stored only as
a SHA-256 hash). Every refresh consumes its token and issues a new one; presenting a consumed
token again revokes the whole session. Access tokens are checked against the session row on
every use (with a cache of at most `_SESSION_CACHE_S`), so logout ends them at once.

Revocation crosses instances: `revoke_session` runs this instance's `on_revoked` listeners at
once, then publishes the session id on the notifier's `SESSION_REVOKED_CHANNEL`, and every
instance runs its listeners when the notification arrives (the hub closes that session's
connections there). The revoking instance thus runs them twice (its own notification comes back):
listeners are idempotent, and its connections close even while its LISTEN connection reconnects.

Signing keys rotate: tokens are signed with the ring's first key and carry its ``kid``; a token
verifies under any key of the ring (the ``kid`` picks the first one tried).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import msgspec
import structlog
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import OctKey
from joserfc.jws import extract_compact

from exporter_api.errors import Unauthorized
from exporter_api.notify import SESSION_REVOKED_CHANNEL, LocalNotifier, Notifier
from exporter_api.security.keys import KeyRing
from exporter_api.security.vault import CredentialVault
from exporter_api.store import Store
from exporter_api.timestamps import format_time as _iso
from exporter_api.timestamps import parse_time as _parse
from exporter_api.timestamps import wall_clock as _now

_log = structlog.get_logger("exporter_api.security.tokens")

_ISSUER = "exporter-api"
_AUDIENCE = "exporter-api"
_SESSION_CACHE_S = 1.0
_SESSION_CACHE_MAX = 10_000

RevocationListener = Callable[[str, str], Awaitable[None]]
"""Called with ``(session_id, reason)`` after a session was revoked (logout, token reuse)."""


class AuthenticatedUser(msgspec.Struct, frozen=True):
    login: str
    database_id: str
    manager_id: str
    stream_id: str
    session_id: str


class IssuedTokens(msgspec.Struct, frozen=True):
    access_token: str
    refresh_token: str
    refresh_expires_at: datetime
    user: AuthenticatedUser


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenService:
    def __init__(
        self,
        store: Store,
        vault: CredentialVault,
        signing_keys: KeyRing | Sequence[bytes] | bytes,
        access_ttl_s: int,
        refresh_ttl_s: int,
        notifier: Notifier | None = None,
        reuse_grace_s: float = 10.0,
    ) -> None:
        if isinstance(signing_keys, bytes):
            ring = KeyRing((signing_keys,))
        elif isinstance(signing_keys, KeyRing):
            ring = signing_keys
        else:
            ring = KeyRing(tuple(signing_keys))
        self._store = store
        self._vault = vault
        # (kid, key), newest first: the first signs.
        self._keys = [(ring.kid(k), OctKey.import_key(k)) for k in ring.keys]
        self._claims = jwt.JWTClaimsRegistry(
            leeway=5,
            iss={"essential": True, "value": _ISSUER},
            aud={"essential": True, "value": _AUDIENCE},
            exp={"essential": True},
            sub={"essential": True},
            sid={"essential": True},
        )
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self.reuse_grace_s = reuse_grace_s
        self._session_ok: dict[str, float] = {}  # session id -> monotonic time it was checked
        self._listeners: list[RevocationListener] = []
        self._notifier = notifier if notifier is not None else LocalNotifier()
        self._notifier.listen(SESSION_REVOKED_CHANNEL, self._session_revoked)

    def on_revoked(self, listener: RevocationListener) -> Callable[[], None]:
        """Call ``listener`` after every revocation on any instance (the hub closes the session's
        connections); returns a function that removes it again. It may be called more than once
        for one session and must be idempotent."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # --- sessions -----------------------------------------------------------------------------

    async def create_session(
        self, login: str, database_id: str, manager_id: str, stream_id: str, password: str
    ) -> IssuedTokens:
        now = _now()
        user = AuthenticatedUser(
            login=login,
            database_id=database_id,
            manager_id=manager_id,
            stream_id=stream_id,
            session_id=secrets.token_urlsafe(18),
        )
        expires = now + timedelta(seconds=self.refresh_ttl_s)
        async with self._store.transaction():
            await self._store.execute(
                "INSERT INTO sessions (id, login, database_id, manager_id, stream_id, created_at,"
                " expires_at) VALUES (:id, :login, :db, :mgr, :stream, :created, :expires)",
                {
                    "id": user.session_id,
                    "login": login,
                    "db": database_id,
                    "mgr": manager_id,
                    "stream": stream_id,
                    "created": _iso(now),
                    "expires": _iso(expires),
                },
            )
            await self._vault.put(user.session_id, login, password)
            refresh = await self._new_refresh_token(user.session_id, now, expires)
        _log.info(
            "session_created", session_id=user.session_id, login=login, database_id=database_id
        )
        return IssuedTokens(self._access_token(user), refresh, expires, user)

    async def _new_refresh_token(self, session_id: str, now: datetime, expires: datetime) -> str:
        token = secrets.token_urlsafe(32)
        await self._store.execute(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)"
            " VALUES (:h, :sid, :created, :expires)",
            {
                "h": hash_token(token),
                "sid": session_id,
                "created": _iso(now),
                "expires": _iso(expires),
            },
        )
        return token

    async def refresh(self, refresh_token: str) -> IssuedTokens:
        """Consume `refresh_token` and issue a new pair; a reused token revokes its session."""
        now = _now()
        token_hash = hash_token(refresh_token)
        reused_session: str | None = None
        async with self._store.transaction():
            consumed = await self._store.execute(
                "UPDATE refresh_tokens SET used_at = :now"
                " WHERE token_hash = :h AND used_at IS NULL AND expires_at > :now",
                {"now": _iso(now), "h": token_hash},
            )
            row = await self._store.fetch_one(
                "SELECT t.session_id, t.used_at, s.login, s.database_id, s.manager_id,"
                " s.stream_id, s.expires_at, s.revoked_at FROM refresh_tokens t"
                " JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = :h",
                {"h": token_hash},
            )
            live = row is not None and row[7] is None and _parse(str(row[6])) > now
            if row is not None and not consumed and row[1] is not None and row[7] is None:
                # Used before: a theft, unless it comes back within the grace (the client
                # never got the rotated token). Then the tokens already issued after it are
                # retired and it gets a new pair: the session keeps one live chain, so a
                # replay in the grace cannot fork an undetectable second one.
                used_s = (now - _parse(str(row[1]))).total_seconds()
                if not (live and 0 <= used_s <= self.reuse_grace_s):
                    reused_session = str(row[0])
                else:
                    await self._store.execute(
                        "UPDATE refresh_tokens SET used_at = :now"
                        " WHERE session_id = :sid AND used_at IS NULL",
                        {"now": _iso(now), "sid": str(row[0])},
                    )
            if row is not None and live and reused_session is None and (consumed or row[1]):
                user = AuthenticatedUser(
                    login=str(row[2]),
                    database_id=str(row[3]),
                    manager_id=str(row[4]),
                    stream_id=str(row[5]),
                    session_id=str(row[0]),
                )
                expires = _parse(str(row[6]))
                new_refresh = await self._new_refresh_token(user.session_id, now, expires)
                return IssuedTokens(self._access_token(user), new_refresh, expires, user)
        if reused_session is not None:
            await self.revoke_session(reused_session, "refresh_token_reuse")
            _log.warning("refresh_token_reuse_detected", session_id=reused_session)
        raise Unauthorized("the refresh token is not valid")

    async def session_of_refresh_token(self, refresh_token: str) -> str | None:
        row = await self._store.fetch_one(
            "SELECT session_id FROM refresh_tokens WHERE token_hash = :h",
            {"h": hash_token(refresh_token)},
        )
        return str(row[0]) if row else None

    async def revoke_session(self, session_id: str, reason: str) -> None:
        self._session_ok.pop(session_id, None)
        async with self._store.transaction():
            await self._store.execute(
                "UPDATE sessions SET revoked_at = :now, revoked_reason = :reason"
                " WHERE id = :id AND revoked_at IS NULL",
                {"now": _iso(_now()), "reason": reason, "id": session_id},
            )
            await self._vault.delete(session_id)
        _log.info("session_revoked", session_id=session_id, reason=reason)
        # This instance reacts now, not when (or if) its own notification comes back.
        await self._run_listeners(session_id, reason)
        try:
            await self._notifier.notify(SESSION_REVOKED_CHANNEL, session_id)
        except Exception as exc:  # the store is the record; the others' checks catch up
            _log.warning("session_revoked_notify_failed", error_type=type(exc).__name__)

    async def _session_revoked(self, session_id: str) -> None:
        """A revocation notice from any instance: forget the cached check, run the listeners."""
        self._session_ok.pop(session_id, None)
        row = await self._store.fetch_one(
            "SELECT revoked_reason FROM sessions WHERE id = :id", {"id": session_id}
        )
        await self._run_listeners(session_id, str(row[0]) if row and row[0] else "revoked")

    async def _run_listeners(self, session_id: str, reason: str) -> None:
        for listener in list(self._listeners):
            try:
                await listener(session_id, reason)
            except Exception as exc:  # the session is revoked in the store whatever happens here
                _log.warning("session_revoked_listener_failed", error_type=type(exc).__name__)

    async def purge_expired(self) -> int:
        """Drop sessions past their lifetime (with their credentials and refresh tokens)."""
        now = _iso(_now())
        async with self._store.transaction():
            await self._store.execute(
                "DELETE FROM session_credentials WHERE session_id IN"
                " (SELECT id FROM sessions WHERE expires_at < :now)",
                {"now": now},
            )
            await self._store.execute(
                "DELETE FROM refresh_tokens WHERE session_id IN"
                " (SELECT id FROM sessions WHERE expires_at < :now)",
                {"now": now},
            )
            return await self._store.execute(
                "DELETE FROM sessions WHERE expires_at < :now", {"now": now}
            )

    # --- access tokens ------------------------------------------------------------------------

    def _access_token(self, user: AuthenticatedUser) -> str:
        now = int(time.time())
        claims = {
            "iss": _ISSUER,
            "aud": _AUDIENCE,
            "sub": user.login,
            "sid": user.session_id,
            "db": user.database_id,
            "mgr": user.manager_id,
            "str": user.stream_id,
            "iat": now,
            "exp": now + self.access_ttl_s,
            "jti": secrets.token_urlsafe(12),
        }
        kid, key = self._keys[0]
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        return jwt.encode(header, claims, key, algorithms=["HS256"])

    def _decode(self, token: str) -> dict[str, object]:
        """The claims of ``token`` if one of the ring's keys signed it (its ``kid``'s first)."""
        kid = extract_compact(token.encode("ascii")).headers().get("kid")
        keys = sorted(self._keys, key=lambda pair: pair[0] != kid)  # stable: newest next
        for _, key in keys:
            try:
                claims: dict[str, object] = jwt.decode(token, key, algorithms=["HS256"]).claims
            except BadSignatureError:
                continue
            return claims
        raise BadSignatureError

    async def verify_access_token(self, token: str) -> AuthenticatedUser:
        """The user of a valid access token whose session is still live; else Unauthorized."""
        try:
            claims = self._decode(token)
            self._claims.validate(claims)
            user = AuthenticatedUser(
                login=str(claims["sub"]),
                database_id=str(claims["db"]),
                manager_id=str(claims["mgr"]),
                stream_id=str(claims["str"]),
                session_id=str(claims["sid"]),
            )
        except (JoseError, KeyError, ValueError, TypeError):
            raise Unauthorized("the access token is not valid") from None
        if not await self.session_live(user.session_id):
            raise Unauthorized("the session has ended")
        return user

    async def session_user(self, session_id: str) -> AuthenticatedUser | None:
        """The user of a live session (not revoked, not expired); ``None`` otherwise."""
        row = await self._store.fetch_one(
            "SELECT login, database_id, manager_id, stream_id, expires_at FROM sessions"
            " WHERE id = :id AND revoked_at IS NULL",
            {"id": session_id},
        )
        if row is None or _parse(str(row[4])) <= _now():
            return None
        return AuthenticatedUser(
            login=str(row[0]),
            database_id=str(row[1]),
            manager_id=str(row[2]),
            stream_id=str(row[3]),
            session_id=session_id,
        )

    async def session_live(self, session_id: str) -> bool:
        """Whether the session exists, is not revoked and has not expired (cached up to 1 s)."""
        checked = self._session_ok.get(session_id)
        if checked is not None and time.monotonic() - checked < _SESSION_CACHE_S:
            return True
        row = await self._store.fetch_one(
            "SELECT expires_at FROM sessions WHERE id = :id AND revoked_at IS NULL",
            {"id": session_id},
        )
        if row is None or _parse(str(row[0])) <= _now():
            self._session_ok.pop(session_id, None)
            return False
        if len(self._session_ok) >= _SESSION_CACHE_MAX:
            self._session_ok.clear()
        self._session_ok[session_id] = time.monotonic()
        return True


__all__ = [
    "AuthenticatedUser",
    "IssuedTokens",
    "RevocationListener",
    "TokenService",
    "hash_token",
]
