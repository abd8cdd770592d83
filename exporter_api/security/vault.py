"""The credential vault: users' database passwords, AES-GCM encrypted in the state store.

Each secret is `base64(nonce || ciphertext+tag)` with the session id as associated data, so a
row copied to another session does not decrypt. The plaintext exists only in memory.

Key rotation: the vault seals with the first key of its ring and opens with whichever key fits
(AES-GCM's tag tells a wrong key apart), so sessions sealed before a rotation stay readable while
the previous key is still listed.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exporter_api.errors import Unauthorized
from exporter_api.security.keys import KeyRing
from exporter_api.store import Store


class CredentialVault:
    """Seals passwords with ``keys``' first key; opens them with any of its keys.

    ``keys`` is a `KeyRing`, a sequence of keys (newest first) or one key.
    """

    def __init__(self, store: Store, keys: KeyRing | Sequence[bytes] | bytes) -> None:
        ring: tuple[bytes, ...]
        if isinstance(keys, bytes):
            ring = (keys,)
        elif isinstance(keys, KeyRing):
            ring = keys.keys
        else:
            ring = tuple(keys)
        if not ring or any(len(k) != 32 for k in ring):
            raise ValueError("the vault key must be 32 bytes (AES-256)")
        self._store = store
        self._aeads = tuple(AESGCM(k) for k in ring)

    def encrypt(self, session_id: str, password: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aeads[0].encrypt(nonce, password.encode("utf-8"), session_id.encode("utf-8"))
        return base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, session_id: str, secret: str) -> str:
        try:
            raw = base64.b64decode(secret, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        for aead in self._aeads:
            try:
                plain = aead.decrypt(raw[:12], raw[12:], session_id.encode("utf-8"))
            except (InvalidTag, ValueError):
                continue
            return plain.decode("utf-8")
        raise Unauthorized("the session's credentials cannot be read")

    async def put(self, session_id: str, username: str, password: str) -> None:
        await self._store.execute(
            "INSERT INTO session_credentials (session_id, username, secret)"
            " VALUES (:session_id, :username, :secret)",
            {
                "session_id": session_id,
                "username": username,
                "secret": self.encrypt(session_id, password),
            },
        )

    async def get(self, session_id: str) -> tuple[str, str]:
        """(username, password) of a live session, for running its exports."""
        row = await self._store.fetch_one(
            "SELECT c.username, c.secret FROM session_credentials c"
            " JOIN sessions s ON s.id = c.session_id"
            " WHERE c.session_id = :session_id AND s.revoked_at IS NULL",
            {"session_id": session_id},
        )
        if row is None:
            raise Unauthorized("the session has ended")
        return str(row[0]), self.decrypt(session_id, str(row[1]))

    async def delete(self, session_id: str) -> None:
        await self._store.execute(
            "DELETE FROM session_credentials WHERE session_id = :session_id",
            {"session_id": session_id},
        )


__all__ = ["CredentialVault"]
