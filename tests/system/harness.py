"""The system under test: PostgreSQL, Redis, HAProxy and several ``exporter-api serve`` processes.

``System.start()`` builds it in a temporary directory:

- one throwaway PostgreSQL cluster holding the state store (``sysstate``) and the export
  database (``sysexport``, see ``catalog.py``);
- one redis-server (the hub backplane);
- N instances: the same ``--state-url``, Redis URL, ``EXPORTER_JWT_KEY`` /
  ``EXPORTER_VAULT_KEY`` and catalog (so one ``[output] files_dir``), each its own port and
  ``--data-dir``; each one's stdout and stderr go to ``<name>.log``;
- HAProxy in front of them (``haproxy.cfg`` below), its log in ``haproxy.log``.

Instances can be killed (SIGKILL), stopped (SIGTERM, waiting for the exit) and started again on
their port. Which instance executes a run is read from the database server itself: the export
query's backend in ``pg_stat_activity`` has a client port, and the instance is the process that
owns that socket (``/proc/net/tcp`` + ``/proc/<pid>/fd``). That needs no cooperation from the
service, so it holds whatever queue decides who runs what.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.services import (
    PostgresCluster,
    free_port,
    stop_process,
    wait_for_port,
    wait_until,
)
from tests.system.catalog import STATE_DB, write_catalog

ROOT = Path(__file__).resolve().parents[2]
READY_PATH = "/readyz"


def log_tail(path: Path, start: int = 0, limit: int = 12_000) -> str:
    if not path.exists():
        return "(no log)"
    data = path.read_bytes()[start:]
    text = data.decode("utf-8", "replace")
    return text if len(text) <= limit else "...\n" + text[-limit:]


@dataclass
class Instance:
    """One ``exporter-api serve`` process on a fixed port (it comes back on the same one)."""

    name: str
    port: int
    command: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            log.write(f"--- harness: starting {self.name} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + READY_PATH, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 40) -> None:
        def check() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{log_tail(self.log_path)}")
            return self.ready()

        wait_until(check, timeout, f"{self.name} to answer {READY_PATH} with 200", 0.1)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as on a host loss."""
        assert self.proc is not None, f"{self.name} was never started"
        assert self.alive, f"{self.name} is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._note("killed (SIGKILL)")

    def terminate(self, timeout: float = 60) -> float:
        """SIGTERM, then wait for the exit (drain); returns how long the exit took."""
        assert self.proc is not None, f"{self.name} was never started"
        assert self.alive, f"{self.name} is not running"
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit {timeout}s after SIGTERM") from None
        elapsed = time.monotonic() - started
        self._note(f"exited with {code} {elapsed:.2f}s after SIGTERM")
        return elapsed

    def wait_exit(self, timeout: float = 30) -> int:
        """The exit code of an instance expected to stop by itself."""
        assert self.proc is not None, f"{self.name} was never started"
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still runs after {timeout}s") from None

    def stop(self) -> None:
        if self.proc is not None and self.alive:
            stop_process(self.proc, timeout=15)

    def _note(self, text: str) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"--- harness: {self.name} {text} at {time.time():.3f}\n".encode())


# Why each line is there is said in docs/DEPLOYMENT.md, which shows the same configuration.
HAPROXY_CFG = """
global
    log stdout format raw local0
    maxconn 4096
    stats socket {stats} mode 600 level admin

defaults
    mode http
    log global
    # backend/server, status, method, X-Client (the test's client name), path
    log-format "%b/%s %ST %HM %[capture.req.hdr(0)] %HU"
    option redispatch
    retries 3
    timeout connect 2s
    timeout http-request 10s
    # Longer than SignalR's 15 s keep-alive, its 30 s client timeout and the 90 s long poll.
    timeout client 120s
    timeout server 120s
    # WebSocket (and SSE) connections once upgraded: idle at most this long.
    timeout tunnel 1h

frontend exporter
    bind 127.0.0.1:{port}
    http-request capture req.hdr(X-Client) len 64
    default_backend exporters

backend exporters
    balance roundrobin
    # SignalR: negotiate, then connect with the connection token, must reach one server (the
    # token lives in that process); with SSE and Long Polling every later poll and send is a
    # request of its own that must reach it too. The client keeps this cookie (in Node too).
    cookie SRV insert indirect nocache httponly
    option httpchk GET {ready}
    http-check expect status 200
    default-server inter 300ms fastinter 200ms downinter 300ms fall 2 rise 2
{servers}
"""

