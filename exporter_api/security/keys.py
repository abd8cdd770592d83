"""Secret keys: the JWT signing key and the vault key, each a ring of one or more keys.

Where a key comes from, in order:

1. the environment (`EXPORTER_JWT_KEY`, `EXPORTER_VAULT_KEY`);
2. a key file in ``[server] keys_dir`` (`jwt.key`, `vault.key`);
3. with the SQLite state store only (one process): a key file in the data directory, generated
   with mode 0600 on first start.

With a shared state store (PostgreSQL, several instances) an instance never invents a key: a key
it made up would be unknown to the others (their tokens get 401 here, credentials sealed here do
not open there), so `resolve_keys` refuses to start and names both ways to provide one.

Rotation: a value or a file may hold several base64 keys, newest first, separated by commas or
line breaks. Tokens are signed and credentials sealed with the first; verification and decryption
accept any of them. To rotate without logging anyone out: add the new key *second* on every
instance, then move it first (every instance now signs with it and still reads the old one), and
drop the old key once the longest-lived token and session sealed with it have expired.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog

from exporter_api.errors import ConfigError

_log = structlog.get_logger("exporter_api.security.keys")

JWT_KEY_ENV = "EXPORTER_JWT_KEY"
VAULT_KEY_ENV = "EXPORTER_VAULT_KEY"
JWT_KEY_FILE = "jwt.key"
VAULT_KEY_FILE = "vault.key"
KEY_BYTES = 32
_SEPARATORS = re.compile(r"[,\s]+")


@dataclass(frozen=True)
class KeyRing:
    """One or more keys, newest first: the first signs/seals, every one verifies/opens."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a key ring needs at least one key")

    @property
    def current(self) -> bytes:
        return self.keys[0]

    @staticmethod
    def kid(key: bytes) -> str:
        """A short public id of ``key`` (a JWT ``kid``): a hash prefix, never the key."""
        digest = hashlib.sha256(b"exporter-api key id\x00" + key).digest()
        return base64.urlsafe_b64encode(digest[:9]).decode("ascii")


def generate_key(length: int = KEY_BYTES) -> str:
    """A fresh random key in the form this module reads (URL-safe base64)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(length)).decode("ascii")


def decode_key(value: str, name: str, length: int = KEY_BYTES) -> bytes:
    text = value.strip()
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < length:
        raise ConfigError(name, "", f"must be base64 of at least {length} random bytes")
    return key[:length]


def parse_keys(value: str, name: str, length: int = KEY_BYTES) -> KeyRing:
    """Keys separated by commas or whitespace (newest first); ``name`` is for the error."""
    parts = [p for p in _SEPARATORS.split(value) if p]
    if not parts:
        raise ConfigError(name, "", f"holds no key (base64 of at least {length} random bytes)")
    return KeyRing(tuple(decode_key(p, name, length) for p in parts))


def _read_key_file(path: Path, length: int) -> KeyRing:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        with contextlib.suppress(OSError):  # a read-only secret mount: still usable, say so
            path.chmod(0o600)
        _log.warning("key_file_permissions_fixed", path=str(path), was=oct(mode))
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read the key file ({exc})") from None
    return parse_keys(text, str(path), length)


def load_or_create_keys(path: Path, env_name: str, length: int = KEY_BYTES) -> KeyRing:
    """The keys from `env_name` when set, else from `path`, created with 0600 on first use."""
    env = os.environ.get(env_name)
    if env:
        return parse_keys(env, env_name, length)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path, length)
    with contextlib.closing(os.fdopen(fd, "w", encoding="ascii")) as f:
        f.write(generate_key(length) + "\n")
    _log.info("key_file_created", path=str(path))
    return _read_key_file(path, length)


def load_or_create_key(path: Path, env_name: str, length: int = KEY_BYTES) -> bytes:
    """The current (first) key of `load_or_create_keys`."""
    return load_or_create_keys(path, env_name, length).current


def load_shared_keys(keys_dir: Path | None, file_name: str, env_name: str) -> KeyRing:
    """Keys for an instance sharing its state store: from `env_name` or an existing key file.

    Raises:
        ConfigError: neither is there (naming both ways to provide the keys).
    """
    env = os.environ.get(env_name)
    if env:
        return parse_keys(env, env_name)
    if keys_dir is not None and (keys_dir / file_name).is_file():
        return _read_key_file(keys_dir / file_name, KEY_BYTES)
    where = (
        f"the file {keys_dir / file_name} does not exist"
        if keys_dir is not None
        else "[server] keys_dir is not set"
    )
    raise ConfigError(
        env_name,
        "",
        "with the PostgreSQL state store every instance must use the same keys and none is "
        f"generated: set {env_name} (base64 of 32 random bytes; several, comma-separated and "
        f"newest first, while rotating) or put a {file_name} file in [server] keys_dir "
        f"({where}); `exporter-api generate-key` prints a new key",
    )


def load_keys(
    file_name: str,
    env_name: str,
    *,
    shared_store: bool,
    keys_dir: Path | None,
    data_dir: Path,
) -> KeyRing:
    """The key ring of one purpose (`jwt.key` / `EXPORTER_JWT_KEY`, ...) for one instance.

    Args:
        file_name: the key file's name in ``keys_dir`` (or the data directory).
        env_name: the environment variable that overrides the file.
        shared_store: the state store is shared by several instances (PostgreSQL): keys must be
            given (environment or ``keys_dir``), never generated.
        keys_dir: ``[server] keys_dir`` resolved, or ``None`` (the data directory).
        data_dir: where a single-process instance keeps its generated key files.
    """
    if shared_store:
        return load_shared_keys(keys_dir, file_name, env_name)
    directory = keys_dir if keys_dir is not None else data_dir
    return load_or_create_keys(directory / file_name, env_name)


def resolve_keys(
    *, shared_store: bool, keys_dir: Path | None, data_dir: Path
) -> tuple[KeyRing, KeyRing]:
    """(JWT keys, vault keys) for one instance (see `load_keys`)."""
    return (
        load_keys(
            JWT_KEY_FILE,
            JWT_KEY_ENV,
            shared_store=shared_store,
            keys_dir=keys_dir,
            data_dir=data_dir,
        ),
        load_keys(
            VAULT_KEY_FILE,
            VAULT_KEY_ENV,
            shared_store=shared_store,
            keys_dir=keys_dir,
            data_dir=data_dir,
        ),
    )


__all__ = [
    "JWT_KEY_ENV",
    "JWT_KEY_FILE",
    "KEY_BYTES",
    "VAULT_KEY_ENV",
    "VAULT_KEY_FILE",
    "KeyRing",
    "decode_key",
    "generate_key",
    "load_keys",
    "load_or_create_key",
    "load_or_create_keys",
    "load_shared_keys",
    "parse_keys",
    "resolve_keys",
]
