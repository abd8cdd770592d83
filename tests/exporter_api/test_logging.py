from __future__ import annotations

import io
import json
import logging

import structlog

from exporter_api.logging import REDACTED, configure_logging, redact_value


def test_json_lines_with_secrets_redacted() -> None:
    stream = io.StringIO()
    configure_logging("info", stream)
    try:
        log = structlog.get_logger("test")
        log.info(
            "db_connect_failed",
            dsn="postgresql://app:s3cret@db:5432/x",
            password="p4ss",
            access_token="tok-123",
        )
        log.debug("hidden_below_level")
        try:
            raise RuntimeError("cannot reach postgresql://app:tb-secret@db/x")
        except RuntimeError:
            logging.getLogger("hypercorn.error").exception("Error in ASGI Framework")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "db_connect_failed"
    assert first["dsn"] == f"postgresql://app:{REDACTED}@db:5432/x"
    assert first["password"] == REDACTED
    assert first["access_token"] == REDACTED
    assert "s3cret" not in stream.getvalue()
    assert "p4ss" not in stream.getvalue()
    assert "tok-123" not in stream.getvalue()
    assert second["logger"] == "hypercorn.error"  # stdlib loggers become JSON lines too
    assert "RuntimeError" in second["exception"]
    assert "tb-secret" not in stream.getvalue()  # tracebacks are redacted as well


def test_redact_value_leaves_plain_urls() -> None:
    assert redact_value("postgresql://db:5432/x") == "postgresql://db:5432/x"
    assert redact_value("see postgres://u:pw@h/d now") == f"see postgres://u:{REDACTED}@h/d now"


def test_dsn_password_with_at_signs_is_redacted_whole() -> None:
    assert redact_value("postgresql://u:p@ss@host/db") == f"postgresql://u:{REDACTED}@host/db"
    assert redact_value("postgresql://u:a@b@c@host:5432") == f"postgresql://u:{REDACTED}@host:5432"
    assert redact_value("failed: postgresql://u:p@ss@h/db?x=a@b then") == (
        f"failed: postgresql://u:{REDACTED}@h/db?x=a@b then"
    )
    assert redact_value("redis://:pa/ss@cache:6379/0") == f"redis://:{REDACTED}@cache:6379/0"
    assert redact_value("a://u:p@h b://v:q@r@s") == f"a://u:{REDACTED}@h b://v:{REDACTED}@s"
    assert redact_value("https://example.org/path@x") == "https://example.org/path@x"


class _Writes(io.StringIO):
    """Records every ``write`` call (what reaches a shared stderr as one piece)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_each_line_is_one_write() -> None:
    """Worker processes share one stderr: a line written in two pieces can interleave with
    another process's line and corrupt both for a log collector."""
    stream = _Writes()
    configure_logging("info", stream)
    try:
        structlog.get_logger("test").info("service_started", worker=1)
        logging.getLogger("hypercorn.error").warning("a stdlib line")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    pieces = [call for call in stream.calls if call]
    assert len(pieces) == 2
    for piece in pieces:
        assert piece.endswith("\n")
        assert piece.count("\n") == 1
        json.loads(piece)
