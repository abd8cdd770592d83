"""`exporter-api` as an operator runs it: exit codes and messages, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from exporter_api.security.keys import JWT_KEY_ENV, VAULT_KEY_ENV, parse_keys


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTER_")}
    return subprocess.run(
        [sys.executable, "-m", "exporter_api", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_shared_store_without_keys_refuses_to_start(tmp_path: Path) -> None:
    # The URL is never dialled: the keys are checked before anything listens or connects.
    result = _cli(
        "serve",
        "--data-dir",
        str(tmp_path),
        "--state-url",
        "postgresql://127.0.0.1:9/state",
        "--port",
        "9",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert JWT_KEY_ENV in result.stderr
    assert "keys_dir" in result.stderr
    assert not (tmp_path / "jwt.key").exists()
    # Only the JWT key given: the vault key is named next.
    result = _cli(
        "serve",
        "--data-dir",
        str(tmp_path),
        "--state-url",
        "postgresql://127.0.0.1:9/state",
        env={JWT_KEY_ENV: _cli("generate-key").stdout.strip()},
    )
    assert result.returncode == 1
    assert VAULT_KEY_ENV in result.stderr
    assert "Traceback" not in result.stderr


def test_generate_key_prints_a_usable_key() -> None:
    first, second = _cli("generate-key"), _cli("generate-key")
    assert first.returncode == 0
    assert len(parse_keys(first.stdout, "stdout").current) == 32
    assert first.stdout != second.stdout
