"""Hub filters: code that runs around hub method invocations and the connection hooks.

ASP.NET Core's ``IHubFilter``. A filter is a :class:`HubFilter` subclass overriding any of
:meth:`~HubFilter.invoke_method`, :meth:`~HubFilter.on_connected` and
:meth:`~HubFilter.on_disconnected`; each gets the call's context and ``next``, the rest of the
pipeline (the next filter, and finally the hub itself). A filter may

* call ``next`` and return (or change) its result, or observe the exception it raises;
* change ``invocation.arguments`` before calling ``next``;
* not call ``next`` at all: return a result itself, or raise. A
  :class:`~signalr_core.HubException` reaches the client with its text
  (``... HubException: <text>``); any other exception is hidden unless detailed errors are on,
  exactly as if the hub method had raised it.

Filters are registered globally for an endpoint (``HubOptions(hub_filters=[...])``) or on the
hub class (``filters = [...]``, a class attribute); they run in that order, global ones first,
the first registered outermost, as ASP.NET runs global filters before hub-specific ones::

    class LogFilter(HubFilter):
        async def invoke_method(self, invocation, next):
            started = time.perf_counter()
            try:
                return await next(invocation)
            finally:
                log.info("hub_call", method=invocation.method_name,
                         ms=(time.perf_counter() - started) * 1000)

For a streaming method (an async generator, or a method returning an async iterator), ``next``
returns the stream object before any item is produced, as in ASP.NET (where the filter sees the
``IAsyncEnumerable``/``ChannelReader``): a filter can refuse the call or wrap the iterator, but
exceptions raised while items are produced do not pass through it. Client-to-server stream
arguments appear in ``invocation.arguments`` as the async iterators the method receives.

One filter instance serves every connection of the endpoint at once: keep per-call state in
locals, shared state (rate-limit counters) bounded and free of awaits between read and update.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from signalr_core.context import HubCallerContext

if TYPE_CHECKING:
    from signalr_core.hub import Hub, HubMethod

__all__ = [
    "DisconnectedNext",
    "FilterPipeline",
    "HubFilter",
    "HubInvocationContext",
    "HubLifetimeContext",
    "InvokeNext",
    "LifetimeNext",
]


@dataclass(kw_only=True, eq=False)
class HubInvocationContext:
    """One hub method invocation, as filters see it (ASP.NET's ``HubInvocationContext``).

    Attributes:
        hub: The hub instance that runs the method (a new one per invocation).
        context: The caller's :class:`~signalr_core.HubCallerContext`.
        method_name: The method's wire name (``@hub_method("Name")`` or the Python name).
        function: The hub method's Python function (look at its attributes to find your own
            decorators' marks, as ASP.NET filters look at the ``MethodInfo``'s attributes).
        arguments: The bound arguments, decoded to the parameters' types; a filter may replace
            items (or the list) before calling ``next``.
    """

    hub: Hub
    context: HubCallerContext
    method_name: str
    function: Callable[..., Any]
    arguments: list[Any]


@dataclass(kw_only=True, eq=False)
class HubLifetimeContext:
    """A connection's ``on_connected`` / ``on_disconnected``, as filters see it.

    Attributes:
        hub: The hub instance whose hook runs.
        context: The connection's :class:`~signalr_core.HubCallerContext`.
    """

    hub: Hub
    context: HubCallerContext


InvokeNext: TypeAlias = Callable[[HubInvocationContext], Awaitable[Any]]
"""The rest of the invocation pipeline: returns the method's result (or its stream)."""

LifetimeNext: TypeAlias = Callable[[HubLifetimeContext], Awaitable[None]]
"""The rest of the ``on_connected`` pipeline."""

DisconnectedNext: TypeAlias = Callable[[HubLifetimeContext, "Exception | None"], Awaitable[None]]
"""The rest of the ``on_disconnected`` pipeline."""


