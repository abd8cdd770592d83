"""Invocations and streams of one hub connection: workers, streams both ways, cancellation.

Theory of operation
===================

The message loop of a :class:`~signalr_core.dispatcher.HubServerConnection` (its
:class:`~signalr_core._session.Session`) hands every ``Invocation``, ``StreamInvocation``,
``StreamItem``, ``CancelInvocation`` and (when it answers no client result) ``Completion`` to
the connection's :class:`Invocations`, made when the handshake succeeded. It knows the
connection only through :class:`InvocationHost`, the message loop through
:class:`MessageLoop` and the endpoint's method table through :class:`MethodTable` (no import
of the dispatcher or the session):

* an invocation is looked up, its arguments decoded with the target's signature and checked
  (count, types, authorization, streaming or not, stream ids), with ASP.NET's error texts;
* a **plain function** without stream parameters runs at once in the message loop (it cannot
  suspend: no task switch) while a worker slot is free and no hub filter is configured;
* other non-streaming invocations go to ``max_parallel_invocations`` **workers**, started by the
  first job, which share one zero-capacity stream: the loop waits when all are busy (ASP.NET's
  invocation limit) without a task per message;
* one task per **server-to-client stream** and per method taking **client-to-server streams**
  (they do not count against the limit, as in ASP.NET); each stream has its own cancel scope
  for ``CancelInvocation``; stream items wait for room in the outgoing and replay buffers;
* **upload streams** (:mod:`signalr_core._uploads`, made by the first method taking one): a
  bounded memory stream per stream id; the client's ``Completion`` for it ends the hub
  method's iteration (with ``ClientStreamError`` when it carries an error).

A worker waiting for a client result lends its slot (:mod:`signalr_core._results`).

Error texts follow ASP.NET Core's ``DefaultHubDispatcher`` and ``ErrorMessageHelper``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from signalr_core._results import Loan, WorkerSlot, current_worker
from signalr_core._uploads import ClientStreamError, Uploads
from signalr_core.errors import (
    ClientResultError,
    ClientResultsNotAllowedError,
    ClientUnavailableError,
    HubException,
    InvocationError,
    MessageEncodeError,
    ProtocolError,
)
from signalr_core.hub import Hub, HubMethod
from signalr_core.messages import (
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

if TYPE_CHECKING:
    from signalr_core._sequencing import Sequencing
    from signalr_core.context import HubCallerContext, Principal
    from signalr_core.filters import FilterPipeline
    from signalr_core.options import HubOptions
    from signalr_core.protocols import HubProtocol
    from signalr_core.transports import OutgoingBuffer

__all__ = [
    "InvocationHost",
    "Invocations",
    "MessageLoop",
    "MethodTable",
    "build_error_message",
    "exception_name",
]

_BINDING_MISMATCH: Final = (
    "Error binding arguments. Make sure that the types of the provided values match the types "
    "of the hub method being invoked."
)


def exception_name(exc: BaseException) -> str:
    """The type name ASP.NET would show for ``exc`` in a detailed error."""
    if isinstance(exc, ClientResultError):
        return "HubException"  # ASP.NET throws HubException with the client's error text
    if isinstance(exc, ClientUnavailableError):
        return "IOException"
    if isinstance(exc, ClientResultsNotAllowedError):
        return "InvalidOperationException"
    if isinstance(exc, ProtocolError):
        return "InvalidDataException"  # what ASP.NET's protocol readers throw
    if isinstance(exc, ClientStreamError):
        return "HubException"
    return type(exc).__name__


def _failed_to_invoke(target: str) -> str:
    return f"Failed to invoke '{target}' due to an error on the server."


def build_error_message(message: str, exc: BaseException, detailed: bool) -> str:
    """ASP.NET's ``ErrorMessageHelper``: a HubException's text always shows, others if detailed."""
    if isinstance(exc, HubException) or detailed:
        return f"{message} {exception_name(exc)}: {exc}"
    return message


def _check(
    message: InvocationMessage | StreamInvocationMessage,
    method: HubMethod | None,
    protocol: HubProtocol,
    detailed: bool,
    authorized: Callable[[HubMethod], bool],
) -> list[Any] | str:
    """An invocation's decoded arguments, once arguments, authorization and streams are
    checked; or the error text to answer with (ASP.NET's)."""
    target = message.target
    is_stream_response = isinstance(message, StreamInvocationMessage)
    if method is None:
        return f"{_failed_to_invoke(target)} HubException: Method does not exist."
    arguments = message.arguments
    expected = len(method.value_parameters)
    if not method.required_arguments <= len(arguments) <= expected:
        detail = f"Invocation provides {len(arguments)} argument(s) but target expects {expected}."
        return (
            f"{_failed_to_invoke(target)} InvalidDataException: {detail}"
            if detailed
            else _failed_to_invoke(target)
        )
    try:
        values = [
            protocol.decode_argument(raw, param.type)
            for raw, param in zip(arguments, method.value_parameters, strict=False)
        ]
    except InvocationError:
        return (
            f"{_failed_to_invoke(target)} InvalidDataException: {_BINDING_MISMATCH}"
            if detailed
            else _failed_to_invoke(target)
        )
    if not authorized(method):
        return f"Failed to invoke '{target}' because user is unauthorized"
    if method.is_stream_response and not is_stream_response:
        return (
            f"The client attempted to invoke the streaming '{target}' method with a "
            "non-streaming invocation."
        )
    if not method.is_stream_response and is_stream_response:
        return (
            f"The client attempted to invoke the non-streaming '{target}' method with a "
            "streaming invocation."
        )
    stream_ids = message.stream_ids
    if len(stream_ids) != len(method.stream_parameters):
        exc = HubException(
            f"Client sent {len(stream_ids)} stream(s), Hub method expects "
            f"{len(method.stream_parameters)}."
        )
        return _unexpected(target, exc, detailed)
    return values


def _unexpected(target: str, exc: Exception, detailed: bool) -> str:
    """The Completion error of an invocation of ``target`` that raised ``exc``."""
    return build_error_message(
        f"An unexpected error occurred invoking '{target}' on the server.", exc, detailed
    )


class InvocationHost(Protocol):
    """What the invocation path needs of its connection (``HubServerConnection``).

    Attributes:
        protocol: The negotiated hub protocol (set by the handshake, before any invocation).
        user: The authenticated user, ``None`` when anonymous.
        context: The hub caller context (given to authorization policies).
        outgoing: The bounded outgoing buffer (server-to-client streams wait for room in it).
    """

    protocol: HubProtocol | None
    user: Principal | None
    context: HubCallerContext | None
    outgoing: OutgoingBuffer

    @property
    def log(self) -> Any:
        """The connection's logger, bound to its id."""

    @property
    def sequencing(self) -> Sequencing | None:
        """Stateful reconnect's sequencing (``None`` unless active)."""

    def send(self, message: HubMessage) -> None:
        """Encode and queue ``message`` without blocking (dropped once the connection closes)."""

    def wait_replay_space(self) -> Awaitable[None]:
        """Wait while the replay buffer is more than half full (stream backpressure)."""

    def new_hub(self) -> Hub:
        """A hub instance for one invocation, bound to the connection."""


class MessageLoop(Protocol):
    """The message loop that hands messages to :class:`Invocations` (the connection's run)."""

    def writing_while(self, blocked: Awaitable[None]) -> Awaitable[None]:
        """Await ``blocked`` while frames keep going out (the loop may be the writer)."""


class MethodTable(Protocol):
    """What the invocation path needs of the endpoint (``HubDispatcher``).

    Attributes:
        options: The endpoint's hub options.
        filters: The hub filter chain, ``None`` without filters (methods are then called
            directly).
    """

    options: HubOptions
    filters: FilterPipeline | None

    def lookup(self, target: str) -> HubMethod | None:
        """The method a wire target names."""


_Job = tuple[HubMethod, InvocationMessage, list[Any]]


class AwaitedAnswer:
    """The answer to a plain function's invocation that returned an awaitable: await it to
    send the answer; `close` when it will never be awaited (the connection ended first)."""

    __slots__ = ("_invocations", "message", "result")

    def __init__(
        self, invocations: Invocations, message: InvocationMessage, result: Awaitable[Any]
    ) -> None:
        self._invocations = invocations
        self.message = message
        self.result = result

    def __await__(self) -> Generator[Any, None, None]:
        return self._invocations._answer_awaited(self.message, self.result).__await__()

    def close(self) -> None:
        if inspect.iscoroutine(self.result):
            self.result.close()  # the function's own coroutine: never awaited, no warning


class Invocations:
    """One connection's invocations and streams (made when its handshake succeeded).

    Args:
        host: The connection.
        methods: The endpoint's methods, filters and options.
        tg: The connection's task group: workers and streams run in it, so closing the
            connection cancels them.
        loop: The message loop (it writes while it waits for a worker or an upload stream).

    Workers start with the first job that needs one: an idle connection has none.
    """

    __slots__ = (
        "_busy",
        "_host",
        "_loop",
        "_methods",
        "_options",
        "_send",
        "_streams",
        "_tg",
        "_uploads",
        "receive",
    )

    def __init__(
        self,
        host: InvocationHost,
        methods: MethodTable,
        tg: anyio.abc.TaskGroup,
        loop: MessageLoop,
    ) -> None:
        self._host = host
        self._loop = loop
        self._methods = methods
        self._options = methods.options
        self._tg: anyio.abc.TaskGroup | None = tg
        self._busy = 0
        self._send: MemoryObjectSendStream[_Job] | None = None
        self.receive: MemoryObjectReceiveStream[_Job] | None = None
        self._streams: dict[str, anyio.CancelScope] = {}
        self._uploads: Uploads | None = None  # made by the first method taking a stream

    # -- from the message loop -----------------------------------------------------------------

    def invoke_now(self, message: InvocationMessage) -> bool | AwaitedAnswer:
        """Answer an invocation of a plain function at once, without suspending, so any task
        may call it (the message loop, or the transport's task when the loop is idle).

        Returns ``False`` when the invocation is not one for this (nothing was done: a
        coroutine, hub filters, a busy worker limit, upload streams), ``True`` when it was
        answered, or the awaitable the function returned, to await before anything else (its
        result is the answer).
        """
        if message.stream_ids:
            return False
        method = self._methods.lookup(message.target)
        if method is not None and not (
            not method.is_coroutine
            and self._busy < self._options.max_parallel_invocations
            and self._methods.filters is None  # filters may suspend
        ):
            return False
        values = self._checked(message, method)
        if values is None or method is None:
            return True
        try:
            result = method.function(self._host.new_hub(), *values)
        except Exception as exc:
            self._failed(message, exc)
            return True
        if inspect.isawaitable(result):
            return AwaitedAnswer(self, message, result)
        self._answer(message, result)
        return True

    async def on_invocation(self, message: InvocationMessage | StreamInvocationMessage) -> None:
        """Check an invocation and run it (at once, on a worker or in a task of its own)."""
        if isinstance(message, InvocationMessage):
            now = self.invoke_now(message)
            if now is not False:
                if now is not True:
                    await now
                return
        method = self._methods.lookup(message.target)
        values = self._checked(message, method)
        if values is None or method is None:
            return
        stream_ids = message.stream_ids
        if isinstance(message, InvocationMessage) and not stream_ids:
            # Counted before the hand-over: a later plain function in the same chunk must not
            # run at once before the worker has started this one (order is kept).
            self._busy += 1
            try:
                await self._to_worker((method, message, values))
            except BaseException:
                self._busy -= 1
                raise
            return
        invocation_id = message.invocation_id
        if isinstance(message, StreamInvocationMessage) and invocation_id in self._streams:
            self._send_error(invocation_id, f"Invocation ID '{invocation_id}' is already in use.")
            return
        tg = self._tg
        assert tg is not None
        args = values
        if stream_ids:
            uploads = self._uploads
            if uploads is None:
                uploads = self._uploads = Uploads(self._options.stream_buffer_capacity)
            args = uploads.bind(method, values, stream_ids)
        if isinstance(message, StreamInvocationMessage):
            scope = anyio.CancelScope()
            self._streams[message.invocation_id] = scope
            tg.start_soon(self._run_stream, method, message, args, scope)
        else:
            tg.start_soon(self._run_invocation, method, message, args)

    def _checked(
        self, message: InvocationMessage | StreamInvocationMessage, method: HubMethod | None
    ) -> list[Any] | None:
        """The decoded arguments; ``None`` when refused (answered with ASP.NET's error)."""
        protocol = self._host.protocol
        assert protocol is not None
        detailed = self._options.enable_detailed_errors
        checked = _check(message, method, protocol, detailed, self._authorized)
        if isinstance(checked, str):
            self._send_error(message.invocation_id, checked)
            return None
        return checked

    async def on_stream_item(self, message: StreamItemMessage) -> None:
        """An item of a client-to-server stream: to the method (waits while its buffer is full)."""
        uploads = self._uploads
        upload = uploads.get(message.invocation_id) if uploads is not None else None
        if uploads is None or upload is None:
            return  # the method ended or the id is unknown: ASP.NET ignores it too
        protocol = self._host.protocol
        assert protocol is not None
        try:
            value = protocol.decode_argument(message.item, upload.item_type)
        except InvocationError as exc:
            uploads.complete(
                message.invocation_id,
                build_error_message(
                    "Failed to bind Stream message.",
                    exc,
                    self._options.enable_detailed_errors,
                ),
            )
            return
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            try:
                upload.send.send_nowait(value)
            except anyio.WouldBlock:  # the method may need frames to go out to make room
                await self._loop.writing_while(upload.send.send(value))
            # items after the method ended are dropped

    def complete_upload(self, stream_id: str, error: str | None) -> None:
        """The client ended a client-to-server stream (``error``: its error text, if any)."""
        if self._uploads is not None:
            self._uploads.complete(stream_id, error)

    def cancel(self, invocation_id: str) -> None:
        """``CancelInvocation``: cancel a server-to-client stream (unknown ids are ignored)."""
        scope = self._streams.get(invocation_id)
        if scope is not None:
            scope.cancel()

    # -- ending --------------------------------------------------------------------------------

    def stop_workers(self) -> None:
        """The message loop ended: no more jobs (idle workers end)."""
        if self._send is not None:
            self._send.close()
        if self.receive is not None:
            self.receive.close()

    def close(self) -> None:
        """The connection ends: close every upload stream; no more worker loans."""
        if self._uploads is not None:
            self._uploads.close_all()
        self._tg = None

    # -- workers -------------------------------------------------------------------------------

    async def _to_worker(self, job: _Job) -> None:
        sender = self._send
        if sender is None:
            tg = self._tg
            assert tg is not None
            sender, self.receive = anyio.create_memory_object_stream[_Job](0)
            self._send = sender
            for _ in range(self._options.max_parallel_invocations):
                tg.start_soon(self._worker, self.receive.clone())
        try:
            sender.send_nowait(job)
        except anyio.WouldBlock:  # every worker is busy: waiting may take long
            await self._loop.writing_while(sender.send(job))

    async def _worker(self, jobs: MemoryObjectReceiveStream[_Job]) -> None:
        current_worker.set(WorkerSlot(self._lend_worker))
        async with jobs:
            async for method, message, args in jobs:
                try:  # _busy was incremented by the sender
                    await self._run_invocation(method, message, args)
                finally:
                    self._busy -= 1

    def _lend_worker(self) -> Loan | None:
        """While a worker waits for a client result, another takes its place (as ASP.NET
        releases the invocation slot), so the message loop can still read the answer."""
        tg, jobs = self._tg, self.receive
        if tg is None or jobs is None:
            return None
        try:
            clone = jobs.clone()
        except anyio.ClosedResourceError:
            return None
        loan = Loan()
        tg.start_soon(self._loan_worker, clone, loan)
        return loan

    async def _loan_worker(self, jobs: MemoryObjectReceiveStream[_Job], loan: Loan) -> None:
        current_worker.set(WorkerSlot(self._lend_worker))
        with jobs:
            while not loan.ended:
                with anyio.CancelScope() as scope:
                    loan.scope = scope
                    try:
                        method, message, args = await jobs.receive()
                    except (anyio.EndOfStream, anyio.ClosedResourceError):
                        return
                loan.scope = None
                if scope.cancel_called:
                    return
                try:  # _busy was incremented by the sender
                    await self._run_invocation(method, message, args)
                finally:
                    self._busy -= 1

    # -- running methods -----------------------------------------------------------------------

    def _send_error(self, invocation_id: str | None, text: str) -> None:
        if invocation_id:
            self._host.send(CompletionMessage(invocation_id=invocation_id, error=text))

    def _authorized(self, method: HubMethod) -> bool:
        policy = method.authorize
        if policy is False:
            return True
        host = self._host
        if policy is True:
            return host.user is not None
        assert host.context is not None
        try:
            return bool(policy(host.context))
        except Exception:
            host.log.exception("hub_authorization_failed", method=method.name)
            return False

    def _log_failure(self, event: str, method: str, exc: Exception) -> None:
        if isinstance(exc, HubException):
            self._host.log.debug(event, method=method, error_type=type(exc).__name__)
        else:  # a bug in hub code: keep the traceback
            self._host.log.error(event, method=method, error_type=type(exc).__name__, exc_info=exc)

    async def _run_invocation(
        self, method: HubMethod, message: InvocationMessage, args: list[Any]
    ) -> None:
        try:
            hub = self._host.new_hub()
            filters = self._methods.filters
            if filters is not None:
                result = await filters.invoke(hub, method, args)
            else:
                result = method.function(hub, *args)
                if method.is_coroutine or inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            self._failed(message, exc)
            return
        finally:
            if message.stream_ids and self._uploads is not None:
                self._uploads.close(message.stream_ids)
        self._answer(message, result)

    async def _answer_awaited(self, message: InvocationMessage, result: Awaitable[Any]) -> None:
        """Answer with what ``result`` (a plain function's awaitable return value) gives."""
        try:
            value = await result
        except Exception as exc:
            self._failed(message, exc)
            return
        self._answer(message, value)

    def _failed(self, message: InvocationMessage, exc: Exception) -> None:
        """The method raised ``exc``: log it and answer with the error."""
        self._log_failure("invocation_failed", message.target, exc)
        self._send_error(
            message.invocation_id,
            _unexpected(message.target, exc, self._options.enable_detailed_errors),
        )

    def _answer(self, message: InvocationMessage, result: Any) -> None:
        """Send the Completion with the method's result (none for a non-blocking call)."""
        invocation_id = message.invocation_id
        if invocation_id:
            try:
                self._host.send(
                    CompletionMessage(invocation_id=invocation_id, result=result, has_result=True)
                )
            except MessageEncodeError as exc:
                self._host.log.info("result_serialization_failed", method=message.target)
                self._send_error(
                    invocation_id,
                    _unexpected(message.target, exc, self._options.enable_detailed_errors),
                )

    async def _run_stream(
        self,
        method: HubMethod,
        message: StreamInvocationMessage,
        args: list[Any],
        scope: anyio.CancelScope,
    ) -> None:
        invocation_id = message.invocation_id
        target = message.target
        host = self._host
        detailed = self._options.enable_detailed_errors
        error: str | None = None
        iterator: Any = None
        try:
            with scope:
                try:
                    hub = host.new_hub()
                    filters = self._methods.filters
                    if filters is not None:
                        stream = await filters.invoke(hub, method, args)
                    else:
                        stream = method.function(hub, *args)
                        if inspect.isawaitable(stream):
                            stream = await stream
                except Exception as exc:
                    error = _unexpected(target, exc, detailed)
                    return
                if not hasattr(stream, "__aiter__"):
                    error = (
                        f"The value returned by the streaming method '{method.function.__name__}'"
                        " is not a ChannelReader<> or IAsyncEnumerable<>."
                    )
                    return
                iterator = stream.__aiter__()
                outgoing = host.outgoing
                try:
                    async for item in iterator:
                        await outgoing.wait_writable()
                        if host.sequencing is not None:
                            await host.wait_replay_space()
                        host.send(StreamItemMessage(invocation_id=invocation_id, item=item))
                        await anyio.lowlevel.checkpoint()
                except Exception as exc:
                    self._log_failure("stream_failed", target, exc)
                    error = build_error_message(
                        "An error occurred on the server while streaming results.", exc, detailed
                    )
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await aclose()
                    except Exception:
                        host.log.exception("stream_close_failed", method=target)
            self._streams.pop(invocation_id, None)
            if message.stream_ids and self._uploads is not None:
                self._uploads.close(message.stream_ids)
            host.send(CompletionMessage(invocation_id=invocation_id, error=error))
