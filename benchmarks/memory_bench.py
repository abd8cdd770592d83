"""Memory per idle WebSocket connection, and 10,000 connections in one process.

Same machine, same server (hypercorn, asyncio loop), same load client as ``signalr_bench``:

(a) **idle connections**: the bare ASGI WebSocket app and ``signalr_core`` (as the root ASGI
    app, like the bare one; and mounted in Starlette, as usual) each get N WebSocket
    connections that exchange one message (the SignalR handshake; the bare app echoes it)
    and then stay idle: the server's RSS growth per connection, and its CPU per second while
    idle (the hub pings every 15 s, so the idle time should exceed that). The hub's own share
    is the root app's figure minus the bare app's, from the same run; the mounted one shows
    what Starlette's routing adds. Next to it, where the bytes go: the in-process tracemalloc
    breakdown of ``tests/signalr_core/_idle.py``.
(b) ``--scale``: N (10,000) connections to ``signalr_core`` in one process: RSS, idle CPU per
    second, then broadcasts to all of them (``Broadcast`` -> ``Receive`` on every
    connection): delivery latency p50/p99 from sending the frame, and how many never arrived.

The open-files limit of this process (and so of the servers it starts) is raised to its hard
limit when that is needed and allowed; the report says what it was. The machine may be shared:
the load average before and after is printed with the numbers.

``--quick`` runs (a) with 1,000 connections and 3 s of idle time (``make bench-memory``);
``make bench`` runs the defaults (5,000 connections, 20 s idle), which ``docs/BENCHMARKS.md``
reports, and ``--scale`` is run by hand (it takes a few minutes).
Results are printed as Markdown and written to ``var/bench/memory.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._wsclient import OP_TEXT, WebSocketClient, connect
from benchmarks.signalr_bench import (
    ROOT,
    JsonCodec,
    machine,
    open_hub,
    server_process,
)
from tests.procstat import cpu_seconds, rss_bytes

HUB_SHARE_GOAL_KB = 10.0


def raise_open_files(needed: int) -> str:
    """Raise this process's RLIMIT_NOFILE toward ``needed`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return f"open-files limit {soft} (enough)"
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        return f"open-files limit {soft}, could not raise it ({exc})"
    if target < needed:
        return f"open-files limit raised {soft} -> {target} (the hard limit; {needed} wanted)"
    return f"open-files limit raised {soft} -> {target}"


HANDSHAKE = b'{"protocol":"json","version":1}\x1e'


async def open_idle(port: int) -> WebSocketClient:
    """Connect and exchange one message: the SignalR handshake with a hub, its echo with the
    bare app (so that both servers' per-socket buffers have seen one message each way)."""
    ws = await connect("127.0.0.1", port, "/hub")
    answered = asyncio.get_running_loop().create_future()

    def on_message(_opcode: int, _payload: bytes) -> None:
        if not answered.done():
            answered.set_result(None)

    ws.on_message = on_message
    ws.send(OP_TEXT, HANDSHAKE)
    async with asyncio.timeout(10):
        await answered
    return ws


async def open_many(port: int, count: int) -> list[WebSocketClient]:
    sockets: list[WebSocketClient] = []
    try:
        for first in range(0, count, 100):
            opened = await asyncio.gather(
                *(open_idle(port) for _ in range(min(100, count - first)))
            )
            sockets.extend(opened)
    except BaseException:
        for ws in sockets:
            ws.close()
        raise
    return sockets


async def close_all(sockets: list[WebSocketClient]) -> None:
    for ws in sockets:
        ws.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            await asyncio.gather(*(ws.closed for ws in sockets))


@dataclass
class Idle:
    connections: int
    idle_seconds: float
    rss_before_mb: float
    rss_after_mb: float
    kb_per_connection: float
    idle_cpu_percent: float  # server CPU while idle, percent of one core
    connect_seconds: float


async def idle_case(port: int, pid: int, *, count: int, idle: float) -> Idle:
    # Warm up (first connections import and allocate what every later one reuses).
    await close_all(await open_many(port, min(200, count)))
    await asyncio.sleep(1.0)
    before = rss_bytes(pid)
    started = time.perf_counter()
    sockets = await open_many(port, count)
    connect_seconds = time.perf_counter() - started
    try:
        await asyncio.sleep(1.0)  # let the server finish what the last handshakes started
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(idle)
        cpu = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - t0)
        after = rss_bytes(pid)
    finally:
        await close_all(sockets)
    return Idle(
        connections=count,
        idle_seconds=idle,
        rss_before_mb=before / 2**20,
        rss_after_mb=after / 2**20,
        kb_per_connection=(after - before) / count / 1024,
        idle_cpu_percent=100 * cpu,
        connect_seconds=connect_seconds,
    )


