"""The library logs through the logger the application chooses: stdlib ``logging`` by default,
or a structlog-style factory set with ``set_logger_factory``; importing it configures nothing."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from signalr_core import Hub, HubEndpoint, HubOptions, set_logger_factory
from signalr_core._logging import get_logger
from tests.signalr_core._hub_server import json_ws, running_server

ROOT = Path(__file__).resolve().parents[2]


class CrashHub(Hub):
    def crash(self) -> None:
        raise ValueError("boom")


async def test_stdlib_by_default_with_event_and_fields(caplog: pytest.LogCaptureFixture) -> None:
    set_logger_factory(None)
    caplog.set_level(logging.DEBUG, logger="signalr_core")
    endpoint = HubEndpoint(CrashHub, options=HubOptions())
    async with running_server(endpoint) as url, json_ws(url) as client:
        assert (await client.invoke("Crash"))["error"]
    failed = [r for r in caplog.records if getattr(r, "event", None) == "invocation_failed"]
    assert len(failed) == 1
    record: Any = failed[0]
    assert record.name == "signalr_core"
    assert record.levelno == logging.ERROR
    assert record.fields["method"] == "Crash"
    assert record.fields["connection_id"]
    assert record.getMessage().startswith("invocation_failed ")
    assert "method='Crash'" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError
    # The record points at the library line that logged, not at the adapter.
    assert record.pathname.endswith("_invocations.py")


def test_disabled_levels_render_nothing(caplog: pytest.LogCaptureFixture) -> None:
    set_logger_factory(None)
    caplog.set_level(logging.WARNING, logger="signalr_core")

    class Unprintable:
        def __repr__(self) -> str:
            raise AssertionError("rendered although the level is off")

    log = get_logger("signalr_core").bind(connection_id="c1")
    log.debug("signalr.quiet", value=Unprintable())
    log.warning("signalr.loud", count=2)
    assert [r.getMessage() for r in caplog.records] == ["signalr.loud connection_id='c1' count=2"]


def test_factory_receives_name_bound_fields_and_events() -> None:
    calls: list[tuple[str, str, str, dict[str, Any]]] = []

    class Recorder:
        def __init__(self, name: str, fields: dict[str, Any]) -> None:
            self.name, self.fields = name, fields

        def bind(self, **fields: Any) -> Recorder:
            return Recorder(self.name, {**self.fields, **fields})

        def _record(self, level: str, event: str, fields: dict[str, Any]) -> None:
            calls.append((self.name, level, event, {**self.fields, **fields}))

        def info(self, event: str, **fields: Any) -> None:
            self._record("info", event, fields)

        def exception(self, event: str, **fields: Any) -> None:
            self._record("exception", event, fields)

    log = get_logger("signalr_core.redis").bind(hub="Chat")  # a handle made before the factory
    set_logger_factory(lambda name: Recorder(name, {}))
    log.info("backplane_connected", channels=4)
    log.bind(server="s1").exception("backplane_failed")
    assert calls == [
        ("signalr_core.redis", "info", "backplane_connected", {"hub": "Chat", "channels": 4}),
        (
            "signalr_core.redis",
            "exception",
            "backplane_failed",
            {"hub": "Chat", "server": "s1"},
        ),
    ]


def test_importing_configures_no_logging_and_needs_no_structlog() -> None:
    code = (
        "import logging, sys, pkgutil, importlib, signalr_core\n"
        "for info in pkgutil.walk_packages(signalr_core.__path__, 'signalr_core.'):\n"
        "    importlib.import_module(info.name)\n"
        "assert not logging.getLogger().handlers, logging.getLogger().handlers\n"
        "assert not logging.getLogger('signalr_core').handlers\n"
        "print('structlog' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
