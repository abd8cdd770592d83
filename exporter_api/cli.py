"""`exporter-api serve | check-config | hash-password | generate-key | audit`."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from exporter_api.config import Settings, default_config_path, load_config
from exporter_api.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    import signal

    from hypercorn.config import Config as HypercornConfig
    from starlette.applications import Starlette

_E = TypeVar("_E", bound=BaseException)

_GRACEFUL_TIMEOUT_S = 5  # hypercorn's wait for open requests once the drain is done
_EXIT_AFTER_S = 5.0  # then for connections that cannot be flushed (a client that stopped reading)
# After the drain and hypercorn's stop, a worker still has its lifespan to close (hub
# connections, pools): the supervisor kills a worker only past all of that.
_STOP_MARGIN_S = 15.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exporter-api", description="The export service.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (hypercorn)")
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML configuration (default: examples/demo/exporter.toml)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=Path("var"),
        help="state, demo database, key files and exported files (default ./var)",
    )
    serve.add_argument(
        "--state-url",
        default=None,
        help="PostgreSQL state store URL (default: SQLite in the data dir); "
        "also EXPORTER_STATE_URL",
    )
    serve.add_argument(
        "--redis-url",
        default=None,
        help="Redis for the hub backplane (overrides [server] redis_url; may hold a password); "
        "also EXPORTER_REDIS_URL",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving the port (needs the PostgreSQL state store and Redis)",
    )
    # A worker started by `--workers`: the inherited listening socket and the worker's number.
    serve.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--supervisor-pid", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument(
        "--insecure-cookies",
        action="store_true",
        default=None,
        help="refresh cookie without Secure (plain HTTP beyond loopback; dev only)",
    )
    serve.add_argument("--log-level", default="info")

    check = sub.add_parser("check-config", help="validate a configuration and its SQL files")
    check.add_argument("path", type=Path)

    audit = sub.add_parser(
        "audit", help="export the audit trail of a period (CSV or JSON lines) to stdout"
    )
    audit.add_argument("--config", type=Path, default=None, help="TOML configuration")
    audit.add_argument("--data-dir", type=Path, default=Path("var"))
    audit.add_argument(
        "--state-url", default=None, help="PostgreSQL state store URL; also EXPORTER_STATE_URL"
    )
    audit.add_argument(
        "--since", required=True, help="from this ISO-8601 date or time (UTC unless given)"
    )
    audit.add_argument("--until", default=None, help="before this date or time (default: now)")
    audit.add_argument("--login", default=None, help="only this login (case-insensitive)")
    audit.add_argument("--format", choices=("csv", "json"), default="csv")

    sub.add_parser("hash-password", help="hash a password for a sqlite demo account (stdin)")
    sub.add_parser(
        "generate-key",
        help="print a new random key (EXPORTER_JWT_KEY, EXPORTER_VAULT_KEY or a key file)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        try:
            config = load_config(args.path)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        scripts = sum(len(g.scripts) for g in config.groups)
        print(
            f"{args.path}: ok ({len(config.databases)} databases, {len(config.managers)} managers,"
            f" {len(config.groups)} groups, {scripts} scripts)"
        )
        return 0
    if args.command == "audit":
        return _audit(args)
    if args.command == "hash-password":
        from exporter_api.security.passwords import hash_password

        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
        print(hash_password(password.rstrip("\n")))
        return 0
    if args.command == "generate-key":
        from exporter_api.security.keys import generate_key

        print(generate_key())
        return 0
    return _serve(args)


def _audit(args: argparse.Namespace) -> int:
    import anyio

    from exporter_api.app import state_url
    from exporter_api.audit.export import export_records, parse_moment
    from exporter_api.store import Store

    try:
        since = parse_moment(args.since)
        until = parse_moment(args.until) if args.until else None
    except ValueError:
        print("error: --since and --until take ISO-8601 dates or times", file=sys.stderr)
        return 2
    config_path = (args.config or default_config_path()).resolve()
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    settings = Settings(
        config_path=config_path, data_dir=args.data_dir.resolve(), state_url=args.state_url
    )
    url = state_url(settings, config)

    async def run() -> int:
        from exporter_api.store.base import utcnow_iso

        store: Store
        if url:
            from exporter_api.store.postgres import PostgresStore

            store = await PostgresStore.open(url, max_size=1)
        else:
            from exporter_api.store.sqlite import SqliteStore

            store = await SqliteStore.open_readonly(settings.data_dir / "state.sqlite3")
        try:
            return await export_records(
                store,
                sys.stdout,
                since=since,
                until=until or utcnow_iso(),
                login=args.login,
                fmt=args.format,
            )
        finally:
            await store.aclose()

    store_errors: tuple[type[Exception], ...] = (StoreUnavailable, OSError)
    if url:  # a wrong password, an unknown database: the server's refusal, said in one line
        import asyncpg

        store_errors += (asyncpg.PostgresError, asyncpg.InterfaceError)
    try:
        count = anyio.run(run)
    except FileNotFoundError:
        print(f"error: no state store in {settings.data_dir}", file=sys.stderr)
        return 1
    except store_errors as exc:
        # One line, no traceback; never the URL (it may hold a password) nor the driver's text.
        where = "the PostgreSQL state store" if url else f"the state store in {settings.data_dir}"
        print(f"error: cannot read {where} ({type(exc).__name__})", file=sys.stderr)
        return 1
    print(f"{count} audit records", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import logging
    import signal

    import anyio
    import structlog
    from hypercorn.config import Config as HypercornConfig

    from exporter_api.app import REDIS_URL_ENV, create_app, redis_url, state_url
    from exporter_api.logging import configure_logging

    configure_logging(args.log_level)
    if args.worker_index is not None:
        from exporter_api.workers import follow_supervisor

        structlog.contextvars.bind_contextvars(worker=args.worker_index)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches us through the supervisor
        supervisor = args.supervisor_pid if args.supervisor_pid is not None else os.getppid()
        if not follow_supervisor(supervisor):  # it died while this worker started: nothing to do
            structlog.get_logger("exporter_api.cli").warning("supervisor_gone")
            return 1
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 1
    settings = Settings(
        config_path=(args.config or default_config_path()).resolve(),
        data_dir=args.data_dir.resolve(),
        host=args.host,
        port=args.port,
        insecure_cookies=args.insecure_cookies,
        state_url=args.state_url,
        log_level=args.log_level,
        redis_url=args.redis_url or os.environ.get(REDIS_URL_ENV) or None,
        workers=args.workers,
    )
    try:
        app = create_app(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    config = app.state.config
    log = structlog.get_logger("exporter_api.cli")
    if settings.workers > 1 and args.worker_index is None:
        missing = [
            what
            for what, present in (
                (
                    "the PostgreSQL state store (--state-url, EXPORTER_STATE_URL or [server] "
                    "state_url)",
                    state_url(settings, config),
                ),
                (
                    "Redis for the hub (--redis-url, EXPORTER_REDIS_URL or [server] redis_url)",
                    redis_url(settings, config),
                ),
            )
            if not present
        ]
        if missing:
            print(
                f"error: --workers {settings.workers} runs one instance per process, which needs "
                + " and ".join(missing),
                file=sys.stderr,
            )
            return 1
        return _serve_workers(
            args,
            settings,
            state_url(settings, config),
            redis_url(settings, config),
            stop_timeout_s=config.server.drain_grace_s + _GRACEFUL_TIMEOUT_S + _STOP_MARGIN_S,
            metrics=config.metrics.enabled,
        )
    if args.worker_index is None and config.metrics.enabled:
        from exporter_api.metrics import MULTIPROC_DIR_ENV
        from exporter_api.workers import prepare_metrics_dir

        if given := os.environ.get(MULTIPROC_DIR_ENV):  # the operator's multiprocess setup
            prepare_metrics_dir(Path(given))
    hc = HypercornConfig()
    if args.listen_fd is not None:
        hc.bind = [f"fd://{args.listen_fd}"]
    else:
        hc.bind = [f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")  # JSON through configure_logging
    hc.graceful_timeout = _GRACEFUL_TIMEOUT_S
    if args.worker_index is None:
        log.info(
            "listening",
            url=f"http://{hc.bind[0]}/",
            https_only_refresh=settings.cookie_secure,
            state_store="postgres" if state_url(settings, config) else "sqlite",
            redis=redis_url(settings, config) is not None,  # never the URL: it may hold a password
        )
    signals = (
        (signal.SIGTERM,) if args.worker_index is not None else (signal.SIGINT, signal.SIGTERM)
    )
    try:
        # uvloop when installed (a dependency except on Windows): ~20% less server CPU per hub
        # round trip than asyncio's loop, same compatibility results (docs/DEPLOYMENT.md).
        uvloop = {"use_uvloop": importlib.util.find_spec("uvloop") is not None}
        anyio.run(_serve_until_signal, app, hc, signals, _EXIT_AFTER_S, backend_options=uvloop)
    except Exception as exc:
        # Raised in the app's lifespan, so it reaches us wrapped by hypercorn and the task groups.
        from exporter_api.store.sqlite import DataDirInUse

        in_use = _find_error(exc, DataDirInUse)
        if in_use is None:
            raise
        print(f"error: {in_use}", file=sys.stderr)
        return 1
    return 0


def _find_error(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first ``kind`` in ``exc``, its exception groups' members, causes and contexts."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


def _serve_workers(
    args: argparse.Namespace,
    settings: Settings,
    store_url: str | None,
    hub_url: str | None,
    *,
    stop_timeout_s: float,
    metrics: bool = False,
) -> int:
    import anyio
    import structlog

    from exporter_api.app import REDIS_URL_ENV, STATE_URL_ENV
    from exporter_api.metrics import MULTIPROC_DIR_ENV
    from exporter_api.workers import (
        listening_socket,
        metrics_dir,
        metrics_worker_exited,
        sigterm_unwinds,
        supervise,
    )

    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as exc:
        print(
            f"error: cannot listen on {settings.host}:{settings.port} ({exc.strerror})",
            file=sys.stderr,
        )
        return 1
    # URLs may hold passwords: the workers get them in their environment, never in argv (ps).
    env = {**os.environ, STATE_URL_ENV: store_url or "", REDIS_URL_ENV: hub_url or ""}

    def command(index: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "exporter_api",
            "serve",
            "--config",
            str(settings.config_path),
            "--data-dir",
            str(settings.data_dir),
            "--host",
            settings.host,
            "--port",
            str(settings.port),
            "--log-level",
            settings.log_level,
            "--listen-fd",
            str(sock.fileno()),
            "--worker-index",
            str(index),
            "--supervisor-pid",
            str(os.getpid()),
            "--workers",  # the worker serves alone, but knows it has siblings (hub tokens)
            str(settings.workers),
            *(["--insecure-cookies"] if args.insecure_cookies else []),
        ]

    structlog.get_logger("exporter_api.cli").info(
        "listening",
        url=f"http://{settings.host}:{settings.port}/",
        workers=settings.workers,
        https_only_refresh=settings.cookie_secure,
    )
    # The metrics directory must go however the supervisor ends (workers that died, SIGTERM,
    # SIGINT, an error), so until `supervise` listens for SIGTERM it unwinds this block.
    with sigterm_unwinds(), sock, contextlib.ExitStack() as cleanup:
        on_exit = None
        if metrics:  # one scrape answers for every worker (prometheus-client multiprocess mode)
            given = os.environ.get(MULTIPROC_DIR_ENV)
            path = cleanup.enter_context(metrics_dir(settings.data_dir, given))
            env[MULTIPROC_DIR_ENV] = str(path)
            on_exit = metrics_worker_exited(path)
        return anyio.run(
            lambda: supervise(
                settings.workers,
                command,
                env=env,
                pass_fds=(sock.fileno(),),
                stop_timeout_s=stop_timeout_s,
                on_exit=on_exit,
            )
        )


async def _serve_until_signal(
    app: Starlette,
    hc: HypercornConfig,
    signals: tuple[signal.Signals, ...] | None = None,
    exit_after_s: float | None = None,
) -> None:
    """Serve until a signal, then stop in order (a rolling restart loses nothing):

    1. ``/readyz`` answers 503 at once: the load balancer stops sending new requests here;
    2. the runs component drains: it claims no new runs, lets active ones go on for up to
       ``[server] drain_grace_s`` and hands the rest over to other instances;
    3. hub clients get ``Close(allowReconnect: true)`` and reconnect elsewhere;
    4. hypercorn's own graceful stop (open requests get ``graceful_timeout``).

    With ``exit_after_s`` (the command, never a test's own process), the process ends that
    long after the server has stopped even if connections are left (see `_exit_if_stuck`).

    A second signal during step 2 cuts the drain short. Hypercorn waits for open requests
    (WebSockets, SSE streams, polls) before it ends the lifespan, so steps 1-3 run in its
    shutdown trigger.
    """
    import signal

    import anyio
    import structlog
    from hypercorn.asyncio import serve as hypercorn_serve

    log = structlog.get_logger("exporter_api.cli")
    watched = signals or (signal.SIGINT, signal.SIGTERM)

    # Listened for before hypercorn starts the app: a signal that comes while the lifespan
    # starts (claiming runs already) waits for the trigger instead of killing the process.
    with anyio.open_signal_receiver(*watched) as received:

        async def shutdown_trigger() -> None:
            async for signum in received:
                log.info("shutdown_requested", signal=signum)
                break
            app.state.health.start_draining()
            async with anyio.create_task_group() as tg:

                async def second_signal() -> None:
                    async for signum in received:
                        log.warning("drain_cut_short", signal=signum)
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(second_signal)
                await _drain(app)
                tg.cancel_scope.cancel()
            await app.state.runs.shutdown()

        await hypercorn_serve(app, hc, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
    if exit_after_s is not None:
        _exit_if_stuck(exit_after_s)


def _exit_if_stuck(after_s: float) -> None:
    """The server has stopped: state saved, runs drained or handed over, hub clients told to
    reconnect. hypercorn may still hold a task per connection that waits to flush a socket a
    stalled client never reads (it ignores the cancellation), and the event loop's own end
    would wait for those for ever: a stop that never ends. They get ``after_s``, then the
    process ends (status 0: nothing of the service is left to stop)."""
    import asyncio

    import structlog

    def exit_now() -> None:
        left = len(asyncio.all_tasks())  # (a timer callback: none of them is running)
        structlog.get_logger("exporter_api.cli").warning("exit_forced", tasks_left=left)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    asyncio.get_running_loop().call_later(after_s, exit_now)


async def _drain(app: Starlette) -> None:
    import structlog

    handed_over = await app.state.runs.drain()
    structlog.get_logger("exporter_api.cli").info("drained", handed_over=len(handed_over))


__all__ = ["main"]
