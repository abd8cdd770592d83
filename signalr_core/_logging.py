"""How signalr_core logs: through a logger the application chooses.

The library's modules hold a :func:`get_logger` handle, which is only a name and bound fields:
it picks the real logger at each call, so importing signalr_core configures nothing.

- By default records go to the standard library's :mod:`logging`, under the logger of that
  name (``signalr_core``, ``signalr_core.redis``): configure them as any other stdlib logger.
  The message is the event name followed by ``key=value`` fields; the record also carries
  ``record.event`` and ``record.fields`` (a dict) for handlers that want them apart.
- An application that logs with structlog, or anything with structlog's interface
  (``bind(**fields)``, ``info(event, **fields)``, ...), passes its factory once at start-up:
  ``signalr_core.set_logger_factory(structlog.get_logger)``. Events then carry their fields
  as key-value pairs, with the application's processors (context variables, redaction).

Event names are constant snake_case strings; fields never hold tokens or passwords.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["LoggerFactory", "StructuredLogger", "get_logger", "set_logger_factory"]


class StructuredLogger(Protocol):
    """What signalr_core needs of a logger: structlog's bound-logger interface."""

    def bind(self, **fields: Any) -> StructuredLogger:
        """A logger that adds ``fields`` to every event it logs."""
        ...

    def debug(self, event: str, **fields: Any) -> Any:
        """Log ``event`` (a constant snake_case name) with ``fields`` at debug level."""
        ...

    def info(self, event: str, **fields: Any) -> Any:
        """Log ``event`` with ``fields`` at info level."""
        ...

    def warning(self, event: str, **fields: Any) -> Any:
        """Log ``event`` with ``fields`` at warning level."""
        ...

    def error(self, event: str, **fields: Any) -> Any:
        """Log ``event`` with ``fields`` at error level (``exc_info=exc`` adds a traceback)."""
        ...

    def exception(self, event: str, **fields: Any) -> Any:
        """Log ``event`` at error level with the exception being handled."""
        ...


LoggerFactory = Callable[[str], Any]
"""``(name) -> logger`` with the :class:`StructuredLogger` interface (``structlog.get_logger``)."""

_factory: LoggerFactory | None = None


def set_logger_factory(factory: LoggerFactory | None) -> None:
    """Choose the logger signalr_core logs through, for the whole process.

    Call it once while the application starts (not at import time), before serving.

    Args:
        factory: Called with a logger name (``"signalr_core"``, ``"signalr_core.redis"``);
            returns a logger with structlog's interface, e.g. ``structlog.get_logger``.
            ``None`` restores the default: the standard library's :mod:`logging`.
    """
    global _factory
    _factory = factory


class _StdlibLogger:
    """The default: a stdlib logger, the event and its fields rendered into the message."""

    __slots__ = ("_fields", "_logger")

    def __init__(self, logger: logging.Logger, fields: dict[str, Any]) -> None:
        self._logger = logger
        self._fields = fields

    def bind(self, **fields: Any) -> _StdlibLogger:
        return _StdlibLogger(self._logger, {**self._fields, **fields})

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        exc_info = fields.pop("exc_info", None)
        merged = {**self._fields, **fields}
        rendered = " ".join([event, *(f"{key}={value!r}" for key, value in merged.items())])
        self._logger.log(
            level,
            "%s",
            rendered,
            exc_info=exc_info,
            extra={"event": event, "fields": merged},
            stacklevel=4,  # the library line that logged
        )

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self._log(logging.ERROR, event, fields)


class _Logger:
    """A name and bound fields; the logger itself is chosen at each call."""

    __slots__ = ("_fields", "_name")

    def __init__(self, name: str, fields: dict[str, Any]) -> None:
        self._name = name
        self._fields = fields

    def bind(self, **fields: Any) -> _Logger:
        return _Logger(self._name, {**self._fields, **fields})

    def _target(self) -> Any:
        factory = _factory
        if factory is None:
            return _StdlibLogger(logging.getLogger(self._name), self._fields)
        logger = factory(self._name)
        return logger.bind(**self._fields) if self._fields else logger

    def debug(self, event: str, **fields: Any) -> None:
        self._target().debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._target().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._target().warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._target().error(event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._target().exception(event, **fields)


def get_logger(name: str) -> _Logger:
    """A handle for ``name``; cheap, safe at import time (it configures nothing)."""
    return _Logger(name, {})
