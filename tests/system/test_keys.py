"""Keys on a shared state store: never generated, taken from the environment or from
``[server] keys_dir``, and rotated with several keys newest first."""

from __future__ import annotations

import httpx
import pytest

from tests.system.catalog import write_catalog
from tests.system.client import Session, login
from tests.system.harness import System, log_tail, new_key

pytestmark = pytest.mark.system

KEY_ENV = ("EXPORTER_JWT_KEY", "EXPORTER_VAULT_KEY")


def _runs_status(base: str, session: Session) -> int:
    return httpx.get(f"{base}/api/runs", headers=session.headers, timeout=30).status_code


def test_an_instance_without_keys_refuses_to_start(system: System) -> None:
    env = {k: v for k, v in system.env.items() if k not in KEY_ENV}
    instance = system.new_instance("nokeys", env=env)
    instance.start()
    assert instance.wait_exit(60) != 0
    log = log_tail(instance.log_path)
    # The message names both ways to give the keys.
    assert "EXPORTER_JWT_KEY" in log, log
    assert "keys_dir" in log, log
    assert not list((system.base / "data-nokeys").rglob("*.key")), "a key was generated"


def test_keys_from_keys_dir_with_a_new_key_first(system: System) -> None:
    """Rotation, step 2 on one instance: it signs with the new key and still accepts tokens
    signed with the old one; instances without the new key refuse its tokens."""
    keys_dir = system.base / "keys-rotated"
    keys_dir.mkdir(mode=0o700)
    jwt_file, vault_file = keys_dir / "jwt.key", keys_dir / "vault.key"
    jwt_file.write_text(f"{new_key()}\n{system.env['EXPORTER_JWT_KEY']}\n")
    vault_file.write_text(system.env["EXPORTER_VAULT_KEY"] + "\n")
    for path in (jwt_file, vault_file):
        path.chmod(0o600)
    config = write_catalog(
        system.base / "catalog-keys",
        system.pg,
        system.files_dir,
        extra_server=f'keys_dir = "{keys_dir}"',
    )
    env = {k: v for k, v in system.env.items() if k not in KEY_ENV}
    rotated = system.new_instance("rotated", env=env, config_path=config)
    rotated.start()
    rotated.wait_ready()
    old = system.instances[0]

    signed_old = login(old.url, "sys_user10")
    assert _runs_status(rotated.url, signed_old) == 200
    signed_new = login(rotated.url, "sys_user10")
    assert _runs_status(rotated.url, signed_new) == 200
    assert _runs_status(old.url, signed_new) == 401
