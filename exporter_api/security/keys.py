"""Secret keys: from an environment variable (base64) or a generated key file (mode 0600)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import stat
from pathlib import Path

import structlog

from exporter_api.errors import ConfigError

_log = structlog.get_logger("exporter_api.security.keys")

JWT_KEY_ENV = "EXPORTER_JWT_KEY"
VAULT_KEY_ENV = "EXPORTER_VAULT_KEY"


def decode_key(value: str, name: str, length: int = 32) -> bytes:
    text = value.strip()
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < length:
        raise ConfigError(name, "", f"must be base64 of at least {length} random bytes")
    return key[:length]


def load_or_create_key(path: Path, env_name: str, length: int = 32) -> bytes:
    """The key from `env_name` when set, else from `path`, created with 0600 on first use."""
    env = os.environ.get(env_name)
    if env:
        return decode_key(env, env_name, length)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(0o600)
            _log.warning("key_file_permissions_fixed", path=str(path), was=oct(mode))
        return decode_key(path.read_text(encoding="ascii"), str(path), length)
    with contextlib.closing(os.fdopen(fd, "w", encoding="ascii")) as f:
        f.write(base64.urlsafe_b64encode(secrets.token_bytes(length)).decode("ascii") + "\n")
    _log.info("key_file_created", path=str(path))
    return decode_key(path.read_text(encoding="ascii"), str(path), length)


__all__ = ["JWT_KEY_ENV", "VAULT_KEY_ENV", "decode_key", "load_or_create_key"]
