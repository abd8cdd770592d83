"""Request bodies as the tests and benchmarks send them: ``POST /api/auth/login`` and
``POST /api/runs`` (camelCase; every group and script enabled explicitly, as the console does)."""

from __future__ import annotations

from typing import Any


def login_body(
    username: str, password: str, database_id: str, stream_id: str = "s1"
) -> dict[str, str]:
    """A login with the database account ``username`` / ``password``, for manager m1 (every test
    catalog has it) and ``stream_id``."""
    return {
        "dbUsername": username,
        "dbPassword": password,
        "databaseId": database_id,
        "managerId": "m1",
        "streamId": stream_id,
    }


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
