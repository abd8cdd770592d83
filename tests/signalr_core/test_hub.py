"""Hub method discovery: names, parameters, streams, authorization marks."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec
import pytest

from signalr_core import Hub, hub_method
from signalr_core.hub import discover_methods, normalize_name


class Point(msgspec.Struct):
    x: int
    y: int


class Base(Hub):
    def inherited(self) -> str:
        return "base"

    def overridden(self) -> str:
        return "base"


class Sample(Base):
    def overridden(self) -> str:
        return "sample"

    async def send_message(self, user: str, message: str, point: Point) -> None: ...

    def with_default(self, a: int, b: int = 2) -> int:
        return a + b

    async def numbers(self, count: int) -> AsyncIterator[int]:
        for i in range(count):
            yield i

    def generator_typed(self) -> AsyncGenerator[str, None]:
        raise NotImplementedError

    async def upload(self, prefix: str, items: AsyncIterator[Point]) -> str:
        return prefix

    def untyped(self, value):  # type: ignore[no-untyped-def]
        return value

    @hub_method("Renamed", authorize=True)
    def python_name(self) -> None: ...

    @hub_method
    def _private_but_marked(self) -> None: ...

    def _private(self) -> None: ...


def test_discovery_finds_public_subclass_methods_only() -> None:
    methods = discover_methods(Sample)
    assert set(methods) == {
        "inherited",
        "overridden",
        "sendmessage",
        "withdefault",
        "numbers",
        "generatortyped",
        "upload",
        "untyped",
        "renamed",
        "privatebutmarked",
    }
    assert methods["overridden"].function is Sample.overridden
    assert "onconnected" not in methods
    assert "ondisconnected" not in methods


def test_parameters_and_kinds() -> None:
    methods = discover_methods(Sample)
    send = methods[normalize_name("SendMessage")]
    assert [p.type for p in send.value_parameters] == [str, str, Point]
    assert send.is_coroutine
    assert not send.is_stream_response
    assert not send.is_stream_call
    default = methods["withdefault"]
    assert default.required_arguments == 1
    assert len(default.value_parameters) == 2
    assert methods["numbers"].is_stream_response
    assert methods["generatortyped"].is_stream_response
    upload = methods["upload"]
    assert upload.is_stream_call
    assert [p.type for p in upload.stream_parameters] == [Point]
    assert [p.type for p in upload.value_parameters] == [str]
    assert methods["untyped"].value_parameters[0].type is Any
    renamed = methods["renamed"]
    assert renamed.name == "Renamed"
    assert renamed.authorize is True


def test_duplicate_wire_names_are_rejected() -> None:
    class Clash(Hub):
        def send_message(self) -> None: ...

        @hub_method("SendMessage")
        def other(self) -> None: ...

    with pytest.raises(TypeError, match="Duplicate definitions of 'SendMessage'"):
        discover_methods(Clash)


def test_keyword_only_parameters_are_rejected() -> None:
    class Bad(Hub):
        def method(self, *, value: int) -> None: ...

    with pytest.raises(TypeError, match="positional"):
        discover_methods(Bad)


def test_not_a_hub() -> None:
    with pytest.raises(TypeError):
        discover_methods(object)  # type: ignore[arg-type]