@dataclass
class Scale:
    connections: int
    rss_mb: float
    kb_per_connection: float
    idle_cpu_percent: float
    idle_seconds: float
    connect_seconds: float
    rounds: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    delivered: int
    lost: int
    notes: list[str] = field(default_factory=list)


async def scale_case(port: int, pid: int, *, count: int, idle: float, rounds: int) -> Scale:
    before = rss_bytes(pid)
    latencies: list[float] = []
    state: dict[str, Any] = {"token": b"", "t0": 0.0, "count": 0, "done": None}

    def on_message(_opcode: int, payload: bytes) -> None:
        if state["token"] and state["token"] in payload:
            latencies.append(time.perf_counter() - state["t0"])
            state["count"] += 1
            if state["count"] == count:
                state["done"].set()

    started = time.perf_counter()
    sockets = await open_many(port, count)
    connect_seconds = time.perf_counter() - started
    codec = JsonCodec()
    lost = 0
    try:
        for ws in sockets:
            ws.on_message = on_message
        sender, _ = await open_hub(port, codec, bare=False)
        sockets.append(sender)
        sender.on_message = lambda _op, _payload: None
        await asyncio.sleep(1.0)
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(idle)
        cpu = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - t0)
        rss = rss_bytes(pid)
        for r in range(rounds):
            token = f"scale-{r:03d}-payload"
            state.update(token=token.encode(), count=0, done=asyncio.Event())
            state["t0"] = time.perf_counter()
            sender.send(OP_TEXT, codec.invocation("Broadcast", [token], None))
            try:
                async with asyncio.timeout(30):
                    await state["done"].wait()
            except TimeoutError:
                lost += count - state["count"]
            state["token"] = b""
            await asyncio.sleep(0.5)
    finally:
        await close_all(sockets)
    ordered = sorted(latencies)
    if not ordered:
        raise RuntimeError("no broadcast message arrived")
    return Scale(
        connections=count,
        rss_mb=rss / 2**20,
        kb_per_connection=(rss - before) / count / 1024,
        idle_cpu_percent=100 * cpu,
        idle_seconds=idle,
        connect_seconds=connect_seconds,
        rounds=rounds,
        p50_ms=1000 * statistics.median(ordered),
        p99_ms=1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        max_ms=1000 * ordered[-1],
        delivered=len(ordered),
        lost=lost,
    )


async def breakdown(top: int) -> tuple[float, float, list[tuple[str, float]]]:
    """In process: hub bytes per idle connection minus the bare app's, and the top lines."""
    import structlog

    from signalr_core import Hub, HubEndpoint, hub_method
    from tests.signalr_core._idle import bare_app, measure_idle

    class BenchHub(Hub):
        @hub_method("Echo")
        def echo(self, message: str) -> str:
            return message

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bare = await measure_idle(bare_app(), 500, handshake=False)
    endpoint = HubEndpoint(BenchHub)
    async with endpoint.lifespan():
        await measure_idle(endpoint, 20, handshake=True)
        hub = await measure_idle(endpoint, 500, handshake=True, top=top)
    root = str(ROOT) + os.sep
    lines = [(where.replace(root, ""), size) for where, size in hub.top]
    return hub.bytes_per_connection, bare.bytes_per_connection, lines


