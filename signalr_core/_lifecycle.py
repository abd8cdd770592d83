"""The life of one server connection, with no I/O and no clock of its own.

Theory of operation
===================

Everything that decides where a :class:`~signalr_core.dispatcher.HubServerConnection` is in
its life lives here, as h11's ``_state.py`` does for HTTP: one phase, changed only through
:data:`TRANSITIONS` (a pair missing there is a bug in the driver), and the timers, which advance
only when the driver calls :meth:`Lifecycle.on_tick` with the time. The driver (the dispatcher,
the endpoint, the transports) does the I/O and performs what ``on_tick`` returns; tests drive
time by passing it.

::

    NEGOTIATED --activate--> CONNECTING --handshake done--> OPEN <--resume-- DETACHED
        |                         |                           |   --transport lost-->  |
        |                         +-----------+---------------+------------------------+
        |                                     | close (or abort)
        +--------------close------------> CLOSING ---finish---> CLOSED
    (any phase) ---finish---> CLOSED

* ``NEGOTIATED``: negotiate made the connection; no transport yet.
* ``CONNECTING``: a transport attached and ``run`` started: the handshake.
* ``OPEN``: the handshake succeeded; messages flow. Keep-alive Pings go out after
  ``keep_alive_interval`` of silence (not over Long Polling, as ASP.NET); once the client sent
  its first Ping, ``client_timeout`` of silence from it ends the connection.
* ``DETACHED``: stateful reconnect: the WebSocket broke and the connection waits up to
  ``disconnect_timeout`` for the client to resume it (the client timeout does not apply).
* ``CLOSING``: a close or abort was asked for; ``run`` is ending.
* ``CLOSED``: ``run`` ended (or the connection ended before a transport attached).
"""

from __future__ import annotations

import enum
from typing import Final

from signalr_core.options import HubOptions

__all__ = ["TRANSITIONS", "Event", "Lifecycle", "Phase", "TickAction"]


class Phase(enum.Enum):
    """Where a connection is in its life."""

    NEGOTIATED = "negotiated"
    CONNECTING = "connecting"
    OPEN = "open"
    DETACHED = "detached"
    CLOSING = "closing"
    CLOSED = "closed"


class Event(enum.Enum):
    """What moves a connection from one phase to another."""

    ACTIVATE = "activate"
    HANDSHAKE_DONE = "handshake done"
    TRANSPORT_LOST = "transport lost"
    RESUME = "resume"
    CLOSE = "close"
    FINISH = "finish"


class TickAction(enum.Enum):
    """What the driver does after a tick, in the order returned."""

    ACK = "ack"  # send the stateful-reconnect Ack
    PING = "ping"  # send a keep-alive Ping
    ABORT_CLIENT_TIMEOUT = "client timeout"  # the client was silent too long
    ABORT_RECONNECT_TIMEOUT = "reconnect timeout"  # a detached connection was not resumed


_N, _C, _O, _D = Phase.NEGOTIATED, Phase.CONNECTING, Phase.OPEN, Phase.DETACHED
_G, _X = Phase.CLOSING, Phase.CLOSED

TRANSITIONS: Final[dict[tuple[Phase, Event], Phase]] = {
    (_N, Event.ACTIVATE): _C,
    (_C, Event.HANDSHAKE_DONE): _O,
    (_G, Event.HANDSHAKE_DONE): _G,  # closed while the handshake finished: stays closing
    (_O, Event.TRANSPORT_LOST): _D,
    (_D, Event.RESUME): _O,
    (_O, Event.RESUME): _O,  # the client noticed the drop first: the old socket is still there
    (_N, Event.CLOSE): _G,
    (_C, Event.CLOSE): _G,
    (_O, Event.CLOSE): _G,
    (_D, Event.CLOSE): _G,
    (_G, Event.CLOSE): _G,
    **{(phase, Event.FINISH): _X for phase in Phase},
}
"""(phase, event) -> next phase."""

_OPEN_PHASES: Final = frozenset((_O, _D))


class Lifecycle:
    """The phase and the timers of one connection.

    Args:
        options: The endpoint's options (``keep_alive_interval``, ``client_timeout``,
            ``disconnect_timeout``).
        now: The time the connection was made (any monotonic clock; ticks use the same).

    Attributes:
        phase: The current :class:`Phase`.
        received: Set by the driver when anything arrives from the client (cleared by a tick).
        wrote: Set by the driver when a frame is queued for the client (cleared by a tick).
        pings: Whether keep-alive Pings are sent (not over Long Polling).
    """

    __slots__ = (
        "_client_timeout_armed",
        "_last_read",
        "_last_write",
        "_options",
        "created",
        "detached_since",
        "phase",
        "pings",
        "received",
        "wrote",
    )

    def __init__(self, options: HubOptions, now: float) -> None:
        self._options = options
        self.phase = Phase.NEGOTIATED
        self.created = now
        self._last_read = self._last_write = now
        self.received = False
        self.wrote = False
        self.pings = True
        # As in ASP.NET (DefaultHubDispatcher: Ping -> StartClientTimeout), the client timeout
        # starts with the first Ping: the official client never pings over Long Polling.
        self._client_timeout_armed = False
        self.detached_since: float | None = None

    def handle(self, event: Event, now: float | None = None) -> Phase:
        """Move to the next phase (``now`` is needed by ``HANDSHAKE_DONE``, ``TRANSPORT_LOST``).

        Raises:
            RuntimeError: ``event`` is not allowed in the current phase (a driver bug).
        """
        try:
            phase = TRANSITIONS[self.phase, event]
        except KeyError:
            raise RuntimeError(f"cannot {event.value} in phase {self.phase.value}") from None
        if event is Event.HANDSHAKE_DONE and now is not None:
            self._last_read = self._last_write = now
        elif event is Event.TRANSPORT_LOST:
            self.detached_since = now
        elif event is Event.RESUME:
            self.detached_since = None
            self.received = True  # the reconnect counts as hearing from the client
        self.phase = phase
        return phase

    @property
    def is_open(self) -> bool:
        """Messages may be sent: the handshake succeeded and no close was asked for."""
        return self.phase in _OPEN_PHASES

    @property
    def is_closing(self) -> bool:
        """A close or abort was asked for, or the connection ended."""
        return self.phase is Phase.CLOSING or self.phase is Phase.CLOSED

    def client_pinged(self, now: float) -> None:
        """The client's first Ping arms the client timeout (later ones count as input)."""
        if not self._client_timeout_armed:
            self._client_timeout_armed = True
            self._last_read = now

    def on_tick(self, now: float, *, acknowledge: bool = False) -> list[TickAction]:
        """Advance the timers to ``now``; what the driver should do, in order.

        Args:
            now: The time (the clock given to the constructor).
            acknowledge: Stateful reconnect has something to acknowledge (an Ack counts as a
                write, so no Ping goes out in the same tick).
        """
        if not self.is_open:
            return []
        options = self._options
        if self.received:
            self.received = False
            self._last_read = now
        if self.detached_since is not None:
            if now - self.detached_since > options.disconnect_timeout:
                return [TickAction.ABORT_RECONNECT_TIMEOUT]
            return []
        if self._client_timeout_armed and now - self._last_read >= options.client_timeout:
            return [TickAction.ABORT_CLIENT_TIMEOUT]
        actions = []
        if acknowledge:
            actions.append(TickAction.ACK)
            self.wrote = True
        if self.wrote:
            self.wrote = False
            self._last_write = now
        elif self.pings and now - self._last_write >= options.keep_alive_interval:
            actions.append(TickAction.PING)
        return actions
