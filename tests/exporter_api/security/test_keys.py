from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from exporter_api.errors import ConfigError
from exporter_api.security.keys import JWT_KEY_ENV, load_or_create_key


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
