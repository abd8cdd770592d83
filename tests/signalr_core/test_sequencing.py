"""Stateful reconnect's bookkeeping, fed messages directly (no I/O, no clock)."""

from __future__ import annotations

import pytest

from signalr_core import ProtocolError
from signalr_core._sequencing import Sequencing
from signalr_core.messages import PING, CompletionMessage, InvocationMessage


def _invocation(n: int) -> InvocationMessage:
    return InvocationMessage(target="T", arguments=(n,))


def test_sent_messages_are_kept_until_acknowledged_and_replayed_in_order() -> None:
    seq = Sequencing(limit=100)
    assert seq.replay() == (1, [])
    assert seq.sent(_invocation(1), b"one")
    assert seq.sent(PING, b"ping")  # not sequenced: neither numbered nor kept
    assert seq.sent(CompletionMessage(invocation_id="1"), b"two")
    assert seq.replay() == (1, [b"one", b"two"])
    seq.acknowledged(1)
    assert seq.replay() == (2, [b"two"])
    assert (seq.pending_messages, seq.pending_bytes) == (1, 3)
    seq.acknowledged(2)
    assert seq.replay() == (3, [])  # nothing kept: the next id is announced


def test_the_replay_buffer_is_bounded() -> None:
    seq = Sequencing(limit=10)
    assert seq.sent(_invocation(1), b"x" * 5)
    assert seq.has_room  # half full
    assert seq.sent(_invocation(2), b"x" * 5)
    assert not seq.has_room
    assert not seq.sent(_invocation(3), b"x")  # over the limit: the driver aborts
    seq.acknowledged(3)
    assert seq.has_room


def test_received_duplicates_after_a_reconnect_are_skipped_and_acks_follow() -> None:
    seq = Sequencing(limit=100)
    assert seq.ack_due() is None
    assert [seq.received(_invocation(n)) for n in (1, 2, 3)] == [True, True, True]
    assert seq.received(PING)  # not sequenced
    assert seq.ack_due() == 3
    assert seq.ack_due() is None  # nothing new since
    seq.restart_at(2)  # the client resends from its oldest unacknowledged message
    assert [seq.received(_invocation(n)) for n in (2, 3, 4)] == [False, False, True]
    assert seq.ack_due() == 4
    with pytest.raises(ProtocolError, match="Sequence ID greater"):
        seq.restart_at(10)
