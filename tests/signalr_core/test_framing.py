from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalr_core._framing import (
    encode_varint,
    split_binary_frames,
    split_text_frames,
    too_large_message,
)
from signalr_core.errors import MessageTooLargeError, ProtocolError


def _binary_frame(payload: bytes) -> bytes:
    return encode_varint(len(payload)) + payload


@pytest.mark.parametrize(
    ("length", "encoded"),
    [
        (0, b"\x00"),
        (0x7F, b"\x7f"),
        (0x80, b"\x80\x01"),
        (0x3FFF, b"\xff\x7f"),
        (0x4000, b"\x80\x80\x01"),
        (2**31 - 1, b"\xff\xff\xff\xff\x07"),
    ],
)
def test_varint_matches_the_spec(length: int, encoded: bytes) -> None:
    assert encode_varint(length) == encoded


def test_text_frames_split_on_record_separator_and_keep_the_partial_tail() -> None:
    spans, consumed, error = split_text_frames(b'{"a":1}\x1e{}\x1e{"b"', None)
    assert spans == [(0, 7), (8, 10)]
    assert consumed == 11
    assert error is None


def test_text_frame_at_exactly_the_limit_passes_and_one_byte_more_fails() -> None:
    frame = b"x" * 9 + b"\x1e"
    assert split_text_frames(frame, 10)[0] == [(0, 9)]
    spans, consumed, error = split_text_frames(b"ok\x1e" + b"x" * 10 + b"\x1e", 10)
    assert spans == [(0, 2)]
    assert consumed == 3
    assert isinstance(error, MessageTooLargeError)
    assert str(error) == too_large_message(10)
    assert str(error) == (
        "The maximum message size of 10B was exceeded. "
        "The message size can be configured in AddHubOptions."
    )


def test_unterminated_text_that_cannot_fit_is_refused_early() -> None:
    assert split_text_frames(b"x" * 9, 10)[2] is None
    assert isinstance(split_text_frames(b"x" * 10, 10)[2], MessageTooLargeError)


def test_binary_frames_and_incomplete_prefix_or_payload() -> None:
    data = _binary_frame(b"abc") + _binary_frame(b"") + _binary_frame(b"x" * 200)
    spans, consumed, error = split_binary_frames(data, None)
    assert [data[s:e] for s, e in spans] == [b"abc", b"", b"x" * 200]
    assert consumed == len(data)
    assert error is None
    # A lone continuation byte is an incomplete prefix, not an error.
    assert split_binary_frames(b"\x80", None) == ([], 0, None)
    # A complete prefix with a missing payload waits.
    assert split_binary_frames(b"\x05ab", None) == ([], 0, None)


def test_binary_limit_counts_the_prefix_and_is_checked_before_the_payload_arrives() -> None:
    assert split_binary_frames(_binary_frame(b"x" * 9), 10)[0] == [(1, 10)]
    spans, consumed, error = split_binary_frames(b"\x0a", 10)  # claims 10 bytes + 1 prefix
    assert spans == []
    assert consumed == 0
    assert isinstance(error, MessageTooLargeError)


@pytest.mark.parametrize("prefix", [b"\x80\x80\x80\x80\x80", b"\xff\xff\xff\xff\x08"])
def test_binary_lengths_of_2gb_and_more_are_refused(prefix: bytes) -> None:
    error = split_binary_frames(prefix + b"\x00", None)[2]
    assert isinstance(error, ProtocolError)
    assert str(error) == "Messages over 2GB in size are not supported."


@settings(deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_binary_split_recovers_every_payload(payloads: list[bytes]) -> None:
    data = b"".join(_binary_frame(p) for p in payloads)
    spans, consumed, error = split_binary_frames(data, None)
    assert [data[s:e] for s, e in spans] == payloads
    assert consumed == len(data)
    assert error is None


@settings(deadline=None)
@given(st.lists(st.binary(max_size=50).map(lambda b: b.replace(b"\x1e", b"")), max_size=8))
def test_text_split_recovers_every_record(records: list[bytes]) -> None:
    data = b"".join(r + b"\x1e" for r in records)
    spans, consumed, error = split_text_frames(data, None)
    assert [data[s:e] for s, e in spans] == records
    assert consumed == len(data)
    assert error is None


@settings(deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=64))
def test_splitters_never_fail_with_anything_but_protocol_errors(data: bytes, limit: int) -> None:
    for split in (split_text_frames, split_binary_frames):
        spans, consumed, error = split(data, limit)
        assert error is None or isinstance(error, ProtocolError)
        assert 0 <= consumed <= len(data)
        assert all(0 <= s <= e <= consumed for s, e in spans)
        if error is None:
            # The unconsumed tail is a partial frame that still fits under the limit.
            assert len(data) - consumed < limit or split is split_binary_frames
