from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from exporter_api.errors import ConfigError
from exporter_api.security.keys import (
    JWT_KEY_ENV,
    JWT_KEY_FILE,
    VAULT_KEY_ENV,
    VAULT_KEY_FILE,
    KeyRing,
    generate_key,
    load_keys,
    load_or_create_key,
    parse_keys,
    resolve_keys,
)


def test_key_file_is_created_private_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(JWT_KEY_ENV, raising=False)
    path = tmp_path / "keys" / "jwt.key"
    key = load_or_create_key(path, JWT_KEY_ENV)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path, JWT_KEY_ENV) == key
    os.chmod(path, 0o644)
    assert load_or_create_key(path, JWT_KEY_ENV) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(JWT_KEY_ENV, base64.urlsafe_b64encode(b"e" * 32).decode())
    assert load_or_create_key(tmp_path / "jwt.key", JWT_KEY_ENV) == b"e" * 32
    assert not (tmp_path / "jwt.key").exists()
    monkeypatch.setenv(JWT_KEY_ENV, "short")
    with pytest.raises(ConfigError, match="at least 32"):
        load_or_create_key(tmp_path / "jwt.key", JWT_KEY_ENV)


def _b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def test_a_value_may_hold_several_keys_newest_first() -> None:
    ring = parse_keys(f" {_b64(b'n' * 32)},\n{_b64(b'o' * 32)}\n", JWT_KEY_ENV)
    assert ring.keys == (b"n" * 32, b"o" * 32)
    assert ring.current == b"n" * 32
    assert KeyRing.kid(b"n" * 32) != KeyRing.kid(b"o" * 32)
    assert _b64(b"n" * 32)[:12] not in KeyRing.kid(b"n" * 32)  # the id reveals nothing
    with pytest.raises(ConfigError, match="holds no key"):
        parse_keys(" , ", JWT_KEY_ENV)
    with pytest.raises(ConfigError, match="at least 32"):
        parse_keys(f"{_b64(b'n' * 32)},short", JWT_KEY_ENV)


def test_generated_key_reads_back() -> None:
    assert len(parse_keys(generate_key(), "x").current) == 32


def test_single_process_generates_key_files_in_data_dir_or_keys_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(JWT_KEY_ENV, raising=False)
    monkeypatch.delenv(VAULT_KEY_ENV, raising=False)
    jwt_keys, vault_keys = resolve_keys(shared_store=False, keys_dir=None, data_dir=tmp_path)
    assert jwt_keys != vault_keys
    assert stat.S_IMODE((tmp_path / JWT_KEY_FILE).stat().st_mode) == 0o600
    assert parse_keys((tmp_path / VAULT_KEY_FILE).read_text(), "f") == vault_keys
    keys_dir = tmp_path / "secrets"
    again, _ = resolve_keys(shared_store=False, keys_dir=keys_dir, data_dir=tmp_path)
    assert again != jwt_keys
    assert (keys_dir / JWT_KEY_FILE).is_file()


def test_shared_store_never_generates_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(JWT_KEY_ENV, raising=False)
    monkeypatch.delenv(VAULT_KEY_ENV, raising=False)
    for keys_dir in (None, tmp_path / "keys"):
        with pytest.raises(ConfigError) as caught:
            resolve_keys(shared_store=True, keys_dir=keys_dir, data_dir=tmp_path)
        message = str(caught.value)
        assert JWT_KEY_ENV in message
        assert "keys_dir" in message
    assert list(tmp_path.iterdir()) == []  # nothing was written anywhere
    # From key files in keys_dir (a rotation file: two keys, one per line) ...
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / JWT_KEY_FILE).write_text(f"{_b64(b'n' * 32)}\n{_b64(b'o' * 32)}\n")
    (keys_dir / VAULT_KEY_FILE).write_text(_b64(b"v" * 32))
    os.chmod(keys_dir / JWT_KEY_FILE, 0o600)
    jwt_keys, vault_keys = resolve_keys(shared_store=True, keys_dir=keys_dir, data_dir=tmp_path)
    assert jwt_keys.keys == (b"n" * 32, b"o" * 32)
    assert vault_keys.current == b"v" * 32
    # ... and the environment wins over the files.
    monkeypatch.setenv(VAULT_KEY_ENV, _b64(b"e" * 32))
    vault_keys = load_keys(
        VAULT_KEY_FILE, VAULT_KEY_ENV, shared_store=True, keys_dir=keys_dir, data_dir=tmp_path
    )
    assert vault_keys.current == b"e" * 32
    with pytest.raises(ConfigError, match=JWT_KEY_ENV):
        resolve_keys(shared_store=True, keys_dir=None, data_dir=tmp_path)
