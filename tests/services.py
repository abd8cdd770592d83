"""Throwaway real servers for the test suite: a PostgreSQL cluster, a Redis server, and the
service itself (`exporter-api serve` on a copy of the demo catalog).

Each is started on a free loopback port in a temporary directory and stopped afterwards. The
machine's own PostgreSQL and Redis (trust auth, shared state) are never used.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll ``condition`` until it returns something truthy (and return that); fail naming
    ``what``. For state of other processes (their logs, files, sockets): nothing to await."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(
    condition: Callable[[], T | None],
    limit: float = 5.0,
    what: str = "the condition",
    interval: float = 0.01,
) -> T:
    """`wait_until` on the event loop (``limit`` seconds): for state with no event to await
    (a server thread's, another process's)."""
    deadline = anyio.current_time() + limit
    while True:
        value = condition()
        if value:
            return value
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await anyio.sleep(interval)


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_survivors(pids: Iterable[int], within_s: float) -> list[int]:
    """Give ``pids`` (other processes: nothing to await) up to ``within_s`` seconds to exit;
    those still alive then are SIGKILLed, so none outlives the test, and returned."""
    pids = list(pids)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not any(map(_alive, pids)), within_s, "the processes to exit", 0.02)
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Terminate ``proc``; kill it if it has not exited after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


ROOT = Path(__file__).resolve().parents[1]


def serve_command() -> list[str]:
    """How to run ``exporter-api`` with this interpreter (the venv's script, or ``-m``)."""
    script = Path(sys.executable).with_name("exporter-api")
    return [str(script)] if script.exists() else [sys.executable, "-m", "exporter_api"]


def demo_config(directory: Path, replacements: Mapping[str, str] | None = None) -> Path:
    """A copy of examples/demo (catalog and SQL files) under ``directory``; each ``old -> new``
    of ``replacements`` is applied once to its exporter.toml (and must be found there)."""
    demo = directory / "demo"
    shutil.copytree(ROOT / "examples" / "demo", demo)
    config = demo / "exporter.toml"
    text = config.read_text(encoding="utf-8")
    for old, new in (replacements or {}).items():
        assert old in text, f"examples/demo/exporter.toml no longer has {old!r}"
        text = text.replace(old, new, 1)
    config.write_text(text, encoding="utf-8")
    return config


_SERVICE_ENV = ("EXPORTER_", "PROMETHEUS_")


def service_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a service process started by a test: this one's without its
    ``EXPORTER_*`` and ``PROMETHEUS_*`` settings (a developer's or CI's state URL, keys or
    metrics directory never reach the service), unbuffered output, then ``env``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV)}
    return {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}


@contextlib.contextmanager
def exporter_serve(
    config: Path,
    data_dir: Path,
    log_path: Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 90,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``exporter-api serve`` on a free port, its output appended to ``log_path``; yields the
    process and its base URL and stops it (if still alive) when the block ends.

    The environment is `service_env` (``env`` added): the service is configured by ``config``,
    ``args`` and ``env`` only. A test may stop the process itself (a signal, then ``wait``)."""
    port = free_port()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                *serve_command(),
                "serve",
                *("--config", str(config), "--host", "127.0.0.1", "--port", str(port)),
                *("--data-dir", str(data_dir), *args),
            ],
            cwd=ROOT,
            env=service_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            # A first start on the demo builds its database (2,000,000 ledger rows) first.
            wait_for_port(port, timeout=timeout)
        except TimeoutError:
            raise AssertionError(
                f"exporter-api did not start:\n{log_path.read_text(errors='replace')}"
            ) from None
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            stop_process(proc, 15)


def log_events(log_path: Path) -> list[dict[str, Any]]:
    """The JSON log events a service process wrote to ``log_path`` so far."""
    text = log_path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def wait_for_workers(log_path: Path, count: int = 2, timeout: float = 60) -> list[dict[str, Any]]:
    """The log events of a ``serve --workers`` once ``count`` workers have started serving."""

    def started() -> list[dict[str, Any]] | None:
        events = log_events(log_path)
        workers = {e["worker"] for e in events if e["event"] == "service_started"}
        return events if workers == set(range(count)) else None

    return wait_until(started, timeout, f"{count} workers to start", 0.1)


def _pg_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found


@dataclass(frozen=True)
class PostgresCluster:
    """A running throwaway cluster with scram-sha-256 password authentication."""

    host: str
    port: int
    superuser: str
    password: str

    def dsn(
        self, user: str | None = None, password: str | None = None, db: str = "postgres"
    ) -> str:
        return (
            f"postgresql://{user or self.superuser}:{password or self.password}"
            f"@{self.host}:{self.port}/{db}"
        )

    def psql(self, sql: str, db: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        out = subprocess.run(
            [
                _pg_bin("psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                db,
                "-c",
                sql,
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    base = Path(tempfile.mkdtemp(prefix="pgtest-"))
    data, sock = base / "data", base / "sock"
    data.mkdir()
    sock.mkdir()
    password = secrets.token_urlsafe(16)
    pwfile = base / "pw"
    pwfile.write_text(password)
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root: the cluster belongs to the postgres system user.
        shutil.chown(base, "postgres")
        for p in (data, sock, pwfile):
            shutil.chown(p, "postgres")
        os.chmod(base, 0o755)  # noqa: S103 -- the postgres user must traverse it
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(
        [
            *as_postgres,
            _pg_bin("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
        check=True,
        capture_output=True,
    )
    log = base / "server.log"
    subprocess.run(
        [
            *as_postgres,
            _pg_bin("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200 -c full_page_writes=off",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield PostgresCluster("127.0.0.1", port, "postgres", password)
    finally:
        subprocess.run(
            [*as_postgres, _pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


@contextlib.contextmanager
def redis_server(port: int | None = None) -> Iterator[RedisServer]:
    """A redis-server on `port` (a free one by default) that keeps nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    base = Path(tempfile.mkdtemp(prefix="redistest-"))
    port = port or free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(base),
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield RedisServer("127.0.0.1", port)
    finally:
        stop_process(proc)
        shutil.rmtree(base, ignore_errors=True)
