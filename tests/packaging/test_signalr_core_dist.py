"""The ``signalr-core`` wheel on its own: built, installed alone into a fresh virtualenv, it
serves the README's chat example (on uvicorn, installed as the README says) to the official
client, and brings nothing of the export service with it.

Dependencies come from PyPI (or pip's cache). About 15-30 s, most of it creating the virtualenv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import free_port, stop_process, wait_for_port

pytestmark = pytest.mark.compat

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "packages" / "signalr-core"
EXPORT_SERVICE_ONLY = {"asyncpg", "oracledb", "python-ulid", "cryptography", "signalr-exporter"}
# The library logs through stdlib logging unless the application chooses structlog.
NOT_NEEDED = {*EXPORT_SERVICE_ONLY, "structlog", "redis", "hypercorn"}


def _run(*args: str | Path, cwd: Path, timeout: float = 120) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _readme_example() -> str:
    readme = (CORE / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", quick_start, re.DOTALL)
    assert match is not None, "the README's quick start has no Python example"
    return match.group(1)


@pytest.mark.timeout(400)  # a cold pip cache downloads the dependencies
def test_wheel_alone_serves_the_readme_chat_to_the_official_client(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@microsoft" / "signalr").is_dir():
        pytest.fail("node and node_modules are needed (make install)")
    wheels = tmp_path / "wheels"
    _run(
        sys.executable,
        "-m",
        "build",
        "--no-isolation",
        "--wheel",
        "--outdir",
        wheels,
        CORE,
        cwd=ROOT,
    )
    (wheel,) = wheels.glob("signalr_core-*.whl")

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        wheel,
        "uvicorn[standard]",  # as the README says: plain uvicorn has no WebSocket support
        cwd=tmp_path,
        timeout=240,
    )

    app_dir = tmp_path / "app"
    app_dir.mkdir()
    installed = json.loads(
        _run(
            python,
            "-c",
            "import importlib.metadata as m, importlib.util as u, json, signalr_core; "
            "print(json.dumps({'dists': sorted(d.metadata['Name'].lower() "
            "for d in m.distributions()), 'exporter_api': u.find_spec('exporter_api') "
            "is not None, 'file': signalr_core.__file__}))",
            cwd=app_dir,
        )
    )
    assert "signalr-core" in installed["dists"]
    assert {"anyio", "msgspec", "starlette"} <= set(installed["dists"])
    assert not NOT_NEEDED & set(installed["dists"]), installed["dists"]
    assert installed["exporter_api"] is False
    assert installed["file"].startswith(str(venv)), installed["file"]

    (app_dir / "chat.py").write_text(_readme_example())
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [python, "-m", "uvicorn", "chat:app", "--port", str(port), "--log-level", "warning"],
            cwd=app_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
    try:
        wait_for_port(port, timeout=30)
        client = subprocess.run(
            [
                node,
                str(Path(__file__).with_name("chat_client.mjs")),
                f"http://127.0.0.1:{port}/chat",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        stop_process(server)
    lines = [line for line in client.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the client:\n{client.stderr}\nserver:\n{log_path.read_text()}"
    result = json.loads(lines[-1])
    assert result["ok"], f"{result}\n{client.stderr}\nserver:\n{log_path.read_text()}"
    assert result["messages"] == [["ada", "hello ☃"], ["ada", "hello ☃"]]
    assert result["items"] == [0, 1, 2]
    assert result["transport"] == "WebSocketTransport"
