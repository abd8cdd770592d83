"""``POST /api/runs`` bodies as the tests and benchmarks send them (camelCase, every group and
script enabled explicitly, as the console sends them)."""

from __future__ import annotations

from typing import Any


def script(script_id: str, *columns: str, **extra: Any) -> dict[str, Any]:
    """One enabled script: every column, or only ``columns`` (item ids, in that order);
    ``extra`` adds fields (``format="xlsx"``)."""
    chosen: dict[str, Any] = (
        {"exportMode": "CustomColumns", "selectedColumnItemIds": list(columns)}
        if columns
        else {"exportMode": "AllColumns"}
    )
    return {"scriptId": script_id, "enabled": True, **chosen, **extra}


def group(group_id: str, *scripts: dict[str, Any]) -> dict[str, Any]:
    """One enabled group with ``scripts`` (see `script`)."""
    return {"groupId": group_id, "enabled": True, "scripts": list(scripts)}


def run_body(mode: str, *groups: dict[str, Any]) -> dict[str, Any]:
    """A run of ``groups`` (see `group`) in ``mode`` (AllGroups, SingleGroup, SingleScript)."""
    return {"mode": mode, "selection": {"groups": list(groups)}}