_LOG_LINE = re.compile(
    r"^(?P<backend>\S+)/(?P<server>\S+) (?P<status>-?\d+) (?P<method>\S+) "
    r"(?P<client>\S*) (?P<path>\S+)"
)


@dataclass(frozen=True)
class ProxiedRequest:
    server: str
    status: int
    method: str
    client: str
    path: str


@dataclass
class HaProxy:
    port: int
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, servers: list[Instance]) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        lines = "\n".join(
            f"    server {i.name} 127.0.0.1:{i.port} check cookie {i.name}" for i in servers
        )
        self.config_path.write_text(
            HAPROXY_CFG.format(
                port=self.port, servers=lines, stats=self.stats_path, ready=READY_PATH
            )
        )
        check = subprocess.run([binary, "-c", "-f", str(self.config_path)], capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(self.config_path)], stdout=log, stderr=log
            )
        wait_for_port(self.port)

    @property
    def stats_path(self) -> Path:
        return self.config_path.with_suffix(".sock")

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of each backend server: UP, DOWN, NOLB (draining), ..."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.stats_path))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "exporters" and row.get("svname") not in {"BACKEND", None}:
                states[row["svname"]] = row["status"]
        return states

    def wait_up(self, names: list[str], timeout: float = 20) -> None:
        def check() -> bool:
            states = self.server_states()
            return all(states.get(n, "").startswith("UP") for n in names)

        wait_until(check, timeout, f"HAProxy to see {names} up", 0.1)

    def requests(self, client: str | None = None) -> list[ProxiedRequest]:
        """The requests HAProxy has logged (once each ended; a WebSocket when it closes)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            m = _LOG_LINE.match(line)
            if m is None:
                continue
            name = m["client"].strip("{}")
            if client is None or name == client:
                found.append(
                    ProxiedRequest(m["server"], int(m["status"]), m["method"], name, m["path"])
                )
        return found

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)


@dataclass
class Redis:
    """A redis-server (nothing on disk) that a test can stop and start again on its port."""

    port: int
    directory: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    *("--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
                ],
                stdout=log,
                stderr=log,
            )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)


class PgMonitor:
    """A superuser connection to the export database for ``pg_stat_activity`` (sync API)."""

    def __init__(self, dsn: str) -> None:
        self._runner = asyncio.Runner()
        self._conn: Any = self._runner.run(asyncpg.connect(dsn))

    def fetch(self, sql: str, *args: object) -> list[Any]:
        rows: list[Any] = self._runner.run(self._conn.fetch(sql, *args))
        return rows

    def active_queries(self, user: str) -> list[tuple[int, int]]:
        """(backend pid, client port) of every query running for ``user``."""
        rows = self.fetch(
            "SELECT pid, client_port FROM pg_stat_activity"
            " WHERE usename = $1 AND state = 'active' AND backend_type = 'client backend'",
            user,
        )
        return [(r["pid"], r["client_port"]) for r in rows]

    def close(self) -> None:
        self._runner.run(self._conn.close())
        self._runner.close()


def _socket_inode(port: int) -> int | None:
    """The inode of the local TCP socket bound to ``port`` (the client side of a connection)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == port:
                    return int(parts[9])
    return None


def _owns_socket(pid: int, inode: int) -> bool:
    target = f"socket:[{inode}]"
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


