"""The bundled demo (sqlite provider) through the whole service: log in as USER1, export the
Sales group, download a file. The demo's 2,000,000-row ledger is shrunk to keep the test short."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest

from tests.exporter_api.runs.live import bearer, events, hub_watch, live_service

pytestmark = pytest.mark.compat  # drives the official client from Node

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo"


def small_demo(target: Path) -> Path:
    shutil.copytree(DEMO, target)
    init = target / "sql" / "init_demo.sql"
    init.write_text(init.read_text("utf-8").replace("i < 2000000", "i < 2000"), "utf-8")
    return target / "exporter.toml"


async def test_demo_sales_group(tmp_path: Path) -> None:
    config = small_demo(tmp_path / "demo")
    body = {
        "mode": "SingleGroup",
        "selection": {
            "groups": [
                {
                    "groupId": "g-sales",
                    "enabled": True,
                    "scripts": [
                        {
                            "scriptId": "s-orders",
                            "enabled": True,
                            "exportMode": "CustomColumns",
                            "selectedColumnItemIds": ["customer", "order_id"],
                        },
                        {"scriptId": "s-customers", "enabled": True, "exportMode": "AllColumns"},
                        {"scriptId": "s-payments", "enabled": True, "exportMode": "AllColumns"},
                    ],
                }
            ]
        },
    }
    async with live_service(config, tmp_path / "data", database_id="db-test") as service:
        token = await service.login("USER1", "demo")
        async with hub_watch(service, token, create=body) as lines:
            pass
        run_id = next(line["runId"] for line in lines if line["type"] == "created")
        state = (await service.http.get(f"/api/runs/{run_id}", headers=bearer(token))).json()
        files = (await service.http.get(f"/api/runs/{run_id}/files", headers=bearer(token))).json()
        orders = next(f for f in files["files"] if f["scriptId"] == "s-orders")
        download = await service.http.get(orders["downloadUrl"], headers=bearer(token))

    assert events(lines, "run.updated", runId=run_id)[-1]["status"] == state["status"]
    scripts = {s["scriptId"]: s for s in state["groups"][0]["scripts"]}
    assert scripts["s-orders"]["status"] == "Success"
    assert scripts["s-customers"]["status"] == "Success"
    payments = [v["status"] for v in scripts["s-payments"]["variants"]]
    assert payments[2] == "NoData"  # the demo's "payments under review" finds nothing
    assert state["status"] == "Success"
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0] == ["OrderId", "Customer"]
    assert len(rows) - 1 == orders["rows"] > 0
