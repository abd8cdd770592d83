"""SignalR benchmark: signalr_core against a bare ASGI app on the same ASGI server, in one run.

One script, one run, same machine and same load client. Each target is ``APP@ASGI``: an app of
:mod:`benchmarks._servers` (``echo``, the bare ASGI app; ``signalr_core``; also ``aiosignalr``,
``signalr_core_redis``, ``signalr_core_root``) on an ASGI server (``hypercorn``,
``hypercorn-uvloop``, ``uvicorn``). The default compares the bare app and the hub on all three.

(a) invocation round trips per second on one WebSocket connection, one invocation in flight
    (``Echo("hello")``, waiting for its Completion), for the JSON and the MessagePack protocol;
(b) the same over Server-Sent Events: POST the invocation, wait for its Completion as an event;
(c) broadcast fan-out latency: 1,000 connections, one more connection invokes ``Broadcast``,
    the time from sending that frame until each of the 1,000 receives ``Receive`` (p50/p99), and
    how many never arrived.

The bare app gets the same frames: (a) the very same Invocation bytes echoed back, (b) the very
same POST bodies sent back as one event on its event stream, (c) a text frame that it relays to
every open socket. Its numbers are the ceiling, and the hub's are reported as ratios to the bare
app on the same ASGI server.

Each server runs in its own subprocess on a free loopback port; the load client is this process
(raw-socket clients, :mod:`benchmarks._wsclient` and :mod:`benchmarks._httpclient`). Counts and
durations are bounded; a case that errors or times out is recorded as ``fails: <reason>``
instead of a number. Results are printed as Markdown and written to ``var/bench/signalr.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from benchmarks._httpclient import connect as http_connect
from benchmarks._wsclient import OP_BINARY, OP_TEXT, WebSocketClient, connect
from tests.procstat import cpu_seconds
from tests.services import free_port, redis_server, stop_process

ROOT = Path(__file__).resolve().parent.parent
RS = b"\x1e"
CASES = ("rtt_json", "rtt_messagepack", "rtt_sse", "fanout")
# APP@ASGI: an app of benchmarks._servers on an ASGI server (see _servers.ASGI_SERVERS).
# Also available: aiosignalr@..., signalr_core_redis@..., signalr_core_root@...
SERVERS = tuple(
    f"{app}@{asgi}"
    for asgi in ("hypercorn", "hypercorn-uvloop", "uvicorn")
    for app in ("echo", "signalr_core")
)


# --------------------------------------------------------------------------------- protocols ---
class JsonMessage(msgspec.Struct):
    """The fields of a hub message the client looks at (JSON protocol)."""

    type: int
    invocationId: str | None = None
    target: str | None = None
    result: Any = None
    error: str | None = None
    arguments: list[Any] | None = None


@dataclass(frozen=True)
class Reply:
    type: int
    invocation_id: str | None
    value: Any  # Completion result, or the first argument of an Invocation


class Codec:
    name = ""
    opcode = OP_TEXT

    def invocation(self, target: str, args: list[Any], invocation_id: str | None) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes) -> list[Reply]:
        raise NotImplementedError


class JsonCodec(Codec):
    name = "json"
    opcode = OP_TEXT

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(JsonMessage)

    def invocation(self, target: str, args: list[Any], invocation_id: str | None) -> bytes:
        message: dict[str, Any] = {"type": 1, "target": target, "arguments": args}
        if invocation_id is not None:
            message["invocationId"] = invocation_id
        return msgspec.json.encode(message) + RS

    def decode(self, payload: bytes) -> list[Reply]:
        replies = []
        for part in payload.split(RS):
            if part:
                m = self._decoder.decode(part)
                value = m.result if m.type == 3 else (m.arguments[0] if m.arguments else None)
                replies.append(Reply(m.type, m.invocationId, value))
        return replies


class MessagePackCodec(Codec):
    name = "messagepack"
    opcode = OP_BINARY

    def invocation(self, target: str, args: list[Any], invocation_id: str | None) -> bytes:
        body = msgspec.msgpack.encode([1, {}, invocation_id, target, args, []])
        n, prefix = len(body), bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            prefix.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(prefix) + body

    def decode(self, payload: bytes) -> list[Reply]:
        replies, pos = [], 0
        while pos < len(payload):
            length = shift = 0
            while True:
                byte = payload[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            item = msgspec.msgpack.decode(payload[pos : pos + length])
            pos += length
            kind = item[0]
            if kind == 3:  # [3, headers, id, resultKind, result?]
                replies.append(Reply(3, item[2], item[4] if len(item) > 4 else None))
            elif kind == 1:  # [1, headers, id, target, args, streams?]
                replies.append(Reply(1, item[2], item[4][0] if item[4] else None))
            else:
                replies.append(Reply(kind, None, None))
        return replies


CODECS: dict[str, Callable[[], Codec]] = {"json": JsonCodec, "messagepack": MessagePackCodec}


# ----------------------------------------------------------------------------------- servers ---
@contextlib.contextmanager
def server_process(target: str, env: dict[str, str] | None = None) -> Iterator[tuple[int, int]]:
    """Run ``benchmarks._servers APP PORT ASGI`` until the block ends; yields (port, pid)."""
    kind = target
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "benchmarks._servers", app_of(target), str(port), asgi_of(target)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log.seek(0)
                tail = log.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"{kind} server exited with {proc.returncode}: {tail}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind} server did not listen within 30 s")
            time.sleep(0.05)
        yield port, proc.pid
    finally:
        stop_process(proc)
        log.close()


# ------------------------------------------------------------------------------------ client ---
class Inbox:
    """Collects decoded replies of one connection; notes frames of the wrong type."""

    def __init__(self, ws: WebSocketClient, codec: Codec, *, handshake: bool) -> None:
        self.codec = codec
        self.pending_handshake = handshake
        self.replies: list[Reply] = []
        self.wrong_frame_type = 0
        self.waiter: asyncio.Future[None] | None = None
        ws.on_message = self._on_message

    def _on_message(self, opcode: int, payload: bytes) -> None:
        if opcode != self.codec.opcode:
            self.wrong_frame_type += 1
        if self.pending_handshake:
            end = payload.find(RS)
            if end < 0:
                return
            response = msgspec.json.decode(payload[:end])
            if response:
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_exception(RuntimeError(f"handshake refused: {response}"))
                return
            self.pending_handshake = False
            payload = payload[end + 1 :]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)
            if not payload:
                return
        self.replies.extend(self.codec.decode(payload))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, seconds: float) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(seconds):
            await self.waiter


async def open_hub(port: int, codec: Codec, *, bare: bool) -> tuple[WebSocketClient, Inbox]:
    """Connect (skipNegotiation) and complete the SignalR handshake unless ``bare``."""
    ws = await connect("127.0.0.1", port, "/hub")
    inbox = Inbox(ws, codec, handshake=not bare)
    if not bare:
        # The handshake is JSON text even for MessagePack (as the official client sends it).
        ws.send(OP_TEXT, msgspec.json.encode({"protocol": codec.name, "version": 1}) + RS)
        while inbox.pending_handshake:
            await inbox.wait(10)
    return ws, inbox


# ------------------------------------------------------------------------------------- cases ---
@dataclass
class RoundTrips:
    per_second: float
    count: int
    seconds: float
    server_cpu_us: float  # server CPU time per round trip
    notes: list[str] = field(default_factory=list)


async def round_trips(
    port: int, pid: int, protocol: str, *, bare: bool, seconds: float, warmup: float
) -> RoundTrips:
    codec = CODECS[protocol]()
    ws, inbox = await open_hub(port, codec, bare=bare)
    expected_type = 1 if bare else 3
    count = 0
    try:
        for phase_seconds, counting in ((warmup, False), (seconds, True)):
            started, cpu_started = time.perf_counter(), cpu_seconds(pid)
            deadline = started + phase_seconds
            while time.perf_counter() < deadline:
                invocation_id = str(count)
                ws.send(codec.opcode, codec.invocation("Echo", ["hello"], invocation_id))
                while True:
                    while not inbox.replies:
                        await inbox.wait(5)
                    reply = inbox.replies.pop(0)
                    if reply.type == 6:  # a keep-alive ping
                        continue
                    if (
                        reply.type != expected_type
                        or reply.invocation_id != invocation_id
                        or reply.value != "hello"
                    ):
                        raise RuntimeError(f"unexpected reply {reply}")
                    break
                count += 1
            if not counting:
                count = 0
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_started
    finally:
        ws.close()
    notes = []
    if inbox.wrong_frame_type:
        notes.append(
            f"{inbox.wrong_frame_type} {protocol} messages arrived in "
            f"{'binary' if codec.opcode == OP_TEXT else 'text'} frames (protocol violation: "
            "the official client fails on this)"
        )
    return RoundTrips(count / elapsed, count, elapsed, 1e6 * cpu / max(count, 1), notes)


async def sse_round_trips(
    port: int, pid: int, *, bare: bool, seconds: float, warmup: float
) -> RoundTrips:
    """POST an ``Echo`` invocation, wait for its Completion on the SSE stream, repeat.

    The hub: negotiate, the event stream (``GET /hub?id=``), the handshake POST, then each round
    trip is a POST of the invocation and its Completion as one event. The bare app gets the very
    same POST bodies at ``/send`` and sends each back as one event on ``/sse``. A round trip ends
    when both the POST's response and the event have arrived (the next POST reuses the
    connection, as the official client's does).
    """
    codec = JsonCodec()
    posts = await http_connect("127.0.0.1", port)
    events = await http_connect("127.0.0.1", port)
    replies: list[Reply] = []
    state: dict[str, Any] = {"handshake": not bare, "waiter": None}

    def wake() -> None:
        waiter = state["waiter"]
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_event(data: bytes) -> None:
        if state["handshake"]:
            end = data.find(RS)
            if end < 0:
                return
            state["handshake"] = False
            data = data[end + 1 :]
            wake()
        if data:
            replies.extend(codec.decode(data))
            wake()

    async def wait(limit: float) -> None:
        state["waiter"] = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(limit):
            await state["waiter"]

    try:
        if bare:
            stream_target, send_target = "/sse?id=bench", "/send?id=bench"
        else:
            status, body = await posts.request("POST", "/hub/negotiate?negotiateVersion=1")
            if status != 200:
                raise RuntimeError(f"negotiate answered {status}")
            token = json.loads(body)["connectionToken"]
            stream_target = send_target = f"/hub?id={token}"
        status, _ = await events.stream(stream_target, on_event)
        if status != 200:
            raise RuntimeError(f"event stream answered {status}")
        if not bare:
            handshake = msgspec.json.encode({"protocol": "json", "version": 1}) + RS
            status, _ = await posts.request("POST", send_target, handshake)
            while state["handshake"]:
                await wait(10)
        expected_type = 1 if bare else 3
        count = 0
        for phase_seconds, counting in ((warmup, False), (seconds, True)):
            started, cpu_started = time.perf_counter(), cpu_seconds(pid)
            deadline = started + phase_seconds
            while time.perf_counter() < deadline:
                invocation_id = str(count)
                sent = posts.request(
                    "POST", send_target, codec.invocation("Echo", ["hello"], invocation_id)
                )
                while True:
                    while not replies:
                        await wait(5)
                    reply = replies.pop(0)
                    if reply.type == 6:  # a keep-alive ping
                        continue
                    if (
                        reply.type != expected_type
                        or reply.invocation_id != invocation_id
                        or reply.value != "hello"
                    ):
                        raise RuntimeError(f"unexpected reply {reply}")
                    break
                status, _ = await sent
                if status != 200:
                    raise RuntimeError(f"POST answered {status}")
                if posts.will_close:  # hypercorn: after keep_alive_max_requests (1,000)
                    posts.close()
                    posts = await http_connect("127.0.0.1", port)
                count += 1
            if not counting:
                count = 0
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_started
    finally:
        posts.close()
        events.close()
    return RoundTrips(count / elapsed, count, elapsed, 1e6 * cpu / max(count, 1))


@dataclass
class FanOut:
    connections: int
    rounds: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    connect_seconds: float
    missing: int
    notes: list[str] = field(default_factory=list)


async def fan_out(port: int, *, bare: bool, connections: int, rounds: int) -> FanOut:
    codec = JsonCodec()
    sockets: list[WebSocketClient] = []
    latencies: list[float] = []
    state: dict[str, Any] = {"token": b"", "t0": 0.0, "count": 0, "done": None, "wrong": 0}

    def on_message(opcode: int, payload: bytes) -> None:
        if state["token"] and state["token"] in payload:
            latencies.append(time.perf_counter() - state["t0"])
            if opcode != OP_TEXT:
                state["wrong"] += 1
            state["count"] += 1
            if state["count"] == connections:
                state["done"].set()

    started = time.perf_counter()
    try:
        batch = 100
        for first in range(0, connections, batch):
            opened = await asyncio.gather(
                *(open_hub(port, codec, bare=bare) for _ in range(min(batch, connections - first)))
            )
            for ws, _inbox in opened:
                ws.on_message = on_message
                sockets.append(ws)
        connect_seconds = time.perf_counter() - started
        sender, _ = await open_hub(port, codec, bare=bare)
        sender.on_message = lambda _op, _payload: None  # the sender's own copies are not counted
        sockets.append(sender)
        await asyncio.sleep(0.5)
        missing = 0
        for r in range(rounds):
            token = f"round-{r:04d}-payload"
            state.update(token=token.encode(), count=0, done=asyncio.Event())
            if bare:
                frame = b"B" + codec.invocation("Receive", [token], None)
            else:
                frame = codec.invocation("Broadcast", [token], None)
            state["t0"] = time.perf_counter()
            sender.send(OP_TEXT, frame)
            try:
                async with asyncio.timeout(5):
                    await state["done"].wait()
            except TimeoutError:
                missing += connections - state["count"]
            state["token"] = b""
            await asyncio.sleep(0.05)
    finally:
        for ws in sockets:
            ws.close()
    if not latencies:
        raise RuntimeError("no broadcast message arrived")
    ordered = sorted(latencies)
    notes = []
    if state["wrong"]:
        notes.append(f"{state['wrong']} JSON messages arrived in binary frames")
    if missing:
        notes.append(f"{missing} of {connections * rounds} messages never arrived (5 s per round)")
    return FanOut(
        connections=connections,
        rounds=rounds,
        p50_ms=1000 * statistics.median(ordered),
        p99_ms=1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        max_ms=1000 * ordered[-1],
        connect_seconds=connect_seconds,
        missing=missing,
        notes=notes,
    )


# -------------------------------------------------------------------------------------- run ---
Outcome = RoundTrips | FanOut | str  # str = "fails: ..."


def app_of(target: str) -> str:
    """``signalr_core@uvicorn`` -> ``signalr_core``."""
    return target.partition("@")[0]


def asgi_of(target: str) -> str:
    """``signalr_core@uvicorn`` -> ``uvicorn`` (no ``@``: hypercorn)."""
    return target.partition("@")[2] or "hypercorn"


async def bench_server(
    target: str, port: int, pid: int, args: argparse.Namespace
) -> dict[str, Outcome]:
    bare = app_of(target) == "echo"
    results: dict[str, Outcome] = {}
    for protocol in ("json", "messagepack", "sse"):
        if f"rtt_{protocol}" not in args.cases:
            continue
        try:
            async with asyncio.timeout(args.seconds + args.warmup + 30):
                if protocol == "sse":
                    results["rtt_sse"] = await sse_round_trips(
                        port, pid, bare=bare, seconds=args.seconds, warmup=args.warmup
                    )
                else:
                    results[f"rtt_{protocol}"] = await round_trips(
                        port, pid, protocol, bare=bare, seconds=args.seconds, warmup=args.warmup
                    )
        except Exception as exc:
            results[f"rtt_{protocol}"] = f"fails: {type(exc).__name__}: {exc}"
    if "fanout" not in args.cases:
        return results
    try:
        async with asyncio.timeout(120):
            results["fanout"] = await fan_out(
                port, bare=bare, connections=args.connections, rounds=args.rounds
            )
    except Exception as exc:
        results["fanout"] = f"fails: {type(exc).__name__}: {exc}"
    await asyncio.sleep(1.0)  # let the server tear the 1,000 connections down
    return results


def _fmt_rtt(o: Outcome | None) -> str:
    return f"{o.per_second:,.0f}/s" if isinstance(o, RoundTrips) else str(o)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


# The goals: (case, what is compared, the bound). Round trips: hub / bare >= bound;
# fan-out p99: hub / bare <= bound, with nothing lost.
GOALS = (
    ("rtt_json", "JSON round trips over WebSockets >= 0.8x the bare echo", 0.8),
    ("rtt_sse", "JSON round trips over SSE (POST + event) >= 0.8x the bare POST/SSE echo", 0.8),
    ("fanout", "fan-out to 1,000 connections: p99 <= 1.2x the bare relay's p99, none lost", 1.2),
)


def report(
    results: dict[str, dict[str, Outcome]], runs: dict[str, list[dict[str, Outcome]]]
) -> str:
    def rtt(target: str, case: str) -> float | None:
        o = results.get(target, {}).get(case)
        return o.per_second if isinstance(o, RoundTrips) else None

    def fan(target: str) -> FanOut | None:
        o = results.get(target, {}).get("fanout")
        return o if isinstance(o, FanOut) else None

    lines = [
        "| app | ASGI server | JSON rt/s | ratio | MessagePack rt/s | ratio | SSE rt/s | ratio "
        "| fan-out p50 | fan-out p99 | p99 ratio | lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for target in results:
        bare = f"echo@{asgi_of(target)}"
        fo, fo_bare = fan(target), fan(bare)
        fo_cells = (
            [f"{fo.p50_ms:.1f} ms", f"{fo.p99_ms:.1f} ms"]
            if fo
            else [str(results[target].get("fanout")), ""]
        )
        p99_ratio = _ratio(fo.p99_ms, fo_bare.p99_ms) if fo and fo_bare else "n/a"
        cells = [app_of(target), asgi_of(target)]
        for case in ("rtt_json", "rtt_messagepack", "rtt_sse"):
            cells += [
                _fmt_rtt(results[target].get(case)),
                _ratio(rtt(target, case), rtt(bare, case)),
            ]
        cells += [*fo_cells, p99_ratio, str(fo.missing) if fo else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Ratios are against the bare app (echo) on the same ASGI server in the same run: round "
        "trips x / echo (higher is better), fan-out p99 x / echo (lower is better)."
    )
    lines.append("")
    lines.append("Server CPU per round trip (µs; lower is better):")
    lines.append("")
    for target in results:
        cpu = [
            f"{case[4:]} {o.server_cpu_us:.0f}"
            for case in ("rtt_json", "rtt_messagepack", "rtt_sse")
            if isinstance(o := results[target].get(case), RoundTrips)
        ]
        if cpu:
            lines.append(f"- {target}: {', '.join(cpu)}")
    for target in results:
        for case, o in results[target].items():
            for note in getattr(o, "notes", []):
                lines.append(f"- {target} {case}: {note}")
    lines.append("")
    lines.append(
        "Goals: the median over repeats of the hub / bare ratio within one repeat (the two "
        "measured seconds apart), and the ratio of the medians above."
    )
    lines.append("")
    for target in results:
        if app_of(target) == "echo":
            continue
        bare = f"echo@{asgi_of(target)}"
        for case, text, bound in GOALS:
            if case not in results[target]:
                continue  # not run (--cases)
            paired = [
                ratio
                for hub, base in zip(runs.get(target, []), runs.get(bare, []), strict=False)
                if (ratio := _case_ratio(case, hub.get(case), base.get(case))) is not None
            ]
            lost = sum(
                o.missing for r in runs.get(target, []) if isinstance(o := r.get(case), FanOut)
            )
            value = statistics.median(paired) if paired else None
            if case == "fanout":
                fo, fo_bare = fan(target), fan(bare)
                overall = fo.p99_ms / fo_bare.p99_ms if fo and fo_bare else None
                ok = value is not None and value <= bound and not lost
            else:
                hub_rt, base_rt = rtt(target, case), rtt(bare, case)
                overall = hub_rt / base_rt if hub_rt and base_rt else None
                ok = value is not None and value >= bound
            shown = f"{value:.2f}x" if value is not None else "n/a"
            repeats = ", ".join(f"{r:.2f}x" for r in paired)
            medians = f"{overall:.2f}x" if overall is not None else "n/a"
            lost_text = f"; {lost} lost" if case == "fanout" else ""
            lines.append(
                f"- goal, {target}: {text}: {shown} (repeats {repeats}; medians {medians}"
                f"{lost_text}) {'PASS' if ok else 'FAIL'}"
            )
    return "\n".join(lines)


def _case_ratio(case: str, hub: Outcome | None, base: Outcome | None) -> float | None:
    """hub / bare for one case of one repeat: round trips per second, or fan-out p99."""
    if isinstance(hub, RoundTrips) and isinstance(base, RoundTrips) and base.per_second:
        return hub.per_second / base.per_second
    if isinstance(hub, FanOut) and isinstance(base, FanOut) and base.p99_ms:
        return hub.p99_ms / base.p99_ms
    return None


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def median_outcome(outcomes: list[Outcome]) -> Outcome:
    """The median repeat of one case (the whole record, so its fields stay consistent)."""
    good = [o for o in outcomes if not isinstance(o, str)]
    failures = [o for o in outcomes if isinstance(o, str)]
    if not good:
        return failures[0]

    def key(o: RoundTrips | FanOut) -> float:
        return o.per_second if isinstance(o, RoundTrips) else o.p99_ms

    chosen = sorted(good, key=key)[(len(good) - 1) // 2]
    if failures:
        chosen.notes.append(f"{len(failures)} of {len(outcomes)} repeats failed: {failures[0]}")
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="round-trip measuring time")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10, help="broadcasts per fan-out case")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="APP@ASGI,... (see above)")
    parser.add_argument(
        "--cases",
        type=lambda text: text.split(","),
        default=list(CASES),
        help=f"some of {','.join(CASES)} (e.g. one case under BENCH_PROFILE)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "signalr.json")
    args = parser.parse_args(argv)

    print(f"# SignalR benchmark\n\nMachine: {machine()}\n", flush=True)
    load_before = os.getloadavg()
    started = time.monotonic()
    runs: dict[str, list[dict[str, Outcome]]] = {}
    with contextlib.ExitStack() as stack:
        # All servers start first and stay up (idle) while the others are measured; repeats are
        # interleaved so that background load on a shared machine hits every server alike.
        servers: dict[str, tuple[int, int]] = {}
        for kind in args.servers.split(","):
            runs[kind] = []
            try:
                env = {}
                if app_of(kind) == "signalr_core_redis":
                    env["BENCH_REDIS_URL"] = stack.enter_context(redis_server()).url
                servers[kind] = stack.enter_context(server_process(kind, env))
            except Exception as exc:
                failed = f"fails: {type(exc).__name__}: {exc}"
                runs[kind].append(dict.fromkeys(args.cases, failed))
        for repeat in range(args.repeats):
            for kind, (port, pid) in servers.items():
                print(f"repeat {repeat + 1}/{args.repeats}: {kind} ...", flush=True)
                runs[kind].append(asyncio.run(bench_server(kind, port, pid, args)))
    results = {
        kind: {case: median_outcome([r[case] for r in rs]) for case in rs[0]}
        for kind, rs in runs.items()
    }
    load = f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    text = (
        f"{report(results, runs)}\n\nMedian of {args.repeats} interleaved repeats; "
        f"{load}; {time.monotonic() - started:.0f} s in all."
    )
    print(text, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "results": {
                    k: {c: asdict(o) if not isinstance(o, str) else o for c, o in v.items()}
                    for k, v in results.items()
                },
                "all_runs": {
                    k: [
                        {c: asdict(o) if not isinstance(o, str) else o for c, o in r.items()}
                        for r in rs
                    ]
                    for k, rs in runs.items()
                },
                "report": text,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
