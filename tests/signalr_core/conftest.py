from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from signalr_core import set_logger_factory


@pytest.fixture(autouse=True)
def signalr_logs_through_structlog() -> Iterator[None]:
    """Route the library's logs through structlog, as exporter_api does, so tests can read them
    with ``structlog.testing.capture_logs``; the stdlib default has its own tests
    (test_logging.py)."""
    set_logger_factory(structlog.get_logger)
    try:
        yield
    finally:
        set_logger_factory(None)
