"""Stalled downloads against a real `exporter-api serve`: 40 clients open the ZIP and never read.

While they stall, logins and run lists still answer at once (no shared worker thread waits on a
client), one more download of a user at the limit is a 429; when the clients go, every download
stops (``download_aborted``, the server's CPU time stops growing) and memory stayed flat.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.exporter_api.conftest import DEMO_LOGIN, SALES
from tests.procstat import cpu_seconds, rss_bytes
from tests.services import demo_config, exporter_serve, wait_until

PER_USER = 20  # two users x 20 = 40 stalled clients, each user exactly at the limit
FILE_BYTES = 4 * 1024 * 1024  # incompressible: each ZIP is ~12 MB, far beyond any buffer


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == name:
                found.append(record)
        return found

    def rss_mb(self) -> float:
        rss = rss_bytes(self.proc.pid)
        assert rss, "no VmRSS"
        return rss / 2**20

    def idle(self, window_s: float = 0.5, max_cpu_s: float = 0.05) -> bool:
        before = cpu_seconds(self.proc.pid)
        time.sleep(window_s)  # measuring a rate over a window, not ordering events
        return cpu_seconds(self.proc.pid) - before < max_cpu_s


@pytest.fixture
def server(tmp_path: Path, demo_data_dir: Path) -> Iterator[Server]:
    """`exporter-api serve` on a copy of the demo allowing PER_USER downloads per user."""
    config = demo_config(
        tmp_path, {"[server]\n": f"[server]\nmax_downloads_per_user = {PER_USER}\n"}
    )
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "demo").symlink_to(demo_data_dir / "demo", target_is_directory=True)
    log_path = tmp_path / "server.log"
    with exporter_serve(config, data_dir, log_path, timeout=60) as (proc, url):
        yield Server(url, proc, log_path, data_dir)


def _login(client: httpx.Client, user: str) -> dict[str, str]:
    response = client.post("/api/auth/login", json={**DEMO_LOGIN, "dbUsername": user})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['accessToken']}"}


def _run_with_big_files(
    client: httpx.Client, server: Server, auth: dict[str, str]
) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    """A finished run whose files are then replaced with a few MB of random bytes."""
    run_id = client.post("/api/runs", json=SALES, headers=auth).json()["runId"]
    wait_until(
        lambda: (
            client.get(f"/api/runs/{run_id}", headers=auth).json()["status"]
            not in ("Queued", "Running")
        ),
        30,
        "the run to finish",
    )
    listed: dict[str, Any] = client.get(f"/api/runs/{run_id}/files", headers=auth).json()
    contents = {}
    for file in listed["files"]:
        data = os.urandom(FILE_BYTES)
        (server.data_dir / "exports" / run_id / file["name"]).write_bytes(data)
        contents[file["name"]] = data
    assert len(contents) == 3
    return run_id, listed, contents


def _stalled_get(port: int, target: str, headers: dict[str, str]) -> socket.socket:
    """A client that sends the request and never reads (a tiny receive window)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _timed(
    client: httpx.Client, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Response, float]:
    """The response to a request that must answer within a second, and its duration."""
    started = time.monotonic()
    try:
        response = client.request(method, url, timeout=5, **kwargs)
    except httpx.TimeoutException:
        pytest.fail(f"{method} {url} did not answer within 5 s while downloads stalled")
    elapsed = time.monotonic() - started
    assert elapsed < 1, f"{method} {url} took {elapsed:.2f} s while downloads stalled"
    return response, elapsed


@pytest.mark.timeout(240)
def test_stalled_zip_clients_do_not_freeze_the_service(server: Server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with httpx.Client(base_url=server.url, timeout=10) as client:
        auth1, auth2 = _login(client, "USER1"), _login(client, "USER2")
        run1, listed1, contents1 = _run_with_big_files(client, server, auth1)
        run2, _, _ = _run_with_big_files(client, server, auth2)
        baseline_rss = server.rss_mb()

        # USER1 through signed links (no token), USER2 with a Bearer token.
        clients = [_stalled_get(port, listed1["zipUrl"], {}) for _ in range(PER_USER)]
        clients += [
            _stalled_get(port, f"/api/runs/{run2}/files.zip", auth2) for _ in range(PER_USER)
        ]
        try:
            # Every ZIP is blocked on its client once the socket buffers are full.
            wait_until(server.idle, 60, "the server to idle while every client stalls", 0.1)
            assert server.events("download_finished") == []

            login, login_s = _timed(
                client, "POST", "/api/auth/login", json={**DEMO_LOGIN, "dbUsername": "USER1"}
            )
            assert login.status_code == 200
            runs, list_s = _timed(client, "GET", "/api/runs", headers=auth1)
            assert runs.status_code == 200
            assert run1 in [item["runId"] for item in runs.json()["items"]]

            # USER1 is at the limit: one more download (ZIP or file, token or link) is a 429.
            for url, headers in (
                (f"/api/runs/{run1}/files.zip", auth1),
                (listed1["files"][0]["downloadUrl"], {}),
            ):
                refused = client.get(url, headers=headers)
                assert refused.status_code == 429, refused.text
                assert refused.headers["content-type"] == "application/problem+json"
                assert int(refused.headers["retry-after"]) >= 1
            stalled_rss = server.rss_mb()
        finally:
            for sock in clients:
                sock.close()

        # Gone clients: every download stops, at once, and the server goes idle.
        wait_until(
            lambda: len(server.events("download_aborted")) == 2 * PER_USER,
            20,
            "every abandoned download to stop",
            0.1,
        )
        assert server.idle(window_s=1.0, max_cpu_s=0.2), "work went on after the clients left"
        after_rss = server.rss_mb()
        print(
            f"RSS MB: baseline {baseline_rss:.0f}, 40 stalled {stalled_rss:.0f}, "
            f"after {after_rss:.0f}; login {login_s * 1000:.0f} ms, list {list_s * 1000:.0f} ms"
        )
        total_mb = 2 * PER_USER * 3 * FILE_BYTES / 2**20  # 240 MB of ZIPs were requested
        assert stalled_rss < 300
        assert max(stalled_rss, after_rss) - baseline_rss < total_mb / 4

        # The slots came back: USER1 downloads the whole ZIP again.
        archive = client.get(f"/api/runs/{run1}/files.zip", headers=auth1)
        assert archive.status_code == 200
        with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
            assert {n: z.read(n) for n in z.namelist()} == contents1
