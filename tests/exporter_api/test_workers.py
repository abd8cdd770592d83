"""The `--workers` supervisor with real child processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from exporter_api.workers import (
    METRICS_DIR_PREFIX,
    RAM_DIR,
    listening_socket,
    make_metrics_dir,
    metrics_dir,
    supervise,
)
from tests.services import async_wait_until, free_port, kill_survivors

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


async def _wait_for(logs: list[MutableMapping[str, Any]], event: str, count: int) -> None:
    # Child processes have no event to await here: poll the log, bounded by the deadline.
    await async_wait_until(
        lambda: sum(e["event"] == event for e in logs) >= count, 20, f"{count} {event} logs"
    )


async def test_a_worker_that_dies_early_stops_them_all() -> None:
    def command(index: int) -> list[str]:
        return [sys.executable, "-c", "raise SystemExit(3)"] if index == 1 else SLEEPER

    with structlog.testing.capture_logs() as logs, anyio.fail_after(30):
        code = await supervise(2, command, env=os.environ, pass_fds=(), min_uptime_s=60)
    assert code == 1
    exited = next(e for e in logs if e["event"] == "worker_exited")
    assert (exited["worker"], exited["code"]) == (1, 3)
    stopped = next(e for e in logs if e["event"] == "worker_stopped")
    assert stopped["worker"] == 0  # the healthy one was told to stop, not left behind


async def test_a_crashed_worker_is_restarted_and_sigterm_stops_all() -> None:
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            codes: list[int] = []

            async def run() -> None:
                codes.append(
                    await supervise(
                        2,
                        lambda _: SLEEPER,
                        env=os.environ,
                        pass_fds=(),
                        min_uptime_s=0,
                        restart_delay_s=0.01,
                    )
                )

            tg.start_soon(run)
            await _wait_for(logs, "worker_started", 2)
            first = next(e for e in logs if e["event"] == "worker_started" and e["worker"] == 0)
            os.kill(int(str(first["pid"])), signal.SIGKILL)
            await _wait_for(logs, "worker_started", 3)
            restarted = [e for e in logs if e["event"] == "worker_started"][-1]
            assert restarted["worker"] == 0
            assert restarted["pid"] != first["pid"]
            os.kill(os.getpid(), signal.SIGTERM)  # the supervisor listens for it by now
    assert codes == [0]
    assert sorted(e["worker"] for e in logs if e["event"] == "worker_stopped") == [0, 1]
    pids = {e["pid"] for e in logs if e["event"] == "worker_started"}
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(int(str(pid)), 0)


async def _supervise_until_sigterm(
    logs: list[MutableMapping[str, Any]],
    until: Callable[[], Awaitable[None]],
    command: Callable[[int], Sequence[str]],
    **options: Any,
) -> int:
    """``supervise(2, command)`` until ``until()`` returns, then SIGTERM; its exit code."""
    codes: list[int] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            codes.append(await supervise(2, command, env=os.environ, pass_fds=(), **options))

        tg.start_soon(run)
        await _wait_for(logs, "worker_started", 2)
        await until()
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor listens for it by now
    return codes[0]


def _ready_worker(ready: Path, on_sigterm: str) -> list[str]:
    """A worker that handles SIGTERM with ``on_sigterm``, then says so by making ``ready``."""
    code = (
        "import pathlib, signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, {on_sigterm})\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(120)\n"
    )
    return [sys.executable, "-c", code]


async def _exists(path: Path) -> None:
    with anyio.fail_after(20):
        while not await anyio.Path(path).exists():  # noqa: ASYNC110 (another process's file)
            await anyio.sleep(0.02)


async def test_restarts_back_off_and_never_stop_healthy_workers(tmp_path: Path) -> None:
    # Worker 1 lives long on its first start, then every restart dies at once.
    marker = tmp_path / "started-once"
    crasher = [
        sys.executable,
        "-c",
        f"import pathlib, time; p = pathlib.Path({str(marker)!r})\n"
        "if p.exists(): raise SystemExit(3)\n"
        "p.touch(); time.sleep(120)",
    ]
    now = 0.0
    with structlog.testing.capture_logs() as logs:

        async def crash_after_a_long_life() -> None:
            nonlocal now
            await _exists(marker)
            now += 100  # worker 1 has lived past min_uptime_s
            started = [e for e in logs if e["event"] == "worker_started" and e["worker"] == 1]
            os.kill(int(str(started[0]["pid"])), signal.SIGKILL)
            await _wait_for(logs, "worker_restarting", 5)

        code = await _supervise_until_sigterm(
            logs,
            crash_after_a_long_life,
            lambda index: crasher if index == 1 else SLEEPER,
            min_uptime_s=60,
            restart_delay_s=0.01,
            max_restart_delay_s=0.04,
            clock=lambda: now,
        )
    restarts = [e for e in logs if e["event"] == "worker_restarting"]
    assert {e["worker"] for e in restarts} == {1}
    assert [e["delay_s"] for e in restarts[:5]] == [0.01, 0.02, 0.04, 0.04, 0.04]
    exits = [e["code"] for e in logs if e["event"] == "worker_exited"]
    assert exits[:5] == [-signal.SIGKILL, 3, 3, 3, 3]
    # Worker 0 ran on untouched until the SIGTERM: one start, one stop.
    zero = [e["event"] for e in logs if e.get("worker") == 0]
    assert zero == ["worker_started", "worker_stopped"]
    assert code in (0, 1)  # 1 if a restart of worker 1 happened to be dying (3) at the stop


async def _stop_a_ready_worker(
    logs: list[MutableMapping[str, Any]], ready: Path, on_sigterm: str, **options: Any
) -> int:
    """`_supervise_until_sigterm` once worker 0 (`_ready_worker` with ``on_sigterm``) is ready;
    worker 1 sleeps."""

    async def until() -> None:
        await _exists(ready)

    return await _supervise_until_sigterm(
        logs,
        until,
        lambda index: _ready_worker(ready, on_sigterm) if index == 0 else SLEEPER,
        **options,
    )


async def test_a_worker_that_ignores_the_stop_is_killed(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        code = await _stop_a_ready_worker(
            logs, tmp_path / "ready", "signal.SIG_IGN", stop_timeout_s=0.2
        )
    assert code == 1  # a worker that had to be killed did not stop cleanly
    killed = [e for e in logs if e["event"] == "worker_killed"]
    assert [e["worker"] for e in killed] == [0]
    stopped = {e["worker"]: e["code"] for e in logs if e["event"] == "worker_stopped"}
    assert stopped == {0: -signal.SIGKILL, 1: -signal.SIGTERM}


async def test_a_worker_failing_its_stop_makes_the_exit_code_1(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        code = await _stop_a_ready_worker(logs, tmp_path / "ready", "lambda *_: sys.exit(2)")
    assert code == 1
    stopped = {e["worker"]: e["code"] for e in logs if e["event"] == "worker_stopped"}
    assert stopped == {0: 2, 1: -signal.SIGTERM}
    assert not [e for e in logs if e["event"] == "worker_killed"]


def test_listening_socket_is_inheritable_and_binds_once() -> None:
    with listening_socket("127.0.0.1", 0) as sock:
        assert sock.get_inheritable()
        port = sock.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            listening_socket("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


# A supervisor in a process of its own (the test kills it); its workers follow it as
# `serve --worker-index` does, then sleep (SIGTERM's default action ends them).
_SUPERVISOR = """
import os, sys, anyio, structlog
from exporter_api.workers import follow_supervisor, listening_socket, supervise
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: the test's
sock = listening_socket("127.0.0.1", int(sys.argv[1]))
worker = (
    "import os, sys, time; from exporter_api.workers import follow_supervisor;"
    " assert follow_supervisor(int(sys.argv[1])); os.write(1, b'worker\\\\n'); time.sleep(120)"
)
command = [sys.executable, "-c", worker, str(os.getpid())]
print(os.getpid(), flush=True)
anyio.run(lambda: supervise(2, lambda _: command, env=os.environ, pass_fds=(sock.fileno(),)))
"""


def test_workers_die_with_a_killed_supervisor() -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-c", _SUPERVISOR, str(port)], stdout=subprocess.PIPE, text=True
    ) as supervisor:
        assert supervisor.stdout is not None
        try:
            assert int(supervisor.stdout.readline()) == supervisor.pid
            assert [supervisor.stdout.readline() for _ in range(2)] == ["worker\n"] * 2
            children = subprocess.run(
                ["ps", "-o", "pid=", "--ppid", str(supervisor.pid)],
                capture_output=True,
                text=True,
                check=True,
            )
            workers = [int(pid) for pid in children.stdout.split()]
            assert len(workers) == 2
        finally:
            supervisor.kill()  # SIGKILL: no chance to stop its workers itself
    assert kill_survivors(workers, 10) == [], "workers outlived their supervisor"
    with listening_socket("127.0.0.1", port):  # the port is free for the next supervisor
        pass


def test_follow_supervisor_sees_a_supervisor_already_gone() -> None:
    # In a child (the death signal is per process): the parent is this test, not "the
    # supervisor" 1 (it died while the worker started and the worker was re-parented).
    check = (
        "import os; from exporter_api.workers import follow_supervisor;"
        " print(follow_supervisor(os.getppid()), follow_supervisor(1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.split() == ["True", "False"]


def _private(path: Path) -> bool:
    return path.is_dir() and path.stat().st_mode & 0o777 == 0o700


def test_the_metrics_dir_is_private_in_ram_and_removed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    ram = RAM_DIR.is_dir() and os.access(RAM_DIR, os.W_OK | os.X_OK)
    with metrics_dir(data_dir) as path:
        assert path.parent == (RAM_DIR if ram else Path(tempfile.gettempdir()))
        assert path.name.startswith(f"{METRICS_DIR_PREFIX}{os.getpid()}-")
        assert _private(path)
        (path / "counter_1.db").write_bytes(b"x")
    assert not path.exists()
    with pytest.raises(RuntimeError), metrics_dir(data_dir) as path:  # however the block ends
        raise RuntimeError
    assert not path.exists()
    assert list(data_dir.iterdir()) == []


def test_the_metrics_dir_leaves_the_data_dir_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    no_ram = tmp_path / "no-shm"  # a system without /dev/shm
    path = make_metrics_dir(data_dir, ram_dir=no_ram)
    assert path.parent == Path(tempfile.gettempdir())
    assert _private(path)
    path.rmdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-tmp"))  # nor a temp directory
    with structlog.testing.capture_logs() as logs:
        path = make_metrics_dir(data_dir, ram_dir=no_ram)
    assert path.parent == data_dir
    assert _private(path)
    assert [e["event"] for e in logs] == ["metrics_dir_on_data_disk"]


def test_the_operators_metrics_dir_is_emptied_and_kept(tmp_path: Path) -> None:
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_999999.db").write_bytes(b"from an earlier run")
    with metrics_dir(tmp_path / "data", str(given)) as path:
        assert path == given
        assert list(given.iterdir()) == []
        (path / "counter_1.db").write_bytes(b"x")
    assert [p.name for p in given.iterdir()] == ["counter_1.db"]  # the operator's to remove


def test_sigterm_unwinds_then_ends_the_process(tmp_path: Path) -> None:
    # SIGTERM before an event loop listens for it: `finally` runs, the status stays SIGTERM's.
    script = (
        "import os, signal, sys; from exporter_api.workers import sigterm_unwinds\n"
        "with sigterm_unwinds():\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    finally:\n"
        "        os.rmdir(sys.argv[1])\n"
        "print('not reached')\n"
    )
    marker = tmp_path / "cleanup"
    marker.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script, str(marker)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == -signal.SIGTERM
    assert not marker.exists()
    assert done.stdout == ""
