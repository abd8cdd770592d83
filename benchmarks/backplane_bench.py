"""Backplane: what a broadcast costs over Redis, and what a Redis restart loses.

``python -m benchmarks.backplane_bench [--connections 30,3000] [--broadcasts 1000]
[--repeats 3] [--baseline PATH]`` (also run by ``make bench``):

1. **Cost.** The same broadcasts (``send_all("Tick", [i, <64 chars>])``, a window of 8 in
   flight) reach the same number of connections in three set-ups: one server with the in-process
   manager; one server over Redis; three servers over Redis (the connections split evenly, one
   server sends). Each server is its own process; a connection is a stand-in handle that encodes
   the message with the JSON hub protocol once per broadcast (as the server layer's encode cache
   does) and counts it, so what differs between set-ups is the backplane alone, not sockets.
   Reported: CPU seconds of all server processes (``time.process_time`` in each) and of
   redis-server (``INFO cpu``) from the first send until every connection has every message,
   per broadcast and per delivered message, and broadcasts per second (wall); the median of
   ``--repeats`` interleaved repeats. With hiredis installed, the Redis set-ups run twice: with
   redis-py's pure-Python reply parser and with hiredis.
2. **Loss across a restart.** Three managers in this process, two connections each, two senders
   per server streaming ``send_all``; redis-server is shut down and started again mid-stream.
   Reported: messages accepted (the send returned), refused (it raised), and accepted but never
   delivered, or delivered twice, per connection. ``--baseline PATH`` runs the same scenario also
   against the ``signalr_core`` found in ``PATH`` (e.g. an older checkout) in a subprocess.

Results are printed as Markdown and written to ``var/bench/backplane.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from tests.services import free_port, redis_server

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = "x" * 64


# ------------------------------------------------------------------------------ worker side ---
class _Sink:
    """Counts deliveries to this process's connections; encodes each broadcast once."""

    def __init__(self, target: int) -> None:
        from signalr_core.protocols.json import JsonHubProtocol

        self.protocol = JsonHubProtocol()
        self.count = 0
        self.target = target
        self.done = anyio.Event()
        self._last: object = None

    def write(self, message: Any) -> None:
        if message is not self._last:
            self._last = message
            self.protocol.encode_message(message)
        self.count += 1
        if self.count >= self.target:
            self.done.set()


@dataclass
class _Handle:
    connection_id: str
    sink: _Sink
    user_id: str | None = None

    def write(self, message: Any) -> None:
        self.sink.write(message)


