"""Signed download links: sealed, scoped to one run and target, expiring."""

from __future__ import annotations

import pytest

from exporter_api.security.links import DownloadLinks, LinkExpired, LinkInvalid

KEY = b"k" * 32
RUN = "01HZZZZZZZZZZZZZZZZZZZZZZZ"


def test_round_trip_names_the_session_without_showing_it() -> None:
    links = DownloadLinks(KEY, ttl_s=60)
    sig, expires = links.mint(RUN, "file-1", "session-secret-id", now=1000)
    assert expires == 1060
    assert "session-secret-id" not in sig
    assert sig.isascii()
    assert all(c.isalnum() or c in "-_" for c in sig)  # URL-safe as it is
    assert links.open(sig, RUN, "file-1", now=1059) == "session-secret-id"


def test_each_link_is_fresh() -> None:
    links = DownloadLinks(KEY)
    assert links.mint(RUN, "f", "s", now=1)[0] != links.mint(RUN, "f", "s", now=1)[0]


@pytest.mark.parametrize(
    ("run_id", "target"),
    [(RUN, "file-2"), ("01HZZZZZZZZZZZZZZZZZZZZZZY", "file-1"), (RUN, "files.zip")],
)
def test_scoped_to_run_and_target(run_id: str, target: str) -> None:
    links = DownloadLinks(KEY)
    sig, _ = links.mint(RUN, "file-1", "s", now=1000)
    with pytest.raises(LinkInvalid):
        links.open(sig, run_id, target, now=1000)


def test_expired() -> None:
    links = DownloadLinks(KEY, ttl_s=60)
    sig, _ = links.mint(RUN, "f", "s", now=1000)
    with pytest.raises(LinkExpired):
        links.open(sig, RUN, "f", now=1060)


@pytest.mark.parametrize("sig", ["", "x", "!!!!", "A" * 600, "AAAA" * 10])
def test_garbage_is_invalid(sig: str) -> None:
    with pytest.raises(LinkInvalid):
        DownloadLinks(KEY).open(sig, RUN, "f", now=0)


def test_tampered_or_other_key() -> None:
    sig, _ = DownloadLinks(KEY).mint(RUN, "f", "s", now=1000)
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    with pytest.raises(LinkInvalid):
        DownloadLinks(KEY).open(flipped, RUN, "f", now=1000)
    with pytest.raises(LinkInvalid):
        DownloadLinks(b"o" * 32).open(sig, RUN, "f", now=1000)


def test_links_survive_a_key_rotation() -> None:
    old, new = b"o" * 32, b"n" * 32
    before = DownloadLinks(old)
    sig, _ = before.mint("RUN", "file-1", "session-1")
    rotated = DownloadLinks([new, old])
    assert rotated.open(sig, "RUN", "file-1") == "session-1"
    fresh, _ = rotated.mint("RUN", "file-1", "session-1")
    assert DownloadLinks(new).open(fresh, "RUN", "file-1") == "session-1"
    with pytest.raises(LinkInvalid):
        before.open(fresh, "RUN", "file-1")  # sealed with the new key only
    with pytest.raises(LinkInvalid):
        DownloadLinks(new).open(sig, "RUN", "file-1")  # the old key was retired
