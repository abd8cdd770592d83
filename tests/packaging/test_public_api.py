"""signalr_core's public API is its ``__all__``: every name has a docstring (and so does each
public method of a class) and is listed in the reference page, docs/signalr_core.md."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import signalr_core

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = (ROOT / "docs" / "signalr_core.md").read_text()
PUBLIC = sorted(signalr_core.__all__)


def test_all_names_exist_and_are_unique() -> None:
    assert len(PUBLIC) == len(set(PUBLIC))
    missing = [name for name in PUBLIC if not hasattr(signalr_core, name)]
    assert not missing


@pytest.mark.parametrize("name", PUBLIC)
def test_listed_in_the_reference(name: str) -> None:
    assert f"`{name}`" in REFERENCE, f"docs/signalr_core.md does not mention `{name}`"


@pytest.mark.parametrize("name", PUBLIC)
def test_documented(name: str) -> None:
    obj = getattr(signalr_core, name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return  # type aliases (HubMessage, Authenticator, LoggerFactory): described in the page
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    if inspect.isclass(obj):
        for attr, value in vars(obj).items():
            function = value.fget if isinstance(value, property) else value
            if attr.startswith("_") or not inspect.isfunction(function):
                continue
            assert inspect.getdoc(getattr(obj, attr)), f"{name}.{attr} has no docstring"
