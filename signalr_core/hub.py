"""The :class:`Hub` base class, the :func:`hub_method` decorator and method discovery.

A hub class is inspected once, when its endpoint is created: every public function defined on
the subclass (not on :class:`Hub` itself) becomes invocable. Wire names match
case-insensitively with underscores ignored, so ``send_message`` answers ``SendMessage``;
``@hub_method("Name")`` sets the wire name explicitly. Parameter annotations (resolved with
:func:`typing.get_type_hints`) tell the protocol how to decode each argument; an async
generator streams results to the client; a parameter annotated ``AsyncIterator[T]`` receives a
client-to-server stream.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, overload

from signalr_core.context import HubCallerContext, Principal

if TYPE_CHECKING:
    from signalr_core.clients import GroupManager, HubCallerClients
    from signalr_core.filters import HubFilter

__all__ = [
    "AuthorizePolicy",
    "Hub",
    "HubAuthorizePolicy",
    "HubMethod",
    "ParameterInfo",
    "UserPolicy",
    "discover_methods",
    "hub_method",
]

AuthorizePolicy = bool | Callable[[HubCallerContext], bool]
"""``True`` requires an authenticated user; a callable decides from the caller context."""


class UserPolicy(Protocol):
    """A hub-wide authorization check of the authenticated user (see ``Hub.authorize``)."""

    def __call__(self, user: Principal, /) -> bool: ...


HubAuthorizePolicy = bool | UserPolicy
"""A hub's ``authorize``: ``True`` refuses anonymous requests (401); a callable also refuses
(403) an authenticated user it returns ``False`` for, as ASP.NET's ``[Authorize(Roles=...)]``."""

_F = TypeVar("_F", bound=Callable[..., Any])
_ATTR = "__signalr_hub_method__"
_STREAM_ORIGINS = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
)


@dataclass(frozen=True)
class _HubMethodMark:
    name: str | None
    authorize: AuthorizePolicy


class Hub:
    """Base class of hubs. A new instance serves each invocation and lifecycle event.

    Attributes:
        authorize: Class attribute; ``True`` refuses anonymous connections (401); a
            ``staticmethod`` ``(Principal) -> bool`` also refuses authenticated users it
            returns ``False`` for (403 ``Forbidden``).
        filters: Class attribute; :class:`~signalr_core.HubFilter` instances run around
            this hub's invocations and hooks, after the endpoint's ``HubOptions.hub_filters``.
        context: The caller's :class:`~signalr_core.HubCallerContext`.
        clients: :class:`~signalr_core.clients.HubCallerClients` (all, caller, others, ...).
        groups: :class:`~signalr_core.clients.GroupManager` (``await add(id, group)``).
    """

    authorize: ClassVar[HubAuthorizePolicy] = False
    filters: ClassVar[Sequence[HubFilter]] = ()

    context: HubCallerContext
    clients: HubCallerClients
    groups: GroupManager

    async def on_connected(self) -> None:
        """Called after the handshake; raising here closes the connection with an error."""

    async def on_disconnected(self, error: Exception | None) -> None:
        """Called once when the connection ends (``error`` when it ended with one)."""


@overload
def hub_method(name: _F, /) -> _F: ...
@overload
def hub_method(
    name: str | None = None, /, *, authorize: AuthorizePolicy = False
) -> Callable[[_F], _F]: ...
def hub_method(
    name: str | _F | None = None, /, *, authorize: AuthorizePolicy = False
) -> _F | Callable[[_F], _F]:
    """Mark a hub method: explicit wire name and/or per-method authorization.

    Usable bare (``@hub_method``) or with arguments (``@hub_method("Echo", authorize=True)``).
    """
    if callable(name):
        setattr(name, _ATTR, _HubMethodMark(None, authorize))
        return name

    def decorate(func: _F) -> _F:
        setattr(func, _ATTR, _HubMethodMark(name, authorize))
        return func

    return decorate


def normalize_name(name: str) -> str:
    """The lookup key of a wire name: case-insensitive, underscores ignored."""
    return name.replace("_", "").lower()


