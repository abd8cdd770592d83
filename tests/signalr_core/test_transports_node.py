"""Smoke test with the official @microsoft/signalr client from Node, over every transport.

The full compatibility matrix lives in tests/compat; this proves invoke, server-to-client and
client-to-server streams, client calls, groups and errors for JSON over WebSockets, SSE and
Long Polling, and MessagePack over WebSockets and Long Polling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = Path(__file__).with_name("node")

pytestmark = [
    pytest.mark.compat,
    pytest.mark.timeout(60),
]


@pytest.fixture(scope="module")
def hub_url() -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    server = subprocess.Popen(
        [sys.executable, str(NODE_DIR / "smoke_server.py"), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}/hubs/smoke"
    finally:
        stop_process(server)
        log.close()


@pytest.mark.parametrize(
    ("transport", "protocol"),
    [
        ("WebSockets", "json"),
        ("ServerSentEvents", "json"),
        ("LongPolling", "json"),
        ("WebSockets", "messagepack"),
        ("LongPolling", "messagepack"),
    ],
)
def test_official_client(hub_url: str, transport: str, protocol: str) -> None:
    result = subprocess.run(
        ["node", str(NODE_DIR / "smoke.mjs"), hub_url, transport, protocol],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "transport": transport,
        "echo": "hello",
        "stream": [0, 1, 2],
        "concat": "ab",
        "pong": "x",
        "group": "g:m",
        "error": "An unexpected error occurred invoking 'Fail' on the server. HubException: boom",
        "state": "Disconnected",
    }
