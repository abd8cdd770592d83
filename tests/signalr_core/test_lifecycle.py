"""The connection lifecycle, driven by an injected clock: every timing rule without a sleep."""

from __future__ import annotations

import pytest

from signalr_core import HubOptions
from signalr_core._lifecycle import TRANSITIONS, Event, Lifecycle, Phase, TickAction

OPTIONS = HubOptions(keep_alive_interval=15.0, client_timeout=30.0, disconnect_timeout=10.0)


def _open(now: float = 0.0) -> Lifecycle:
    life = Lifecycle(OPTIONS, now)
    life.handle(Event.ACTIVATE)
    life.handle(Event.HANDSHAKE_DONE, now)
    return life


def test_the_table_allows_the_documented_paths_and_refuses_the_rest() -> None:
    life = Lifecycle(OPTIONS, 0.0)
    assert life.phase is Phase.NEGOTIATED
    for event, phase in (
        (Event.ACTIVATE, Phase.CONNECTING),
        (Event.HANDSHAKE_DONE, Phase.OPEN),
        (Event.TRANSPORT_LOST, Phase.DETACHED),
        (Event.RESUME, Phase.OPEN),
        (Event.CLOSE, Phase.CLOSING),
        (Event.FINISH, Phase.CLOSED),
    ):
        assert life.handle(event, 1.0) is phase
    with pytest.raises(RuntimeError, match="cannot resume in phase closed"):
        life.handle(Event.RESUME)
    # A connection never activated can close and finish; it cannot lose a transport.
    assert (Phase.NEGOTIATED, Event.TRANSPORT_LOST) not in TRANSITIONS
    assert all((phase, Event.FINISH) in TRANSITIONS for phase in Phase)


def test_keep_alive_pings_after_silence_and_writes_postpone_them() -> None:
    life = _open()
    assert life.on_tick(14.0) == []
    assert life.on_tick(15.0) == [TickAction.PING]
    life.wrote = True  # the ping (or anything) was queued
    assert life.on_tick(16.0) == []
    assert life.on_tick(30.0) == []  # 14 s since the last write
    assert life.on_tick(31.0) == [TickAction.PING]


def test_no_pings_over_long_polling() -> None:
    life = _open()
    life.pings = False
    assert life.on_tick(100.0) == []


def test_client_timeout_starts_with_the_first_ping_from_the_client() -> None:
    life = _open()
    # Silent for far longer than client_timeout, but it never pinged: no timeout.
    assert TickAction.ABORT_CLIENT_TIMEOUT not in life.on_tick(100.0)
    life.client_pinged(100.0)
    assert TickAction.ABORT_CLIENT_TIMEOUT not in life.on_tick(129.0)
    life.received = True  # anything from the client counts
    assert TickAction.ABORT_CLIENT_TIMEOUT not in life.on_tick(129.5)
    assert TickAction.ABORT_CLIENT_TIMEOUT not in life.on_tick(159.0)
    assert life.on_tick(159.5) == [TickAction.ABORT_CLIENT_TIMEOUT]


def test_an_ack_counts_as_a_write() -> None:
    life = _open()
    assert life.on_tick(20.0, acknowledge=True) == [TickAction.ACK]  # no ping beside it
    assert life.on_tick(34.0) == []
    assert life.on_tick(35.0) == [TickAction.PING]


def test_a_detached_connection_waits_for_the_disconnect_timeout_not_the_client_timeout() -> None:
    life = _open()
    life.client_pinged(0.0)
    life.handle(Event.TRANSPORT_LOST, 5.0)
    assert life.detached_since == 5.0
    assert life.on_tick(15.0) == []  # neither pings nor the client timeout while detached
    assert life.on_tick(15.5) == [TickAction.ABORT_RECONNECT_TIMEOUT]
    # Resumed in time: the reconnect counts as hearing from the client.
    life = _open()
    life.client_pinged(0.0)
    life.handle(Event.TRANSPORT_LOST, 5.0)
    life.handle(Event.RESUME)
    assert life.detached_since is None
    assert TickAction.ABORT_CLIENT_TIMEOUT not in life.on_tick(29.0)
    assert life.on_tick(59.0) == [TickAction.ABORT_CLIENT_TIMEOUT]


def test_nothing_happens_before_the_handshake_or_after_a_close() -> None:
    life = Lifecycle(OPTIONS, 0.0)
    assert life.on_tick(1000.0) == []
    life.handle(Event.ACTIVATE)
    assert life.on_tick(1000.0) == []  # the handshake has its own timeout
    life.handle(Event.HANDSHAKE_DONE, 1000.0)
    assert life.is_open
    life.handle(Event.CLOSE)
    assert (life.is_open, life.is_closing) == (False, True)
    assert life.on_tick(5000.0) == []
