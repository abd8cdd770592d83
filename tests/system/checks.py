"""Assertions shared by the system tests: files whole, events in order, instance choice."""

from __future__ import annotations

from typing import Any

from tests.system.catalog import LEDGER_ROWS, check_rows, events_ids, sha256, zip_members
from tests.system.client import HubClient, Session, download, list_files
from tests.system.harness import Instance

HEAD = range(1, 10_001)
LEDGER = range(1, LEDGER_ROWS + 1)
# The rows each variant of each group's script writes.
EXPECTED_ROWS: dict[str, dict[int, range]] = {
    "g-events": {v: events_ids(v) for v in (1, 2, 3)},
    "g-big": {1: HEAD, 2: LEDGER},
    "g-gated": {1: HEAD, 2: LEDGER},
}


def check_files(
    base: str, session: Session, run_id: str, group_id: str, *, zip_too: bool = False
) -> list[dict[str, Any]]:
    """Every file of the run downloaded through ``base``: its sha256 is the one listed and it
    holds exactly the rows of its variant. Returns the listing."""
    listing = list_files(base, session, run_id)
    files = listing["files"]
    expected = EXPECTED_ROWS[group_id]
    assert sorted(f["variant"] for f in files) == sorted(expected), files
    for f in files:
        data = download(base + f["downloadUrl"])
        assert sha256(data) == f["sha256"], f"{f['name']}: sha256 differs from the listing"
        assert len(data) == f["sizeBytes"]
        check_rows(data, expected[f["variant"]])
    if zip_too:
        members = zip_members(download(base + listing["zipUrl"]))
        assert sorted(members) == sorted(f["name"] for f in files)
        for f in files:
            assert sha256(members[f["name"]]) == f["sha256"], f"zip member {f['name']} differs"
    return list(files)


def other_than(instances: list[Instance], *excluded: Instance) -> Instance:
    return next(i for i in instances if all(i is not e for e in excluded))


def check_progress_order(events: list[dict[str, Any]]) -> None:
    """``script.progress`` of a run without takeover never goes back, and nothing follows the
    final ``run.updated``."""
    rows = [e["payload"]["rowsExported"] for e in events if e["name"] == "script.progress"]
    assert rows == sorted(rows), f"progress went back: {rows}"
    names = [e["name"] for e in events]
    assert names, "no event"
    assert names[-1] == "run.updated", names[-5:]


def check_only_reconnects(client: HubClient, run_id: str) -> int:
    """The client lost its connection at least once, always got it back, and subscribed to the
    run again after the last time; returns how many times it reconnected.

    A SubscribeRun may fail when the connection it was sent on is closing (an instance that
    drains): that is fine when a reconnect follows it.
    """
    lines = client.lines()
    kinds = [line["type"] for line in lines]
    assert "closed" not in kinds, client.describe()
    reconnecting = [i for i, k in enumerate(kinds) if k == "reconnecting"]
    reconnected = [i for i, k in enumerate(kinds) if k == "reconnected"]
    assert reconnecting, f"the client never reconnected\n{client.describe()}"
    assert reconnected, client.describe()
    assert reconnected[-1] > reconnecting[-1], client.describe()
    for index, kind in enumerate(kinds):
        if kind == "subscribe_error":
            assert any(i > index for i in reconnecting), client.describe()
    assert any(
        kind == "state" and lines[i]["runId"] == run_id
        for i, kind in enumerate(kinds)
        if i > reconnected[-1]
    ), f"no SubscribeRun after the last reconnect\n{client.describe()}"
    return len(reconnected)
