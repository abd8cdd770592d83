"""The aggregation rules over every combination of child statuses."""

from __future__ import annotations

import itertools

import pytest

from exporter_api.runs.models import STATUSES, GroupState, ScriptState, Status, VariantState
from exporter_api.runs.status import (
    aggregate_status,
    group_status,
    is_active,
    run_status,
    script_status,
)


def _expected_script(variants: tuple[Status, ...]) -> Status:
    # The contract's rules, spelled out independently of the implementation.
    s = set(variants)
    if "Failed" in s:
        return "Failed"
    if all(v == "NoData" for v in variants):
        return "NoData"
    if all(v == "Success" for v in variants):
        return "Success"
    if "Running" in s:
        return "Running"
    if "Cancelled" in s:
        return "Cancelled"
    if "Queued" in s:
        return "Queued"
    assert s == {"Success", "NoData"}
    return "Success"


def _expected_aggregate(children: tuple[Status, ...]) -> Status:
    if all(c == "Queued" for c in children):
        return "Queued"
    if any(c in ("Queued", "Running") for c in children):
        return "Running"
    if "Failed" in children:
        return "Failed"
    if "Cancelled" in children:
        return "Cancelled"
    if all(c == "NoData" for c in children):
        return "NoData"
    return "Success"


ALL_COMBINATIONS = [combo for n in (1, 2, 3, 4) for combo in itertools.product(STATUSES, repeat=n)]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_script_status_every_combination(n: int) -> None:
    for combo in itertools.product(STATUSES, repeat=n):
        assert script_status(combo) == _expected_script(combo), combo
        # order of the variants never matters
        assert script_status(reversed(combo)) == script_status(combo)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_aggregate_status_every_combination(n: int) -> None:
    for combo in itertools.product(STATUSES, repeat=n):
        assert aggregate_status(combo) == _expected_aggregate(combo), combo


def test_script_examples_from_the_contract() -> None:
    assert script_status(["Success", "Failed", "NoData"]) == "Failed"
    assert script_status(["NoData", "NoData", "NoData"]) == "NoData"
    assert script_status(["Success", "Success", "Success"]) == "Success"
    assert script_status(["Success", "Running", "Queued"]) == "Running"
    assert script_status(["Success", "NoData", "NoData"]) == "Success"
    assert script_status(["Success", "Cancelled", "Cancelled"]) == "Cancelled"
    assert script_status(["Queued", "Queued", "Queued"]) == "Queued"


def test_aggregate_examples() -> None:
    assert aggregate_status(["Queued", "Queued"]) == "Queued"
    assert aggregate_status(["Success", "Queued"]) == "Running"
    assert aggregate_status(["Failed", "Running"]) == "Running"
    assert aggregate_status(["Success", "Cancelled", "Failed"]) == "Failed"
    assert aggregate_status(["Success", "Cancelled"]) == "Cancelled"
    assert aggregate_status(["Success", "NoData"]) == "Success"
    assert aggregate_status(["NoData", "NoData"]) == "NoData"


def test_empty_is_nodata() -> None:
    assert script_status([]) == "NoData"
    assert aggregate_status([]) == "NoData"


def test_final_states_are_final_after_aggregation() -> None:
    # Once every child is final, the aggregate is final too (nothing stays Running forever).
    for combo in ALL_COMBINATIONS:
        if not any(is_active(c) for c in combo):
            assert not is_active(script_status(combo)), combo
            assert not is_active(aggregate_status(combo)), combo
        else:
            assert is_active(aggregate_status(combo)), combo


def _script(script_id: str, *variants: Status) -> ScriptState:
    return ScriptState(
        script_id=script_id,
        display_name=script_id,
        execution_lane=0,
        export_mode="AllColumns",
        columns=None,
        status=script_status(variants),
        variants=[VariantState(variant=i, status=v) for i, v in enumerate(variants, 1)],
    )


def test_a_failed_script_with_a_running_variant_keeps_group_and_run_running() -> None:
    # A failed variant makes its script Failed at once, but the group and the run are not over
    # while a later variant of that script still runs.
    script = _script("s", "Success", "Failed", "Running")
    assert script.status == "Failed"
    assert group_status([script]) == "Running"
    group = GroupState(group_id="g", display_name="g", status=group_status([script]))
    done = GroupState(group_id="h", display_name="h", status="Success")
    assert run_status([group, done]) == "Running"
    # same with a later variant still waiting, and next to a finished script
    assert group_status([_script("a", "Failed", "Queued"), _script("b", "Success")]) == "Running"
    # once every variant ended, the worst outcome wins
    assert group_status([_script("s", "Success", "Failed", "Success")]) == "Failed"
    assert group_status([_script("s", "Success", "Failed", "Cancelled")]) == "Failed"
    # nothing started yet is still Queued
    assert group_status([_script("a", "Queued"), _script("b", "Queued", "Queued")]) == "Queued"
    # a script taken over after its first variant ended waits again: its run has started
    waiting = _script("a", "Success", "Queued")
    assert waiting.status == "Queued"
    assert group_status([waiting]) == "Running"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_group_status_is_running_while_any_variant_is_active(n: int) -> None:
    for combo in itertools.product(STATUSES, repeat=n):
        scripts = [_script("a", *combo), _script("b", "Success")]
        if any(is_active(v) for v in combo):
            assert group_status(scripts) == "Running", combo
        else:
            assert not is_active(group_status(scripts)), combo
