"""`exporter-api serve | check-config | hash-password`."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from exporter_api.config import Settings, default_config_path, load_config
from exporter_api.errors import ConfigError

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig
    from starlette.applications import Starlette


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
        "--insecure-cookies",
        action="store_true",
        default=None,
        help="refresh cookie without Secure (plain HTTP beyond loopback; dev only)",
    )
    serve.add_argument("--log-level", default="info")

    check = sub.add_parser("check-config", help="validate a configuration and its SQL files")
    check.add_argument("path", type=Path)

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


def _serve(args: argparse.Namespace) -> int:
    import logging

    import anyio
    import structlog
    from hypercorn.config import Config as HypercornConfig

    from exporter_api.app import create_app
    from exporter_api.logging import configure_logging

    configure_logging(args.log_level)
    settings = Settings(
        config_path=(args.config or default_config_path()).resolve(),
        data_dir=args.data_dir.resolve(),
        host=args.host,
        port=args.port,
        insecure_cookies=args.insecure_cookies,
        state_url=args.state_url,
        log_level=args.log_level,
    )
    try:
        app = create_app(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    hc = HypercornConfig()
    hc.bind = [f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")  # JSON through configure_logging
    hc.graceful_timeout = 5
    structlog.get_logger("exporter_api.cli").info(
        "listening", url=f"http://{hc.bind[0]}/", https_only_refresh=settings.cookie_secure
    )
    anyio.run(_serve_until_signal, app, hc)
    return 0


async def _serve_until_signal(app: Starlette, hc: HypercornConfig) -> None:
    """Serve until SIGINT/SIGTERM; then tell hub clients to reconnect before hypercorn drains.

    Hypercorn waits for open requests (WebSockets, SSE streams, polls) before it ends the
    lifespan, so the hub's ``Close(allowReconnect: true)`` must be sent from the shutdown trigger.
    """
    import signal

    import anyio
    import structlog
    from hypercorn.asyncio import serve as hypercorn_serve

    async def shutdown_trigger() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                structlog.get_logger("exporter_api.cli").info("shutdown_requested", signal=signum)
                break
        await app.state.runs.shutdown()

    await hypercorn_serve(app, hc, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]


__all__ = ["main"]
