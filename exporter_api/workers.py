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
reaches them once, through the supervisor. A worker that exits on its own is started again,
unless it did not live ``min_uptime_s`` (a start-up failure would only repeat): then every worker
is stopped and the supervisor exits with status 1.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import anyio
import anyio.abc
import structlog

_log = structlog.get_logger("exporter_api.workers")

MIN_UPTIME_S = 10.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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
) -> int:
    """Run ``command(i)`` for i in ``range(count)`` until SIGTERM/SIGINT; returns the exit code."""
    processes: dict[int, anyio.abc.Process] = {}
    stopping = anyio.Event()
    failed = False

    def stop_all() -> None:
        stopping.set()
        for proc in processes.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async def worker(index: int) -> None:
        nonlocal failed
        while not stopping.is_set():
            started = time.monotonic()
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
                code = await proc.wait()
            del processes[index]
            if stopping.is_set():
                _log.info("worker_stopped", worker=index, code=code)
                return
            _log.warning("worker_exited", worker=index, code=code)
            if time.monotonic() - started < min_uptime_s:
                failed = True
                stop_all()
                return

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


__all__ = ["MIN_UPTIME_S", "follow_supervisor", "listening_socket", "supervise"]
