"""Signed download links: short-lived, single-purpose ``?sig=`` values for plain ``<a download>``.

A browser cannot add an ``Authorization`` header to a link it follows, and the access token must
never appear in a URL (it would land in history, logs and ``Referer``). A link's ``sig`` instead
seals ``(session id, expiry)`` with AES-GCM under a key derived from the JWT signing key, with the
run id and the target (a file id, or ``files.zip``) as associated data: it opens only for that
one download, names the session without revealing it, and dies with the session (logout) or after
``ttl_s`` seconds, whichever comes first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Sequence

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_LABEL = b"exporter-api download links v1"
_NONCE_BYTES = 12
_MAX_SIG_CHARS = 512
ZIP_TARGET = "files.zip"


class LinkInvalid(Exception):
    """Forged, malformed, or made for another run or file."""


class LinkExpired(Exception):
    """Genuine but past its expiry."""


class _Sealed(msgspec.Struct, array_like=True):
    session_id: str
    expires: int  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class DownloadLinks:
    """Mints and checks ``sig`` values from the service's JWT signing key(s).

    ``key`` may be one key or several, newest first (a key rotation): links are sealed with the
    newest and opened with any, so a link minted just before a rotation keeps working for the
    rest of its short life.
    """

    def __init__(self, key: bytes | Sequence[bytes], ttl_s: int = 300) -> None:
        keys = [key] if isinstance(key, bytes) else list(key)
        if not keys:
            raise ValueError("DownloadLinks needs at least one key")
        self._aeads = [AESGCM(hmac.new(k, _LABEL, hashlib.sha256).digest()) for k in keys]
        self._aead = self._aeads[0]
        self.ttl_s = ttl_s

    @staticmethod
    def _aad(run_id: str, target: str) -> bytes:
        return f"{run_id}\n{target}".encode()

    def mint(
        self, run_id: str, target: str, session_id: str, now: float | None = None
    ) -> tuple[str, int]:
        """``(sig, expires)`` for one download of ``target`` in ``run_id`` by ``session_id``."""
        expires = int(now if now is not None else time.time()) + self.ttl_s
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(
            nonce, msgspec.msgpack.encode(_Sealed(session_id, expires)), self._aad(run_id, target)
        )
        return _b64(nonce + sealed), expires

    def open(self, sig: str, run_id: str, target: str, now: float | None = None) -> str:
        """The session id sealed in ``sig``; raises :class:`LinkInvalid` or :class:`LinkExpired`."""
        if len(sig) > _MAX_SIG_CHARS:
            raise LinkInvalid
        try:
            raw = _unb64(sig)
        except (binascii.Error, ValueError):
            raise LinkInvalid from None
        sealed = self._open_with_any(raw, self._aad(run_id, target))
        if sealed.expires <= int(now if now is not None else time.time()):
            raise LinkExpired
        return sealed.session_id

    def _open_with_any(self, raw: bytes, aad: bytes) -> _Sealed:
        for aead in self._aeads:
            try:
                plain = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
            except (ValueError, InvalidTag):
                continue
            try:
                return msgspec.msgpack.decode(plain, type=_Sealed)
            except msgspec.DecodeError:
                break
        raise LinkInvalid


__all__ = ["ZIP_TARGET", "DownloadLinks", "LinkExpired", "LinkInvalid"]
