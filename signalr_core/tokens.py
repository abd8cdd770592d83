"""Self-verifying connection tokens: negotiate on one process, connect on another.

Theory of operation. A connection token normally names an entry in the memory of the process
that answered negotiate, so the WebSocket connect that follows must reach that same process.
Behind a load balancer without affinity, or with several processes accepting on one socket, it
often does not. With a shared key the token carries its own proof instead::

    <connectionId>.<issued-at>.<MAC>

``issued-at`` is whole Unix seconds; the MAC is HMAC-SHA256 over a label, the hub's name, the
connection id, the issue time and the user id (empty when anonymous), truncated to 128 bits and
base64url-encoded without padding. A process that does not know the token but verifies it, finds
it younger than ``max_age`` and sees the same user on the request may *adopt* it: create the
connection under that id and token as if it had negotiated it itself.

Replay: a token is single-use per process. Each process remembers the tokens of connections it
has forgotten until they are too old to verify anyway (``spend``), so memory is bounded by the
rate of new connections times ``max_age``. Another process that never saw the token could still
adopt it within ``max_age``, for the same user only: the same exposure as a negotiated token that
was never connected, which the negotiating process keeps for ``disconnect_timeout``.

No I/O here; the clock is injectable for tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable

__all__ = ["ConnectionTokens"]

_LABEL = b"signalr_core connection token v1"
_MAC_BYTES = 16
_MAX_TOKEN_LENGTH = 160  # longer input is refused before any parsing or hashing
_TOKEN = re.compile(r"([A-Za-z0-9_-]{1,64})\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})")
_CLOCK_SKEW_S = 2  # a token from a host whose clock runs slightly ahead is still accepted


class ConnectionTokens:
    """Mints and verifies self-verifying connection tokens for one hub.

    Args:
        key: The shared secret (at least 16 bytes). Every process serving the hub has the same.
        scope: Binds tokens to one hub (its name), so one hub's token does not open another.
        max_age: Seconds a token may be adopted after it was issued.
        clock: Wall-clock seconds (``time.time``); tokens travel between processes, so it
            cannot be a monotonic clock.
    """

    def __init__(
        self,
        key: bytes,
        *,
        scope: str,
        max_age: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) < 16:
            raise ValueError("connection_token_key must have at least 16 bytes")
        self._key = key
        self._scope = scope.encode()
        self.max_age = max_age
        self._clock = clock
        # Tokens forgotten by this process -> when they may be dropped (insertion order is
        # expiry order, since every entry lives max_age from the moment it was spent).
        self._spent: dict[str, float] = {}

    def mint(self, connection_id: str, user_id: str | None) -> str:
        """A new token for ``connection_id``, issued now, for ``user_id`` (``None``: anonymous)."""
        issued = str(int(self._clock()))
        return f"{connection_id}.{issued}.{self._mac(connection_id, issued, user_id)}"

    def adoptable(self, token: str, user_id: str | None) -> str | None:
        """The connection id of ``token`` if this process may adopt it, else ``None``.

        It may when the MAC verifies for ``user_id``, the token is younger than ``max_age`` and
        this process has not already used and forgotten it.
        """
        if len(token) > _MAX_TOKEN_LENGTH:
            return None
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        connection_id, issued, mac = match.groups()
        expected = self._mac(connection_id, issued, user_id)
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        age = self._clock() - int(issued)
        if age >= self.max_age or age < -_CLOCK_SKEW_S:
            return None
        self._prune()
        if token in self._spent:
            return None
        return connection_id

    def spend(self, token: str) -> None:
        """Remember that ``token``'s connection is gone: it is never adopted here again."""
        if _TOKEN.fullmatch(token) is None:
            return  # not one of ours (skipNegotiation, v0): never adoptable anyway
        self._prune()
        self._spent.pop(token, None)
        self._spent[token] = self._clock() + self.max_age + _CLOCK_SKEW_S

    @property
    def spent_count(self) -> int:
        """Tokens remembered as used (expired ones are dropped as new ones come)."""
        return len(self._spent)

    def _prune(self) -> None:
        now = self._clock()
        while self._spent:
            token, until = next(iter(self._spent.items()))
            if until > now:
                return
            del self._spent[token]

    def _mac(self, connection_id: str, issued: str, user_id: str | None) -> str:
        message = b"\x00".join(
            (
                _LABEL,
                self._scope,
                connection_id.encode(),
                issued.encode(),
                (user_id or "").encode(),
            )
        )
        digest = hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