@dataclass
class System:
    """Everything started by ``start_system``; tests use its methods, never its processes."""

    base: Path
    pg: PostgresCluster
    redis: Redis
    config_path: Path
    files_dir: Path
    instances: list[Instance]
    haproxy: HaProxy
    monitor: PgMonitor
    env: dict[str, str]
    state_url: str
    extra: list[Instance] = field(default_factory=list)

    def instance(self, name: str) -> Instance:
        return next(i for i in [*self.instances, *self.extra] if i.name == name)

    def new_instance(
        self,
        name: str,
        *,
        env: dict[str, str] | None = None,
        config_path: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> Instance:
        """An instance like the others (not behind HAProxy; its own environment, catalog or
        extra ``serve`` arguments when given), not started yet."""
        instance = _make_instance(self, name, env, config_path)
        instance.command += args
        self.extra.append(instance)
        return instance

    def driver_of(self, user: str) -> Instance | None:
        """The instance running a query of ``user`` now (None when no query runs)."""
        for _, port in self.monitor.active_queries(user):
            inode = _socket_inode(port)
            if inode is None:
                continue
            for instance in [*self.instances, *self.extra]:
                if instance.alive and instance.proc and _owns_socket(instance.proc.pid, inode):
                    return instance
        return None

    def wait_driver(self, user: str, timeout: float = 20) -> Instance:
        return wait_until(lambda: self.driver_of(user), timeout, f"a query of {user} to run")

    def restore(self) -> None:
        """Every regular instance running and ready, the extra ones gone."""
        for instance in self.extra:
            instance.stop()
        self.extra.clear()
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.redis.start()
        for instance in self.instances:
            if not instance.alive:
                instance.start()
        for instance in self.instances:
            instance.wait_ready()
        self.haproxy.wait_up([i.name for i in self.instances])

    def logs(self, offsets: dict[Path, int] | None = None) -> str:
        """Every log (from ``offsets`` on, when given), for a failing test's report."""
        parts = []
        paths = [i.log_path for i in [*self.instances, *self.extra]]
        paths += [self.haproxy.log_path, self.redis.log_path]
        for path in paths:
            start = (offsets or {}).get(path, 0)
            parts.append(f"===== {path.name}\n{log_tail(path, start)}")
        return "\n".join(parts)

    def log_offsets(self) -> dict[Path, int]:
        paths = [i.log_path for i in self.instances] + [self.haproxy.log_path, self.redis.log_path]
        return {p: p.stat().st_size if p.exists() else 0 for p in paths}


def _make_instance(
    system: System,
    name: str,
    env: dict[str, str] | None = None,
    config_path: Path | None = None,
) -> Instance:
    port = free_port()
    data_dir = system.base / f"data-{name}"
    data_dir.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "exporter_api",
        "serve",
        *("--config", str(config_path or system.config_path)),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--data-dir", str(data_dir)),
        *("--state-url", system.state_url),
        *("--redis-url", system.redis.url),
    ]
    log_path = system.base / f"{name}.log"
    return Instance(name, port, command, system.env if env is None else env, log_path)


def new_key() -> str:
    """A key as EXPORTER_JWT_KEY / EXPORTER_VAULT_KEY take it (URL-safe base64, 32 bytes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def start_system(base: Path, pg: PostgresCluster, count: int = 3) -> System:
    """Start Redis, ``count`` instances and HAProxy on an already prepared export database.
    A Redis of its own: pub/sub channels are not separated by database number."""
    redis = Redis(free_port(), base / "redis", base / "redis.log")
    files_dir = base / "shared-files"
    files_dir.mkdir()
    config_path = write_catalog(base / "catalog", pg, files_dir)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EXPORTER_JWT_KEY": new_key(),
        "EXPORTER_VAULT_KEY": new_key(),
    }
    for name in ("EXPORTER_STATE_URL", "EXPORTER_REDIS_URL"):
        env.pop(name, None)
    redis.start()
    try:
        monitor = PgMonitor(pg.dsn(db="sysexport"))
    except BaseException:
        redis.stop()
        raise
    system = System(
        base=base,
        pg=pg,
        redis=redis,
        config_path=config_path,
        files_dir=files_dir,
        instances=[],
        haproxy=HaProxy(free_port(), base / "haproxy.cfg", base / "haproxy.log"),
        monitor=monitor,
        env=env,
        state_url=pg.dsn(db=STATE_DB),
    )
    try:
        system.instances = [_make_instance(system, f"i{n}") for n in range(1, count + 1)]
        for instance in system.instances:
            instance.start()
        for instance in system.instances:
            instance.wait_ready(timeout=90)
        system.haproxy.start(system.instances)
        system.haproxy.wait_up([i.name for i in system.instances])
    except BaseException:
        stop_system(system)
        raise
    return system


def stop_system(system: System) -> None:
    system.haproxy.stop()
    for instance in [*system.instances, *system.extra]:
        instance.stop()
    system.redis.stop()
    system.monitor.close()
