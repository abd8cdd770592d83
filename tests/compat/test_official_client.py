"""The official ``@microsoft/signalr`` client, driven from Node, against the compat server.

One compat server (``examples/compat_server.py``) runs at a time, on each ASGI server in turn
(hypercorn, hypercorn on uvloop -- the documented production setup -- then uvicorn: the library
runs on any). For each transport and protocol pair one
Node process (``scenarios.mjs``) runs every scenario that applies to the pair and prints one JSON
line per scenario; the five processes run concurrently and each test below reads one line, so a
failure names the scenario, the pair, the server, what the client saw and its log.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.services import free_port, stop_process, wait_for_port

pytestmark = pytest.mark.compat

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS_JS = Path(__file__).with_name("scenarios.mjs")
NODE_TIMEOUT_SECONDS = 100.0
SERVERS = ("hypercorn", "hypercorn+uvloop", "uvicorn", "uvicorn+uvloop")  # ASGI server[+event loop]

WS, SSE, LP = "WebSockets", "ServerSentEvents", "LongPolling"
PAIRS: tuple[tuple[str, str], ...] = (
    (WS, "json"),
    (WS, "messagepack"),
    (SSE, "json"),
    (LP, "json"),
    (LP, "messagepack"),
)

# Scenario name -> the pairs it applies to (None: all). Mirrors the `when` filters in
# scenarios.mjs; test_scenario_lists_match keeps the two in step.
SCENARIOS: dict[str, frozenset[tuple[str, str]] | None] = {
    "invoke": None,
    "send": None,
    "server_calls": None,
    "custom_object": None,
    "stream": None,
    "empty_stream": None,
    "cancel_stream": None,
    "upload_stream": None,
    "upload_stream_error": None,
    "stream_error": None,
    "error_exception": None,
    "error_hub_exception": None,
    "error_stream_mismatch": None,
    "error_unknown_method": None,
    "error_argument_count": None,
    "error_argument_type": None,
    "message_too_large": None,
    "handshake_unknown_protocol": None,
    "cors": frozenset({(WS, "json")}),
    "stateful_reconnect_off": None,
    "restart": None,
    "complex_echo": None,
    "complex_receive": None,
    "auth_token_factory": None,
    "auth_query_token": None,
    "auth_refused_missing": None,
    "auth_refused_texts": None,
    "auth_refused_forged": None,
    "auth_refused_skip_negotiation": frozenset({(WS, "json"), (WS, "messagepack")}),
    "cookies": None,
    "connection_id": None,
    "reconnect_client_timeout": None,
    "redirect": None,
    "skip_negotiation": frozenset({(WS, "json"), (WS, "messagepack")}),
    "transport_name": None,
    "transport_fallback": frozenset({(SSE, "json"), (LP, "json"), (LP, "messagepack")}),
    "transport_fallback_ws_failure": frozenset({(SSE, "json"), (LP, "json"), (LP, "messagepack")}),
    "websockets_disabled": frozenset({(WS, "json"), (WS, "messagepack")}),
    "longpolling_stop": frozenset({(LP, "json"), (LP, "messagepack")}),
    "user_agent": None,
    "custom_headers": None,
    "content_type": None,
    "groups": None,
    "stateful_reconnect": frozenset({(WS, "json"), (WS, "messagepack")}),
    "client_results": None,
    "client_result_endpoint": None,
    "http_connection_echo": frozenset({(WS, "json"), (SSE, "json"), (LP, "json")}),
    "http_connection_redirect": frozenset({(WS, "json")}),
    "http_connection_bad_negotiate": frozenset({(WS, "json")}),
    "client_results_other": None,
    "close_from_outside": None,
    "abort_from_hub": None,
    "concurrent_50": None,
    "ordered_500": None,
    "keep_alive": None,
    "uncreatable": None,
}


def _cases() -> list[Any]:
    cases = []
    for transport, protocol in PAIRS:
        for name, pairs in SCENARIOS.items():
            if pairs is None or (transport, protocol) in pairs:
                cases.append(
                    pytest.param(transport, protocol, name, id=f"{transport}-{protocol}-{name}")
                )
    return cases


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not installed: the compatibility suite drives the official client from Node"
        )
    if not (ROOT / "node_modules" / "@microsoft" / "signalr").is_dir():
        pytest.fail("node_modules lacks @microsoft/signalr: run `npm ci` (make install)")
    return node


@dataclass
class CompatServer:
    base_url: str
    log_path: Path
    server: str


@dataclass
class PairRun:
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished: bool = False
    stderr: str = ""
    returncode: int | None = None


def _start_server(port: int, log_path: Path, server: str) -> subprocess.Popen[bytes]:
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "compat_server.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--server",
                server.partition("+")[0],
                "--loop",
                server.partition("+")[2] or "asyncio",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        wait_for_port(port, timeout=30)
    except TimeoutError:
        proc.kill()
        proc.wait()
        pytest.fail(f"compat server did not start:\n{log_path.read_text()[-4000:]}")
    if proc.poll() is not None:
        pytest.fail(f"compat server exited:\n{log_path.read_text()[-4000:]}")
    return proc


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        stop_process(proc)


@pytest.fixture(scope="session", params=SERVERS)
def compat_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CompatServer]:
    server: str = request.param
    port = free_port()
    log_path = tmp_path_factory.mktemp(f"compat-server-{server}") / "server.log"
    proc = _start_server(port, log_path, server)
    try:
        yield CompatServer(f"http://127.0.0.1:{port}", log_path, server)
    finally:
        _stop_server(proc)


class PairRunner:
    """Starts every pair's Node process at once, collects each one on first use.

    Output goes to files, not pipes: a process is never blocked on a full pipe while pytest
    waits for another one.
    """

    def __init__(self, server: CompatServer, out_dir: Path) -> None:
        node = _node()
        self.runs: dict[tuple[str, str], PairRun] = {}
        for transport, protocol in PAIRS:
            stdout_path = out_dir / f"{transport}-{protocol}.out"
            stderr_path = out_dir / f"{transport}-{protocol}.err"
            with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
                proc = subprocess.Popen(
                    [
                        node,
                        str(SCENARIOS_JS),
                        "--base",
                        server.base_url,
                        "--transport",
                        transport,
                        "--protocol",
                        protocol,
                    ],
                    cwd=ROOT,
                    stdout=stdout,
                    stderr=stderr,
                )
            self.runs[(transport, protocol)] = PairRun(proc, stdout_path, stderr_path)

    def result(self, transport: str, protocol: str) -> PairRun:
        run = self.runs[(transport, protocol)]
        if not run.finished:
            try:
                run.process.wait(timeout=NODE_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()
                run.stderr = f"[killed after {NODE_TIMEOUT_SECONDS}s]\n"
            run.returncode = run.process.returncode
            run.stderr += run.stderr_path.read_text()
            for line in run.stdout_path.read_text().splitlines():
                if line.startswith("{"):
                    record = json.loads(line)
                    if "scenario" in record:
                        run.results[record["scenario"]] = record
            run.finished = True
        return run

    def close(self) -> None:
        for run in self.runs.values():
            if run.process.poll() is None:
                run.process.kill()
            run.process.wait()


@pytest.fixture(scope="session")
def pair_runner(
    compat_server: CompatServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PairRunner]:
    runner = PairRunner(compat_server, tmp_path_factory.mktemp("compat-node"))
    try:
        yield runner
    finally:
        runner.close()


@pytest.mark.parametrize(("transport", "protocol", "scenario"), _cases())
def test_scenario(
    pair_runner: PairRunner,
    compat_server: CompatServer,
    transport: str,
    protocol: str,
    scenario: str,
) -> None:
    run = pair_runner.result(transport, protocol)
    record = run.results.get(scenario)
    if record is None:
        pytest.fail(
            f"no result for {scenario} over {transport}/{protocol} "
            f"(node exit {run.returncode}); stderr:\n{run.stderr[-3000:]}"
        )
    if not record["ok"]:
        logs = "\n".join(record.get("logs") or [])
        pytest.fail(
            f"{scenario} over {transport}/{protocol} on {compat_server.server}: "
            f"{record['error']}\n"
            f"client log:\n{logs}\nserver log: {compat_server.log_path}",
            pytrace=False,
        )


def test_scenario_lists_match() -> None:
    """The pytest table and scenarios.mjs agree on which scenario runs on which pair."""
    node = _node()
    for transport, protocol in PAIRS:
        listed = subprocess.run(
            [
                node,
                str(SCENARIOS_JS),
                "--base",
                "http://unused",
                "--transport",
                transport,
                "--protocol",
                protocol,
                "--list",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
        expected = [
            name
            for name, pairs in SCENARIOS.items()
            if pairs is None or (transport, protocol) in pairs
        ]
        assert sorted(listed) == sorted(expected), (transport, protocol)


# ---------------------------------------------------------------------------------------------
# Automatic reconnect when the server goes away: a graceful shutdown (SIGTERM; the server tells
# clients they may reconnect) and then a crash (SIGKILL; connections drop). A server of its own,
# restarted on the same port; one Node client per pair (reconnect.mjs), all at once.

RECONNECT_JS = Path(__file__).with_name("reconnect.mjs")
PHASE_TIMEOUT_SECONDS = 30.0


@dataclass
class RestartRun:
    events: dict[tuple[str, str], list[dict[str, Any]]]
    stderr: dict[tuple[str, str], str]
    log_path: Path


def _wait_all(
    lines: queue.Queue[tuple[tuple[str, str], dict[str, Any]]],
    events: dict[tuple[str, str], list[dict[str, Any]]],
    want: Callable[[dict[str, Any]], bool],
) -> None:
    """Read events until every pair still running has one matching ``want`` (or timeout)."""
    deadline = time.monotonic() + PHASE_TIMEOUT_SECONDS

    def pending() -> list[tuple[str, str]]:
        return [
            pair
            for pair, evs in events.items()
            if not any(want(e) for e in evs) and not any(e["event"] == "error" for e in evs)
        ]

    while pending() and time.monotonic() < deadline:
        try:
            pair, event = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        events[pair].append(event)


def _round_event(kind: str, round_no: int) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == kind and e.get("round") == round_no


@pytest.fixture(scope="module", params=SERVERS)
def restart_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RestartRun]:
    asgi_server: str = request.param
    node = _node()
    port = free_port()
    out_dir = tmp_path_factory.mktemp(f"compat-restart-{asgi_server}")
    log_path = out_dir / "server.log"
    server = _start_server(port, log_path, asgi_server)
    lines: queue.Queue[tuple[tuple[str, str], dict[str, Any]]] = queue.Queue()
    events: dict[tuple[str, str], list[dict[str, Any]]] = {pair: [] for pair in PAIRS}
    procs: dict[tuple[str, str], subprocess.Popen[str]] = {}
    stderr: dict[tuple[str, str], str] = {}

    def pump(pair: tuple[str, str], proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                lines.put((pair, json.loads(line)))

    threads = []
    try:
        for pair in PAIRS:
            with (out_dir / f"{pair[0]}-{pair[1]}.err").open("w") as err:
                proc = subprocess.Popen(
                    [
                        node,
                        str(RECONNECT_JS),
                        "--base",
                        f"http://127.0.0.1:{port}",
                        "--transport",
                        pair[0],
                        "--protocol",
                        pair[1],
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                )
            procs[pair] = proc
            thread = threading.Thread(target=pump, args=(pair, proc), daemon=True)
            thread.start()
            threads.append(thread)
        _wait_all(lines, events, lambda e: e["event"] == "ready")
        for round_no, stop in ((1, signal.SIGTERM), (2, signal.SIGKILL)):
            server.send_signal(stop)
            server.wait(20)
            _wait_all(lines, events, _round_event("reconnecting", round_no))
            server = _start_server(port, log_path, asgi_server)
            _wait_all(lines, events, _round_event("reconnected", round_no))
        _wait_all(lines, events, lambda e: e["event"] == "done")
        for pair, proc in procs.items():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stderr[pair] = (out_dir / f"{pair[0]}-{pair[1]}.err").read_text()
        for thread in threads:
            thread.join(5)
        while not lines.empty():
            pair, event = lines.get_nowait()
            events[pair].append(event)
        yield RestartRun(events, stderr, log_path)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for thread in threads:
            thread.join(5)
        for proc in procs.values():
            if proc.stdout is not None:
                proc.stdout.close()
        _stop_server(server)


@pytest.mark.parametrize(
    ("transport", "protocol"), [pytest.param(*p, id=f"{p[0]}-{p[1]}") for p in PAIRS]
)
def test_reconnect_after_server_restart(
    restart_run: RestartRun, transport: str, protocol: str
) -> None:
    events = restart_run.events[(transport, protocol)]
    summary = (
        f"events: {events}\nstderr: {restart_run.stderr.get((transport, protocol), '')[-2000:]}"
    )
    errors = [e for e in events if e["event"] == "error"]
    assert not errors, summary
    kinds = [e["event"] for e in events]
    assert kinds == [
        "ready",
        "reconnecting",
        "reconnected",
        "reconnecting",
        "reconnected",
        "done",
    ], summary
    graceful = events[1]
    # A graceful shutdown sends Close with allowReconnect (ASP.NET: "Server is shutting down").
    assert graceful["closeMessage"] is True, f"no Close message on graceful shutdown; {summary}"
    for reconnected in (events[2], events[4]):
        assert reconnected["newConnectionId"] is True, summary
        assert reconnected["serverIdMatches"] is True, summary
    assert events[5]["closeError"] is None, summary
