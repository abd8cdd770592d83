"""8.4 end to end: an instance (``exporter-api serve``, a real process) is SIGKILLed during an
export -- at a random moment, or right after the big file is renamed into place and before the
store records it -- then restarted on the same data directory. Afterwards the run's directory
and the store agree: every file on disk is recorded, every recorded file is on disk."""

from __future__ import annotations

import ctypes
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.exporter_api.conftest import DEMO_LOGIN
from tests.exporter_api.runs.demokit import demo_catalog
from tests.services import exporter_serve, wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify and SIGKILL: Linux only")

LEDGER_ROWS = 300_000  # ~28 MB of CSV: a few seconds of export, long enough to kill inside
ACTIVE = {"Queued", "Running"}
EVERYTHING = {
    "mode": "AllGroups",
    "selection": {
        "groups": [
            {
                "groupId": "g-sales",
                "enabled": True,
                "scripts": [
                    {"scriptId": s, "enabled": True, "exportMode": "AllColumns"}
                    for s in ("s-orders", "s-customers", "s-payments")
                ],
            },
            {
                "groupId": "g-big",
                "enabled": True,
                "scripts": [{"scriptId": "s-ledger", "enabled": True, "exportMode": "AllColumns"}],
            },
        ]
    },
}
_IN_MOVED_TO = 0x00000080
_EVENT = struct.Struct("iIII")


def login(http: httpx.Client) -> dict[str, str]:
    response = http.post("/api/auth/login", json=DEMO_LOGIN)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['accessToken']}"}


def part_size(run_dir: Path) -> int:
    try:
        return sum(p.stat().st_size for p in run_dir.iterdir() if p.name.endswith(".part"))
    except FileNotFoundError:  # not made yet, or a .part renamed meanwhile
        return 0


def ledger_done(run_dir: Path) -> bool:
    try:
        return any("s-ledger" in n and not n.endswith(".part") for n in os.listdir(run_dir))
    except FileNotFoundError:
        return False


def kill_when_ledger_renamed(proc: subprocess.Popen[bytes], run_dir: Path) -> str:
    """SIGKILL ``proc`` the moment the ledger's final file appears (inotify IN_MOVED_TO)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    assert fd >= 0, ctypes.get_errno()
    try:
        wait_until(lambda: part_size(run_dir) > 0, 120, "the ledger export to start", 0.001)
        assert libc.inotify_add_watch(fd, bytes(run_dir), _IN_MOVED_TO) >= 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # Renamed before the watch was set? Then kill now: still an unsaved window or later.
            done = [p.name for p in run_dir.iterdir() if "s-ledger" in p.name]
            if any(not n.endswith(".part") for n in done):
                break
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            data = os.read(fd, 65536)
            names = []
            offset = 0
            while offset < len(data):
                _, _, _, length = _EVENT.unpack_from(data, offset)
                start = offset + _EVENT.size
                names.append(data[start : start + length].rstrip(b"\0").decode())
                offset = start + length
            if any("s-ledger" in n and not n.endswith(".part") for n in names):
                break
        else:
            raise TimeoutError("the ledger file never appeared")
        proc.send_signal(signal.SIGKILL)
    finally:
        os.close(fd)
    return next(n for n in os.listdir(run_dir) if "s-ledger" in n)


@pytest.mark.parametrize("moment", ["random-1", "random-2", "after-rename"])
def test_restart_after_sigkill_leaves_no_orphan(moment: str, tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    config = demo_catalog(tmp_path / "demo", LEDGER_ROWS)
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    note = f"seed={seed} moment={moment} log={log}"

    with (
        exporter_serve(config, data, log, timeout=60) as (proc, base),
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        created = http.post("/api/runs", json=EVERYTHING, headers=login(http))
        assert created.status_code == 201, created.text
        run_id = created.json()["runId"]
        run_dir = data / "exports" / run_id
        if moment.startswith("random"):
            # A random point of the whole run: before any file, during the small ones, or
            # anywhere within the ledger's ~28 MB.
            threshold = rng.randrange(-5_000_000, 28_000_000)
            if threshold > 0:
                wait_until(
                    # past the end of the ledger: the kill lands after the run's last file
                    lambda: part_size(run_dir) >= threshold or ledger_done(run_dir),
                    120,
                    "the export to get there",
                    0.001,  # the kill lands close to the threshold
                )
            proc.send_signal(signal.SIGKILL)
        else:
            ledger = kill_when_ledger_renamed(proc, run_dir)
            assert not ledger.endswith(".part"), note
        proc.wait(10)
    at_kill = sorted(os.listdir(run_dir)) if run_dir.exists() else []

    with (
        exporter_serve(config, data, log, timeout=60) as (proc, base),
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        auth = login(http)
        state = wait_until(
            lambda: (
                (s := http.get(f"/api/runs/{run_id}", headers=auth).json())["status"] not in ACTIVE
                and s
            ),
            30,
            "the run to be recovered",
        )
        listed = http.get(f"/api/runs/{run_id}/files", headers=auth).json()["files"]
        recorded = sorted(f["name"] for f in listed)
        on_disk = sorted(os.listdir(run_dir)) if run_dir.exists() else []
        for f in listed:  # what the store lists is the file on disk, byte for byte
            assert (run_dir / f["name"]).stat().st_size == f["sizeBytes"], note

    assert on_disk == recorded, f"{note} at_kill={at_kill} state={state['status']}"
    assert not any(n.endswith(".part") for n in on_disk), note
    if moment == "after-rename":
        # The ledger was complete on disk when the process died; unless its row made it to the
        # store first, it was an orphan, and recovery removed it (the run reads Failed).
        assert ledger in at_kill, note
        assert (ledger in recorded) == (state["status"] == "Success"), note