async def _worker(args: argparse.Namespace) -> None:
    from signalr_core.lifetime import DefaultHubLifetimeManager, HubLifetimeManager

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    manager: HubLifetimeManager
    if args.mode == "local":
        manager = DefaultHubLifetimeManager()
    else:
        from signalr_core.redis import RedisHubLifetimeManager

        manager = RedisHubLifetimeManager(args.redis, hub_name=args.hub, channel_prefix="bench")
    sink = _Sink(args.connections * args.broadcasts)
    async with manager.lifespan():
        for k in range(args.connections):
            await manager.on_connected(_Handle(f"{args.index}-{k}", sink))
        if args.mode == "redis":
            with anyio.fail_after(30):
                while getattr(manager, "peers", args.servers - 1) < args.servers - 1:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        cpu, started = time.process_time(), time.perf_counter()
        if args.index == 0:
            window = 8

            async def send(first: int) -> None:
                for i in range(first, args.broadcasts, window):
                    await manager.send_all("Tick", [i, PAYLOAD])

            async with anyio.create_task_group() as tg:
                for first in range(window):
                    tg.start_soon(send, first)
        with anyio.fail_after(120):
            await sink.done.wait()
        result = {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - started}
        print(json.dumps(result), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # stay subscribed until all are done


# ------------------------------------------------------------------------------ driver side ---
@dataclass
class CostResult:
    setup: str
    connections: int
    broadcasts: int
    server_cpu: float
    redis_cpu: float
    wall: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delivered(self) -> int:
        return self.connections * self.broadcasts

    def row(self) -> str:
        per_broadcast = (self.server_cpu + self.redis_cpu) / self.broadcasts * 1e6
        per_delivery = (self.server_cpu + self.redis_cpu) / self.delivered * 1e6
        return (
            f"| {self.setup} | {self.connections:,} | "
            f"{self.server_cpu / self.broadcasts * 1e6:,.0f} µs | "
            f"{self.redis_cpu / self.broadcasts * 1e6:,.0f} µs | {per_broadcast:,.0f} µs | "
            f"{per_delivery:,.2f} µs | {self.broadcasts / self.wall:,.0f}/s |"
        )


def _redis_cpu(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def cost_case(
    mode: str, servers: int, connections: int, broadcasts: int, redis_url: str, hiredis: bool
) -> CostResult:
    hub = f"bench-{uuid.uuid4().hex[:8]}"
    per_server = connections // servers
    procs: list[subprocess.Popen[str]] = []
    try:
        for index in range(servers):
            cmd = [
                sys.executable, "-m", "benchmarks.backplane_bench", "--worker", mode,
                "--index", str(index), "--servers", str(servers),
                "--connections", str(per_server), "--broadcasts", str(broadcasts),
                "--redis", redis_url, "--hub", hub,
                *(() if hiredis else ("--no-hiredis",)),
            ]  # fmt: skip
            procs.append(
                subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
                    cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"worker did not start: {line!r}")
        redis_before = _redis_cpu(redis_url) if mode == "redis" else 0.0
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            assert proc.stdout is not None
            results.append(json.loads(proc.stdout.readline()))
        redis_after = _redis_cpu(redis_url) if mode == "redis" else 0.0
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        for proc in procs:
            proc.wait(30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    setup = "1 server, in-process" if mode == "local" else f"{servers} server(s), Redis"
    if mode == "redis" and hiredis:
        setup += " + hiredis"
    return CostResult(
        setup=setup,
        connections=per_server * servers,
        broadcasts=broadcasts,
        server_cpu=sum(r["cpu"] for r in results),
        redis_cpu=redis_after - redis_before,
        wall=max(r["wall"] for r in results),
    )


# ------------------------------------------------------------------- loss across a restart ---
async def restart_case() -> dict[str, Any]:
    """Three managers, two connections each, two senders each; Redis restarted mid-stream."""
    import socket

    from signalr_core.redis import RedisBackplaneError, RedisHubLifetimeManager

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    @dataclass
    class Conn:
        connection_id: str
        user_id: str | None = None
        got: list[tuple[str, int]] = field(default_factory=list)

        def write(self, message: Any) -> None:
            if message.target == "M":
                self.got.append((message.arguments[0], message.arguments[1]))

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    hub = f"loss-{uuid.uuid4().hex[:8]}"
    managers = [RedisHubLifetimeManager(url, hub_name=hub) for _ in range(3)]
    conns = {m: [Conn(f"s{s}c{c}") for c in range(2)] for s, m in enumerate(managers)}
    keys = {f"s{s}k{k}": m for s, m in enumerate(managers) for k in range(2)}
    accepted: dict[str, list[int]] = {k: [] for k in keys}
    refused = 0
    stop = anyio.Event()

    def up(manager: RedisHubLifetimeManager) -> bool:
        return bool(getattr(manager, "ready", manager.connected))

    async def sender(key: str) -> None:
        nonlocal refused
        manager, i = keys[key], 0
        while not stop.is_set():
            i += 1
            try:
                await manager.send_all("M", [key, i])
            except RedisBackplaneError:
                refused += 1
            else:
                accepted[key].append(i)
            await anyio.lowlevel.checkpoint()

    def kill() -> None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as s:
            s.sendall(b"SHUTDOWN NOSAVE\r\n")
            s.recv(16)

    async def until(condition: Any, seconds: float = 30) -> None:
        with anyio.fail_after(seconds):
            while not condition():  # noqa: ASYNC110
                await anyio.sleep(0.01)

    with contextlib.ExitStack() as servers:
        servers.enter_context(redis_server(port))
        async with contextlib.AsyncExitStack() as stack:
            for manager in managers:
                await stack.enter_async_context(manager.lifespan())
            for manager, local in conns.items():
                for conn in local:
                    await manager.on_connected(conn)
            await until(lambda: all(up(m) for m in managers))
            await anyio.sleep(0.5)  # let the servers learn each other (the new code announces)
            async with anyio.create_task_group() as tg:
                for key in keys:
                    tg.start_soon(sender, key)
                await until(lambda: all(len(a) >= 200 for a in accepted.values()))
                await anyio.to_thread.run_sync(kill)
                await until(lambda: not any(m.connected for m in managers))
                await anyio.to_thread.run_sync(servers.enter_context, redis_server(port))
                await until(lambda: all(up(m) for m in managers))
                back = {k: len(v) for k, v in accepted.items()}
                await until(lambda: all(len(accepted[k]) >= back[k] + 200 for k in keys))
                stop.set()
            await anyio.sleep(1.0)  # in-flight deliveries land
    lost = duplicated = 0
    for local in conns.values():
        for conn in local:
            for key in keys:
                got = [i for k, i in conn.got if k == key]
                duplicated += len(got) - len(set(got))
                lost += len(set(accepted[key]) - set(got))
    total = sum(map(len, accepted.values()))
    return {
        "accepted": total,
        "refused": refused,
        "lost": lost,
        "duplicated": duplicated,
        "connections": 6,
    }


def _restart_in_subprocess(baseline: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if baseline is not None:
        env["BENCH_SIGNALR_CORE_PATH"] = str(baseline)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.backplane_bench", "--restart-only"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------------ main ---
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", default="30,3000", help="total connections per case")
    parser.add_argument("--broadcasts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    parser.add_argument("--baseline", type=Path, help="also run the restart case with this tree")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "backplane.json")
    parser.add_argument("--worker", choices=("local", "redis"), help=argparse.SUPPRESS)
    parser.add_argument("--restart-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--servers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--redis", default="", help=argparse.SUPPRESS)
    parser.add_argument("--hub", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--no-hiredis", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.no_hiredis:
        sys.modules["hiredis"] = None  # type: ignore[assignment]  # redis-py's pure-Python parser
    baseline_path = os.environ.get("BENCH_SIGNALR_CORE_PATH")
    if baseline_path:
        sys.path.insert(0, baseline_path)  # A/B: import signalr_core from another checkout
    if args.worker:
        args.mode = args.worker
        args.connections = int(args.connections)
        anyio.run(_worker, args)
        return
    if args.restart_only:
        print(json.dumps(anyio.run(restart_case)), flush=True)
        return

    print("# Backplane benchmark\n", flush=True)
    load_before = os.getloadavg()
    costs: list[CostResult] = []
    # redis-py parses replies in Python unless hiredis is installed: measure both when it is.
    parsers = (False, True) if importlib.util.find_spec("hiredis") is not None else (False,)
    setups = [("local", 1, False)]
    setups += [(mode, n, h) for h in parsers for mode, n in (("redis", 1), ("redis", 3))]
    runs: dict[tuple[int, str, int, bool], list[CostResult]] = {}
    with redis_server() as redis:
        # Repeats interleaved, so background load on a shared machine hits every set-up alike.
        for _ in range(args.repeats):
            for connections in (int(c) for c in args.connections.split(",")):
                for mode, servers, hiredis in setups:
                    result = cost_case(
                        mode, servers, connections, args.broadcasts, redis.url, hiredis
                    )
                    runs.setdefault((connections, mode, servers, hiredis), []).append(result)
    for repeats in runs.values():
        repeats.sort(key=lambda r: r.server_cpu + r.redis_cpu)
        costs.append(repeats[len(repeats) // 2])  # the median repeat by total CPU
    print(
        "| set-up | connections | servers' CPU per broadcast | redis-server's | total | "
        "per delivered message | broadcasts/s |\n|---|---|---|---|---|---|---|"
    )
    for result in costs:
        print(result.row())
    restarts = {"this tree": _restart_in_subprocess(None)}
    if args.baseline is not None:
        restarts[str(args.baseline)] = _restart_in_subprocess(args.baseline)
    print(
        "\n| signalr_core | accepted | refused | accepted, not delivered (x 6 connections) | "
        "delivered twice |\n|---|---|---|---|---|"
    )
    for name, r in restarts.items():
        if "error" in r:
            print(f"| {name} | fails: {r['error']} | | | |")
        else:
            print(
                f"| {name} | {r['accepted']:,} | {r['refused']:,} | {r['lost']:,} | "
                f"{r['duplicated']:,} |"
            )
    print(f"\nload average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"costs": [vars(c) for c in costs], "restarts": restarts, "load": load_before},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
