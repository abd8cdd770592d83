"""A state store that cannot be used answers 503 problem JSON, never 500."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from exporter_api.app import create_app
from exporter_api.config import Settings, default_config_path
from exporter_api.problems import PROBLEM_CONTENT_TYPE
from tests.exporter_api.conftest import DEMO_LOGIN, NoRuns, running_app

USER2 = {**DEMO_LOGIN, "dbUsername": "USER2"}


async def test_closed_store_answers_503_on_login_and_with_a_token(settings: Settings) -> None:
    runs = NoRuns()
    async with running_app(create_app(settings, runs=runs)) as client:
        assert runs.services is not None
        ok = await client.post("/api/auth/login", json=DEMO_LOGIN)
        assert ok.status_code == 200
        auth = {"Authorization": f"Bearer {ok.json()['accessToken']}"}
        await runs.services.store.aclose()
        for response in (
            await client.post("/api/auth/login", json=USER2),
            await client.get("/api/catalog/scripts", headers=auth),
        ):
            assert response.status_code == 503
            assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
            assert "try again later" in response.json()["detail"]


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (a disk that can really fill up); needs root with CAP_SYS_ADMIN."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _fill(directory: Path) -> None:
    with (directory / "filler").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass  # ENOSPC: the disk is full


async def test_full_disk_answers_503_and_login_works_again_when_space_returns(
    tmpfs_dir: Path, demo_data_dir: Path
) -> None:
    (tmpfs_dir / "demo").symlink_to(demo_data_dir / "demo", target_is_directory=True)
    settings = Settings(config_path=default_config_path(), data_dir=tmpfs_dir)
    async with running_app(create_app(settings, runs=NoRuns())) as client:
        assert (await client.post("/api/auth/login", json=DEMO_LOGIN)).status_code == 200
        await anyio.to_thread.run_sync(_fill, tmpfs_dir)
        full = await client.post("/api/auth/login", json=USER2)
        assert full.status_code == 503
        assert full.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert "disk full" in full.json()["detail"]
        await anyio.Path(tmpfs_dir / "filler").unlink()
        assert (await client.post("/api/auth/login", json=USER2)).status_code == 200
