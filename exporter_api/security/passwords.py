"""Password hashes for the demo `sqlite` provider's accounts (scrypt or PBKDF2 from hashlib)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash` (all base64 without padding)."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of `password` against a `scrypt$...` or `pbkdf2_sha256$...` hash."""
    parts = encoded.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            if n > 2**20 or r > 32 or p > 16:
                return False
            expected = _unb64(parts[5])
            actual = hashlib.scrypt(
                password.encode("utf-8"),
                salt=_unb64(parts[4]),
                n=n,
                r=r,
                p=p,
                dklen=len(expected),
                maxmem=256 * 1024 * 1024,
            )
        elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            iterations = int(parts[1])
            if iterations > 10_000_000:
                return False
            expected = _unb64(parts[3])
            actual = hashlib.pbkdf2_hmac(
                "sha256", password.encode("utf-8"), _unb64(parts[2]), iterations, len(expected)
            )
        else:
            return False
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


__all__ = ["hash_password", "verify_password"]