def report_idle(results: dict[str, Idle | str], inproc: tuple[float, float, list[Any]]) -> str:
    lines = [
        "| server | connections | RSS growth per idle connection | idle CPU (% of a core) "
        "| connect time |",
        "|---|---|---|---|---|",
    ]
    for kind, o in results.items():
        if isinstance(o, Idle):
            lines.append(
                f"| {kind} | {o.connections:,} | {o.kb_per_connection:.1f} KB "
                f"| {o.idle_cpu_percent:.2f} % over {o.idle_seconds:.0f} s "
                f"| {o.connect_seconds:.1f} s |"
            )
        else:
            lines.append(f"| {kind} | {o} | | | |")
    root, mounted, bare = (
        results.get("signalr_core_root"),
        results.get("signalr_core"),
        results.get("echo"),
    )
    lines.append("")
    if isinstance(root, Idle) and isinstance(bare, Idle):
        share = root.kb_per_connection - bare.kb_per_connection
        verdict = "PASS" if share <= HUB_SHARE_GOAL_KB else "FAIL"
        lines += [
            f"- hub's own share (signalr_core_root - bare, RSS): {share:.1f} KB per idle "
            "connection",
            f"- goal hub share <= {HUB_SHARE_GOAL_KB:.0f} KB per idle connection: {verdict}",
        ]
    if isinstance(mounted, Idle) and isinstance(root, Idle):
        lines.append(
            "- Starlette routing around it (signalr_core - signalr_core_root): "
            f"{mounted.kb_per_connection - root.kb_per_connection:.1f} KB per connection"
        )
    hub_b, bare_b, top = inproc
    lines += [
        f"- in process (tracemalloc, no sockets): hub {hub_b / 1024:.1f} KB, bare app "
        f"{bare_b / 1024:.1f} KB, hub share {(hub_b - bare_b) / 1024:.1f} KB per idle "
        "connection; largest sources:",
    ]
    lines += [f"  - {size:.0f} B `{where}`" for where, size in top]
    return "\n".join(lines)


def report_scale(o: Scale | str) -> str:
    if isinstance(o, str):
        return f"10k: {o}"
    return "\n".join(
        [
            "| connections | server RSS | per connection | idle CPU (% of a core) "
            "| broadcast p50 | p99 | max | delivered | lost |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {o.connections:,} | {o.rss_mb:.0f} MB | {o.kb_per_connection:.1f} KB "
            f"| {o.idle_cpu_percent:.2f} % over {o.idle_seconds:.0f} s "
            f"| {o.p50_ms:.0f} ms | {o.p99_ms:.0f} ms | {o.max_ms:.0f} ms "
            f"| {o.delivered:,} of {o.connections * o.rounds:,} | {o.lost} |",
            "",
            f"{o.rounds} broadcasts to all; connecting took {o.connect_seconds:.0f} s.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000 connections, 3 s idle")
    parser.add_argument("--connections", type=int, default=None)
    parser.add_argument("--idle", type=float, default=None, help="idle seconds")
    parser.add_argument("--scale", action="store_true", help="also 10,000 connections")
    parser.add_argument("--scale-connections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="broadcasts in the scale case")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "memory.json")
    args = parser.parse_args(argv)
    count = args.connections or (1000 if args.quick else 5000)
    idle = args.idle if args.idle is not None else (3.0 if args.quick else 20.0)
    needed = max(count, args.scale_connections if args.scale else 0) + 200
    limits = raise_open_files(needed)

    print(f"# Memory benchmark\n\nMachine: {machine()}; {limits}\n", flush=True)
    load_before = os.getloadavg()
    started = time.monotonic()
    results: dict[str, Idle | str] = {}
    for kind in ("echo", "signalr_core_root", "signalr_core"):
        print(f"{kind}: {count:,} idle connections ...", flush=True)
        try:
            with server_process(kind) as (port, pid):
                results[kind] = asyncio.run(idle_case(port, pid, count=count, idle=idle))
        except Exception as exc:
            results[kind] = f"fails: {type(exc).__name__}: {exc}"
    inproc = asyncio.run(breakdown(top=12))
    text = report_idle(results, inproc)
    scale: Scale | str | None = None
    if args.scale:
        print(f"signalr_core: {args.scale_connections:,} connections ...", flush=True)
        try:
            with server_process("signalr_core") as (port, pid):
                scale = asyncio.run(
                    scale_case(
                        port, pid, count=args.scale_connections, idle=idle, rounds=args.rounds
                    )
                )
        except Exception as exc:
            scale = f"fails: {type(exc).__name__}: {exc}"
        text += "\n\n" + report_scale(scale)
    load = f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    text += f"\n\n{limits}; {load}; {time.monotonic() - started:.0f} s in all."
    print(text, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "idle": {k: asdict(v) if isinstance(v, Idle) else v for k, v in results.items()},
                "in_process": {"hub_bytes": inproc[0], "bare_bytes": inproc[1], "top": inproc[2]},
                "scale": asdict(scale) if isinstance(scale, Scale) else scale,
                "report": text,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
