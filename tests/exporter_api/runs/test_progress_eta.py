"""``script.progress`` with ``rowsExpected`` / ``etaSeconds``: known only from the script's last
successful run for the same database, manager and stream, never guessed; the contract's four
fields stay as they are."""

from __future__ import annotations

from pathlib import Path

from tests.exporter_api.runs.demokit import DEMO_CREDS, demo_catalog, demo_providers
from tests.exporter_api.runs.enginekit import engine_kit, plan, single, user

CONTRACT = {"runId", "scriptId", "rowsExported", "bytesWritten"}


async def test_expected_rows_and_eta_come_from_the_last_successful_run(tmp_path: Path) -> None:
    config, providers = await demo_providers(demo_catalog(tmp_path / "demo", 10), tmp_path / "d")
    body = single("s-orders", "g-sales")
    m1s1 = user("USER1", "sess-demo", database_id="db-test")
    m1s2 = user("USER1", "sess-demo", database_id="db-test", stream_id="s2")
    async with engine_kit(config, tmp_path / "d", DEMO_CREDS, providers=providers) as kit:
        first = await kit.run_to_end(m1s1, plan(config, body))
        first_events = kit.events.of("script.progress", runId=first.run_id)
        second = await kit.run_to_end(m1s1, plan(config, body))
        second_events = kit.events.of("script.progress", runId=second.run_id)
        other = await kit.run_to_end(m1s2, plan(config, body))  # another stream: no history
        other_events = kit.events.of("script.progress", runId=other.run_id)
    done = first.groups[0].scripts[0]
    assert done.status == "Success"
    assert done.rows_exported > 0
    assert done.rows_expected is None
    assert first_events
    assert all(set(e) == CONTRACT for e in first_events)  # nothing known: nothing added
    assert all(set(e) == CONTRACT for e in other_events)
    assert other.groups[0].scripts[0].rows_expected is None
    script = second.groups[0].scripts[0]
    assert script.rows_expected == done.rows_exported  # carried by the run state too
    assert script.eta_seconds is None  # the script has ended
    assert all(
        CONTRACT <= set(e) <= CONTRACT | {"rowsExpected", "etaSeconds"} for e in second_events
    )
    assert all(e["rowsExpected"] == done.rows_exported for e in second_events)
    # after variants 1 and 2 (of 3) rows are left: an ETA in whole seconds; none at the end
    etas = [e.get("etaSeconds") for e in second_events]
    assert any(isinstance(eta, int) and eta >= 0 for eta in etas[:-1])
    assert "etaSeconds" not in second_events[-1]
