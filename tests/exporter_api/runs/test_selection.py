"""Selection validation against the bundled demo catalog (loaded by the real config loader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from exporter_api.config import ExportConfig, load_config
from exporter_api.errors import BadRequest
from exporter_api.runs.models import RunCreateRequest
from exporter_api.runs.selection import plan_run

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo" / "exporter.toml"


@pytest.fixture(scope="module")
def config() -> ExportConfig:
    return load_config(DEMO)


def request(mode: str, *groups: dict[str, Any]) -> RunCreateRequest:
    body = {"mode": mode, "selection": {"groups": list(groups)}}
    return msgspec.convert(body, RunCreateRequest)


def group(group_id: str, *scripts: dict[str, Any], enabled: bool = True) -> dict[str, Any]:
    return {"groupId": group_id, "enabled": enabled, "scripts": list(scripts)}


def script(
    script_id: str,
    *,
    enabled: bool = True,
    mode: str = "AllColumns",
    columns: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "scriptId": script_id,
        "enabled": enabled,
        "exportMode": mode,
        "selectedColumnItemIds": columns or [],
    }


def test_all_groups_in_catalog_order(config: ExportConfig) -> None:
    plan = plan_run(
        request(
            "AllGroups",
            group("g-big", script("s-ledger")),
            group("g-sales", script("s-payments"), script("s-orders"), script("s-customers")),
        ),
        config,
    )
    assert [g.group.id for g in plan.groups] == ["g-sales", "g-big"]
    assert [s.script.id for s in plan.scripts()] == [
        "s-orders",
        "s-customers",
        "s-payments",
        "s-ledger",
    ]
    lanes = plan.lanes()
    assert [s.script.id for s in lanes[0]] == ["s-orders", "s-ledger"]
    assert [s.script.id for s in lanes[1]] == ["s-customers"]
    # AllColumns exports every profile item in profile order
    orders = plan.scripts()[0]
    assert orders.export_mode == "AllColumns"
    assert [c.id for c in orders.columns] == [
        "order_id",
        "customer",
        "order_date",
        "city",
        "amount",
        "status",
    ]


def test_disabled_groups_and_scripts_are_skipped(config: ExportConfig) -> None:
    plan = plan_run(
        request(
            "AllGroups",
            group("g-big", script("s-ledger"), enabled=False),
            group("g-sales", script("s-orders", enabled=False), script("s-customers")),
        ),
        config,
    )
    assert [s.script.id for s in plan.scripts()] == ["s-customers"]


def test_custom_columns_in_profile_order(config: ExportConfig) -> None:
    plan = plan_run(
        request(
            "SingleScript",
            group(
                "g-sales", script("s-orders", mode="CustomColumns", columns=["amount", "order_id"])
            ),
        ),
        config,
    )
    (only,) = plan.scripts()
    assert only.export_mode == "CustomColumns"
    assert [(c.id, c.label) for c in only.columns] == [
        ("order_id", "OrderId"),
        ("amount", "Amount"),
    ]


def test_custom_columns_need_columns(config: ExportConfig) -> None:
    with pytest.raises(BadRequest) as err:
        plan_run(
            request("SingleScript", group("g-sales", script("s-orders", mode="CustomColumns"))),
            config,
        )
    assert err.value.field == "selection.groups[0].scripts[0].selectedColumnItemIds"


def test_unknown_ids_are_named(config: ExportConfig) -> None:
    with pytest.raises(BadRequest) as err:
        plan_run(request("AllGroups", group("g-nope"), group("g-what")), config)
    assert "'g-nope'" in err.value.detail
    assert "'g-what'" in err.value.detail
    with pytest.raises(BadRequest) as err:
        plan_run(request("AllGroups", group("g-sales", script("s-ledger"), script("zz"))), config)
    assert "g-sales/s-ledger" in err.value.detail
    assert "g-sales/zz" in err.value.detail
    with pytest.raises(BadRequest) as err:
        plan_run(
            request(
                "AllGroups",
                group("g-sales", script("s-orders", mode="CustomColumns", columns=["x", "amount"])),
            ),
            config,
        )
    assert "s-orders/x" in err.value.detail
    assert "amount" not in err.value.detail


def test_wrong_modes(config: ExportConfig) -> None:
    with pytest.raises(BadRequest) as err:
        plan_run(request("Everything", group("g-sales", script("s-orders"))), config)
    assert err.value.field == "mode"
    with pytest.raises(BadRequest) as err:
        plan_run(request("AllGroups", group("g-sales", script("s-orders", mode="Some"))), config)
    assert err.value.field == "selection.groups[0].scripts[0].exportMode"


def test_single_group_needs_exactly_one_group(config: ExportConfig) -> None:
    both = request(
        "SingleGroup", group("g-sales", script("s-orders")), group("g-big", script("s-ledger"))
    )
    with pytest.raises(BadRequest, match="exactly one enabled group"):
        plan_run(both, config)
    one = request(
        "SingleGroup",
        group("g-sales", script("s-orders"), script("s-payments")),
        group("g-big", script("s-ledger"), enabled=False),
    )
    assert [s.script.id for s in plan_run(one, config).scripts()] == ["s-orders", "s-payments"]


def test_single_script_needs_exactly_one_script(config: ExportConfig) -> None:
    two = request("SingleScript", group("g-sales", script("s-orders"), script("s-payments")))
    with pytest.raises(BadRequest, match="exactly one enabled script"):
        plan_run(two, config)


def test_nothing_enabled(config: ExportConfig) -> None:
    with pytest.raises(BadRequest, match="enables no script"):
        plan_run(request("AllGroups", group("g-sales", script("s-orders", enabled=False))), config)


def test_duplicates_are_refused(config: ExportConfig) -> None:
    with pytest.raises(BadRequest, match="listed twice"):
        plan_run(
            request("AllGroups", group("g-sales", script("s-orders"), script("s-orders"))), config
        )


def test_format_is_checked_and_planned(config: ExportConfig) -> None:
    with pytest.raises(BadRequest) as err:
        plan_run(
            request("AllGroups", group("g-sales", {"scriptId": "s-orders", "format": "pdf"})),
            config,
        )
    assert err.value.field == "selection.groups[0].scripts[0].format"
    assert err.value.detail == "format must be one of csv, csv.gz, xlsx, not 'pdf'"
    plan = plan_run(
        request(
            "AllGroups",
            group(
                "g-sales",
                {"scriptId": "s-orders", "format": "xlsx"},
                {"scriptId": "s-customers", "format": "csv.gz"},
                {"scriptId": "s-payments"},
            ),
        ),
        config,
    )
    assert [s.format for s in plan.scripts()] == ["xlsx", "csv.gz", None]


def test_xlsx_of_more_columns_than_a_sheet_holds_is_refused_before_the_run() -> None:
    config = load_config(DEMO)  # its own: the profile is changed below
    profile = config.profile("orders_cols")
    assert profile is not None
    template = profile.items[0]
    profile.items = [
        msgspec.structs.replace(template, id=f"c{i}", label=f"C{i}") for i in range(16_385)
    ]
    body = group("g-sales", {"scriptId": "s-orders", "format": "xlsx"})
    with pytest.raises(BadRequest) as err:
        plan_run(request("AllGroups", body), config)
    assert err.value.field == "selection.groups.scripts.format"
    assert "16,385 columns" in err.value.detail
    csv_body = group("g-sales", {"scriptId": "s-orders", "format": "csv"})
    assert len(plan_run(request("AllGroups", csv_body), config).scripts()[0].columns) == 16_385