class HubFilter:
    """Base class of hub filters; every method passes the call on unchanged by default.

    Override what you need and call ``next`` (or not) as ASP.NET's ``IHubFilter``.
    """

    async def invoke_method(self, invocation: HubInvocationContext, next: InvokeNext) -> Any:
        """Around each hub method invocation; returns the result the client gets.

        Args:
            invocation: The method, its hub instance and its arguments.
            next: Calls the next filter, and finally the method.
        """
        return await next(invocation)

    async def on_connected(self, context: HubLifetimeContext, next: LifetimeNext) -> None:
        """Around the hub's ``on_connected``; raising closes the connection with an error."""
        await next(context)

    async def on_disconnected(
        self,
        context: HubLifetimeContext,
        error: Exception | None,
        next: DisconnectedNext,
    ) -> None:
        """Around the hub's ``on_disconnected`` (``error`` when the connection ended with one)."""
        await next(context, error)


async def _call_method(invocation: HubInvocationContext) -> Any:
    result = invocation.function(invocation.hub, *invocation.arguments)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _call_connected(context: HubLifetimeContext) -> None:
    await context.hub.on_connected()


async def _call_disconnected(context: HubLifetimeContext, error: Exception | None) -> None:
    await context.hub.on_disconnected(error)


def _wrap_invoke(hub_filter: HubFilter, inner: InvokeNext) -> InvokeNext:
    def call(invocation: HubInvocationContext) -> Awaitable[Any]:
        return hub_filter.invoke_method(invocation, inner)

    return call


def _wrap_connected(hub_filter: HubFilter, inner: LifetimeNext) -> LifetimeNext:
    def call(context: HubLifetimeContext) -> Awaitable[None]:
        return hub_filter.on_connected(context, inner)

    return call


def _wrap_disconnected(hub_filter: HubFilter, inner: DisconnectedNext) -> DisconnectedNext:
    def call(context: HubLifetimeContext, error: Exception | None) -> Awaitable[None]:
        return hub_filter.on_disconnected(context, error, inner)

    return call


class FilterPipeline:
    """The filters of one endpoint, chained once (not per call), outermost first."""

    __slots__ = ("_connected", "_disconnected", "_invoke", "filters")

    def __init__(self, filters: Sequence[HubFilter]) -> None:
        for hub_filter in filters:
            if not isinstance(hub_filter, HubFilter):
                raise TypeError(f"hub filters must be HubFilter instances, not {hub_filter!r}")
        self.filters = tuple(filters)
        invoke: InvokeNext = _call_method
        connected: LifetimeNext = _call_connected
        disconnected: DisconnectedNext = _call_disconnected
        for hub_filter in reversed(self.filters):
            invoke = _wrap_invoke(hub_filter, invoke)
            connected = _wrap_connected(hub_filter, connected)
            disconnected = _wrap_disconnected(hub_filter, disconnected)
        self._invoke = invoke
        self._connected = connected
        self._disconnected = disconnected

    @classmethod
    def build(cls, *groups: Sequence[HubFilter]) -> FilterPipeline | None:
        """A pipeline of every filter of ``groups`` in order; ``None`` when there are none."""
        filters = [hub_filter for group in groups for hub_filter in group]
        return cls(filters) if filters else None

    async def invoke(self, hub: Hub, method: HubMethod, arguments: list[Any]) -> Any:
        """Run ``method`` on ``hub`` through the filters; its result (or stream object)."""
        return await self._invoke(
            HubInvocationContext(
                hub=hub,
                context=hub.context,
                method_name=method.name,
                function=method.function,
                arguments=arguments,
            )
        )

    async def on_connected(self, hub: Hub) -> None:
        """Run ``hub.on_connected()`` through the filters."""
        await self._connected(HubLifetimeContext(hub=hub, context=hub.context))

    async def on_disconnected(self, hub: Hub, error: Exception | None) -> None:
        """Run ``hub.on_disconnected(error)`` through the filters."""
        await self._disconnected(HubLifetimeContext(hub=hub, context=hub.context), error)
