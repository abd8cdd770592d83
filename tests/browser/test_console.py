"""The console in a real browser: headless Chromium against a real `exporter-api serve`.

The scenario itself is tests/browser/console_scenario.mjs (playwright-core from node_modules,
Debian's /usr/bin/chromium). This module starts the service on the bundled demo with a fresh data
directory on a free port, runs the scenario and reports its log, the browser's errors and the
server's output on failure. Screenshots land in test-artifacts/; the documentation screenshots
(docs/console-{desktop,phone}-{en,ru}.png) are rewritten when EXPORTER_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import demo_config, exporter_serve

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("console_scenario.mjs")
CHROMIUM = Path("/usr/bin/chromium")
VENDOR_CLIENT = ROOT / "exporter_api" / "static" / "vendor" / "signalr.min.js"
DOCS = ROOT / "docs"
ARTIFACTS = ROOT / "test-artifacts"


# The demo's access tokens live 300 s; the copy served here issues short ones so the scenario
# outlives a few and proves the console refreshes them on its own.
TOKEN_TTL_S = 8


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`exporter-api serve` on the demo catalog (short-lived access tokens), a throwaway data
    dir and a free port."""
    config = demo_config(
        tmp_path,
        {
            "access_token_ttl_s = 300": f"access_token_ttl_s = {TOKEN_TTL_S}",
            # The scenario starts a handful of runs from another session to fill "Load older".
            "max_active_runs_per_user = 3": "max_active_runs_per_user = 12",
        },
    )
    # The ledger five times over (10,000,000 rows), each row made to cost SQLite a 1,000-entry
    # index range (the same values: "+ 0 *"): the export runs for minutes (about 40,000 rows/s
    # here), not the seconds the C reader takes for the demo's, so the scenario's reload, outage
    # and cancel happen while it runs on any machine.
    (config.parent / "sql" / "ledger_v1.sql").write_text(
        "SELECT l.entry_id, :manager_id AS manager_id, :stream_id AS stream_id, l.account,"
        " l.booked_at, l.amount + 0 * (SELECT count(*) FROM ledger l2"
        " WHERE l2.entry_id BETWEEN l.entry_id AND l.entry_id + 999) AS amount"
        " FROM ledger l CROSS JOIN (VALUES (1), (2), (3), (4), (5)) AS r\n",
        encoding="utf-8",
    )
    with exporter_serve(config, tmp_path / "data", tmp_path / "server.log") as (_, url):
        yield url


@pytest.mark.timeout(240)
def test_console_login_run_download_reload_cancel(server: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (apt-get install nodejs)"
    assert CHROMIUM.exists(), "Debian's chromium is required (apt-get install chromium)"
    assert VENDOR_CLIENT.exists(), "the official client is not in the assets: run `make assets`"
    ARTIFACTS.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "BASE_URL": server,
        "ARTIFACTS_DIR": str(ARTIFACTS),
        "CHROMIUM": str(CHROMIUM),
        "TOKEN_TTL_S": str(TOKEN_TTL_S),
    }
    if os.environ.get("EXPORTER_UPDATE_SCREENSHOT") == "1":
        env["DOCS_DIR"] = str(DOCS)
    result = subprocess.run(
        [node, str(SCENARIO)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    server_log = tmp_path / "server.log"
    assert result.returncode == 0, (
        f"browser scenario failed (screenshot: {ARTIFACTS / 'failure.png'})\n"
        f"--- scenario stdout\n{result.stdout}\n--- scenario stderr\n{result.stderr}\n"
        f"--- server log (tail)\n{server_log.read_text(errors='replace')[-6000:]}"
    )
    assert "passed in" in result.stdout
    print(result.stdout)  # the scenario's step log (shown with -s or -rP)
    for name in ("console-g-sales", "console-desktop-en", "console-phone-ru"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000