@dataclass(frozen=True, slots=True)
class ParameterInfo:
    """One parameter of a hub method.

    Attributes:
        name: Python parameter name.
        type: The annotation arguments are decoded to (``Any`` when unannotated).
        is_stream: The parameter receives a client-to-server stream of ``type`` items.
        has_default: The invocation may omit it.
    """

    name: str
    type: Any
    is_stream: bool
    has_default: bool


@dataclass(frozen=True, slots=True)
class HubMethod:
    """A discovered hub method and how to bind an invocation to it."""

    name: str
    function: Callable[..., Any]
    parameters: tuple[ParameterInfo, ...]
    value_parameters: tuple[ParameterInfo, ...]
    stream_parameters: tuple[ParameterInfo, ...]
    required_arguments: int
    is_coroutine: bool
    is_stream_response: bool
    authorize: AuthorizePolicy

    @property
    def is_stream_call(self) -> bool:
        """The method takes client-to-server streams."""
        return bool(self.stream_parameters)


def _stream_item_type(annotation: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(annotation)
    if origin in _STREAM_ORIGINS or annotation in _STREAM_ORIGINS:
        args = typing.get_args(annotation)
        return True, (args[0] if args else Any)
    return False, annotation


def _describe(name: str, func: Callable[..., Any], mark: _HubMethodMark | None) -> HubMethod:
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise TypeError(f"cannot resolve the annotations of hub method {name!r}: {exc}") from exc
    signature = inspect.signature(func)
    params: list[ParameterInfo] = []
    for index, param in enumerate(signature.parameters.values()):
        if index == 0:
            continue  # self
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.KEYWORD_ONLY):
            raise TypeError(f"hub method {name!r}: only positional parameters are supported")
        annotation = hints.get(param.name, Any)
        is_stream, item_type = _stream_item_type(annotation)
        params.append(
            ParameterInfo(
                name=param.name,
                type=item_type,
                is_stream=is_stream,
                has_default=param.default is not param.empty,
            )
        )
    value_params = tuple(p for p in params if not p.is_stream)
    returns = hints.get("return")
    is_stream_response = inspect.isasyncgenfunction(func) or (
        returns is not None and _stream_item_type(returns)[0]
    )
    return HubMethod(
        name=name,
        function=func,
        parameters=tuple(params),
        value_parameters=value_params,
        stream_parameters=tuple(p for p in params if p.is_stream),
        required_arguments=sum(1 for p in value_params if not p.has_default),
        is_coroutine=inspect.iscoroutinefunction(func),
        is_stream_response=is_stream_response,
        authorize=mark.authorize if mark is not None else False,
    )


def discover_methods(hub_class: type[Hub]) -> Mapping[str, HubMethod]:
    """Find the invocable methods of ``hub_class``, keyed by :func:`normalize_name`.

    Raises:
        TypeError: ``hub_class`` is not a Hub, two methods share a wire name, or a method's
            signature cannot be bound.
    """
    if not (isinstance(hub_class, type) and issubclass(hub_class, Hub)):
        raise TypeError("hub_class must be a subclass of signalr_core.Hub")
    reserved = set(vars(Hub))
    methods: dict[str, HubMethod] = {}
    seen: set[str] = set()
    for klass in hub_class.__mro__:
        if klass is Hub or klass is object or not issubclass(klass, Hub):
            continue
        for attr, value in vars(klass).items():
            if attr in seen:
                continue  # overridden in a subclass: the subclass's definition was taken
            seen.add(attr)
            if not inspect.isfunction(value):
                continue
            mark: _HubMethodMark | None = getattr(value, _ATTR, None)
            if mark is None and (attr.startswith("_") or attr in reserved):
                continue
            wire_name = mark.name if mark is not None and mark.name else attr
            key = normalize_name(wire_name)
            if key in methods:
                raise TypeError(
                    f"Duplicate definitions of '{wire_name}'. Overloading is not supported."
                )
            methods[key] = _describe(wire_name, value, mark)
    return methods
