"""`exporter-api serve --workers N`: N processes serving one port.

Exports are CPU-bound in Python, so one process uses one core. The supervisor (this module, in
the process the operator started) binds the port once and starts N ordinary ``serve`` processes
that inherit the listening socket (hypercorn's ``fd://`` bind): the kernel hands each new
connection to one of them. Binding once means a taken port fails once, clearly, and no worker can
end up on a port of its own. Each worker is a full instance (its own lifespan, instance id, hub
connections): exactly what several hosts would run, hence the PostgreSQL state store and Redis it
requires.

A worker asks the kernel for SIGTERM when its supervisor dies (``follow_supervisor``, Linux's
``PR_SET_PDEATHSIG``): a supervisor killed with SIGKILL (OOM killer, ``kill -9``) would otherwise
leave its workers serving the port, and a new supervisor could not bind it.

Signals: SIGTERM or SIGINT to the supervisor becomes SIGTERM to every worker, which drains (see
``exporter_api.cli``); a second one is forwarded again and makes the workers stop without
waiting. Workers ignore SIGINT so that Ctrl+C in a terminal (sent to the whole process group)
reaches them once, through the supervisor. A worker that has not exited ``stop_timeout_s`` after
the stop was asked for (a drain that hangs) is killed. The supervisor exits with status 1 if a
worker did not stop cleanly (status 0, or killed by the SIGTERM it was sent before it listened
for it), else 0.

Restarts: a worker whose first start does not live ``min_uptime_s`` is a start-up failure (bad
configuration, unreachable store) that would only repeat: every worker is stopped and the
supervisor exits with status 1. Any later exit is one worker's trouble and never stops its
healthy siblings: it is started again after a delay that doubles from ``restart_delay_s`` up to
``max_restart_delay_s`` while the restarts keep dying within ``min_uptime_s``, and starts again
from ``restart_delay_s`` once a restart has lived that long.

Metrics (``[metrics] enabled``): each worker keeps its counters in files of one directory
(prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``) and the worker a scrape
reaches sums them all. The supervisor empties the directory before the first worker starts
(numbers of an earlier run must not add up with this one's) and, when a worker exits, removes its
live gauges (``mark_process_dead``: its hub connections are gone); its counters stay, as
Prometheus expects of a counter. The directory is the operator's ``PROMETHEUS_MULTIPROC_DIR``
when set (emptied, kept), else one the supervisor makes for itself (`metrics_dir`): private
(0700), named ``exporter-metrics-<supervisor pid>-<random>``, on a RAM-backed filesystem
(``/dev/shm``; else the OS temp directory; the data directory only when neither can be written)
and removed when the supervisor exits. Never on the data disk by choice: prometheus-client
memory-maps those files and grows them as label sets appear, and writing to a page a full disk
cannot back kills the worker with SIGBUS (not an ``OSError``), again after every restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

import anyio
import anyio.abc
import structlog

_log = structlog.get_logger("exporter_api.workers")

MIN_UPTIME_S = 10.0
RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
STOP_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
RAM_DIR = Path("/dev/shm")  # noqa: S108 - a private directory is made in it (mkdtemp)
METRICS_DIR_PREFIX = "exporter-metrics-"


def follow_supervisor(supervisor_pid: int) -> bool:
    """In a worker: SIGTERM (drain, exit) when the supervisor dies; ``False`` if it already has.

    The death signal is Linux only; elsewhere only the check that the supervisor is still the
    parent is made. The check comes after the request, so a supervisor dying in between is seen.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            _log.warning("parent_death_signal_failed", errno=ctypes.get_errno())
    return os.getppid() == supervisor_pid


