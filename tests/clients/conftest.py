"""A hub server process (``tests/clients/app.py``) for the third-party Python client tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def start_app(server: str, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``tests.clients.app`` on ``server`` (hypercorn or uvicorn); its base URL."""
    port = free_port()
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.clients.app", "--port", str(port), "--server", server],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout=30)
    except TimeoutError:
        stop_process(proc)
        pytest.fail(f"client test server did not start:\n{log_path.read_text()[-4000:]}")
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module", params=("hypercorn", "uvicorn"))
def base_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The hub server's base URL, on each ASGI server in turn."""
    server: str = request.param
    log_path = tmp_path_factory.mktemp(f"clients-server-{server}") / "server.log"
    proc, url = start_app(server, log_path)
    try:
        yield url
    finally:
        stop_process(proc)