def prepare_metrics_dir(path: Path) -> Path:
    """The operator's multiprocess metrics directory, created and emptied of an earlier run's
    files (blocking: call it before the event loop starts)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def make_metrics_dir(data_dir: Path, ram_dir: Path = RAM_DIR) -> Path:
    """A new private (0700) directory ``exporter-metrics-<pid>-<random>`` for the multiprocess
    metrics: in ``ram_dir`` when it can be written, else in the OS temp directory, else (nothing
    else could be written) in ``data_dir``, where a full disk kills the workers (see above)."""
    prefix = f"{METRICS_DIR_PREFIX}{os.getpid()}-"
    if ram_dir.is_dir() and os.access(ram_dir, os.W_OK | os.X_OK):
        with contextlib.suppress(OSError):
            return Path(tempfile.mkdtemp(prefix=prefix, dir=ram_dir))  # mode 0700
    try:
        return Path(tempfile.mkdtemp(prefix=prefix))  # TMPDIR, /tmp, ... (tempfile's choice)
    except OSError as exc:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=data_dir))
        _log.warning("metrics_dir_on_data_disk", path=str(path), temp_dir_error=str(exc))
        return path


@contextlib.contextmanager
def metrics_dir(data_dir: Path, given: str | None = None) -> Iterator[Path]:
    """The supervisor's multiprocess metrics directory while the block runs: ``given`` (the
    operator's ``PROMETHEUS_MULTIPROC_DIR``) emptied and kept, else `make_metrics_dir`'s,
    removed when the block ends, however it ends (blocking: outside the event loop)."""
    if given:
        path = prepare_metrics_dir(Path(given))
        _log.info("metrics_dir", path=str(path), own=False)
        yield path
        return
    path = make_metrics_dir(data_dir)
    _log.info("metrics_dir", path=str(path), own=True)
    try:
        yield path
    finally:
        try:
            shutil.rmtree(path)
        except OSError as exc:
            _log.warning("metrics_dir_not_removed", path=str(path), error=str(exc))


class _Terminated(BaseException):
    """SIGTERM, raised by `sigterm_unwinds` (a ``BaseException``: nothing may swallow it)."""


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM unwinds the stack (``finally`` and ``with`` blocks clean
    up) instead of ending the process on the spot; then the process dies of SIGTERM all the same
    (its exit status is unchanged). An event loop that listens for SIGTERM itself (`supervise`)
    takes it over meanwhile."""

    def unwind(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        raise  # not reached: the signal ends the process
    finally:
        signal.signal(signal.SIGTERM, previous)


def metrics_worker_exited(path: Path) -> Callable[[int], None]:
    """``supervise(on_exit=...)``: forget the live gauges of a worker that exited."""

    def forget(pid: int) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]

    return forget


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The one socket every worker accepts on (inheritable)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.set_inheritable(True)
    return sock


async def supervise(
    count: int,
    command: Callable[[int], Sequence[str]],
    *,
    env: Mapping[str, str],
    pass_fds: Sequence[int],
    min_uptime_s: float = MIN_UPTIME_S,
    restart_delay_s: float = RESTART_DELAY_S,
    max_restart_delay_s: float = MAX_RESTART_DELAY_S,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    on_exit: Callable[[int], None] | None = None,
) -> int:
    """Run ``command(i)`` for i in ``range(count)`` until SIGTERM/SIGINT; returns the exit code.

    ``clock`` measures how long a worker lived (tests drive it); ``on_exit(pid)`` is called
    after each worker process has exited.
    """
    processes: dict[int, anyio.abc.Process] = {}
    stopping = anyio.Event()
    failed = False

    def stop_all() -> None:
        stopping.set()
        for proc in processes.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async def kill_after_stop(index: int, proc: anyio.abc.Process) -> None:
        await stopping.wait()
        await anyio.sleep(stop_timeout_s)
        _log.warning("worker_killed", worker=index, pid=proc.pid, stop_timeout_s=stop_timeout_s)
        proc.kill()

    async def run_once(index: int) -> int:
        async with await anyio.open_process(
            list(command(index)),
            stdin=subprocess.DEVNULL,
            stdout=None,  # the supervisor's own stdout/stderr: one log stream
            stderr=None,
            env=dict(env),
            pass_fds=pass_fds,
        ) as proc:
            processes[index] = proc
            _log.info("worker_started", worker=index, pid=proc.pid)
            if stopping.is_set():  # the signal came while this one was starting
                proc.send_signal(signal.SIGTERM)
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_after_stop, index, proc)
                code = await proc.wait()
                tg.cancel_scope.cancel()
        del processes[index]
        if on_exit is not None:
            on_exit(proc.pid)
        return code

    async def worker(index: int) -> None:
        nonlocal failed
        delay = restart_delay_s
        first = True
        while not stopping.is_set():
            started = clock()
            code = await run_once(index)
            lived = clock() - started
            if stopping.is_set():
                _log.info("worker_stopped", worker=index, code=code)
                if code not in (0, -signal.SIGTERM):
                    failed = True
                return
            _log.warning("worker_exited", worker=index, code=code, lived_s=round(lived, 3))
            if lived < min_uptime_s and first:  # a start-up failure: it would only repeat
                failed = True
                stop_all()
                return
            first = False
            if lived >= min_uptime_s:
                delay = restart_delay_s
            _log.info("worker_restarting", worker=index, delay_s=delay)
            with anyio.move_on_after(delay):
                await stopping.wait()
            delay = min(delay * 2, max_restart_delay_s)

    async def forward_signals(
        *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            task_status.started()
            async for signum in received:
                _log.info("shutdown_requested", signal=signum, workers=len(processes))
                stop_all()

    async with anyio.create_task_group() as outer:
        await outer.start(forward_signals)
        async with anyio.create_task_group() as tg:
            for index in range(count):
                tg.start_soon(worker, index)
        outer.cancel_scope.cancel()
    return 1 if failed else 0


__all__ = [
    "MAX_RESTART_DELAY_S",
    "METRICS_DIR_PREFIX",
    "MIN_UPTIME_S",
    "RAM_DIR",
    "RESTART_DELAY_S",
    "STOP_TIMEOUT_S",
    "follow_supervisor",
    "listening_socket",
    "make_metrics_dir",
    "metrics_dir",
    "metrics_worker_exited",
    "prepare_metrics_dir",
    "sigterm_unwinds",
    "supervise",
]
