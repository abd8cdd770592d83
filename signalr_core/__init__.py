"""signalr_core: an ASGI implementation of the ASP.NET Core SignalR server.

The official ``@microsoft/signalr`` client (browser and Node) connects unchanged over
WebSockets, Server-Sent Events and Long Polling, with the JSON and MessagePack hub protocols;
so do the Python clients ``pysignalr`` and ``signalrcore``. It runs on any ASGI server
(hypercorn and uvicorn are tested).

The public API is what this module exports (``__all__``), plus
:class:`signalr_core.redis.RedisHubLifetimeManager` (extra ``redis``); every other module and
name is private. The reference is ``docs/signalr_core.md``.

Example::

    from signalr_core import Hub, HubEndpoint, HubOptions, hub_method

    class ChatHub(Hub):
        @hub_method("SendMessage")
        async def send_message(self, user: str, message: str) -> None:
            await self.clients.all.send("ReceiveMessage", user, message)

    endpoint = HubEndpoint(ChatHub, options=HubOptions())
    # Starlette: routes=[*endpoint.routes("/chat")], and in the app lifespan:
    #     async with endpoint.lifespan(): yield

Logging goes to the standard library's ``signalr_core`` loggers unless the application calls
:func:`set_logger_factory` (for example with ``structlog.get_logger``).
"""

from signalr_core._logging import LoggerFactory, StructuredLogger, set_logger_factory
from signalr_core.auth import Authenticator, AuthRequest
from signalr_core.clients import (
    ClientProxy,
    GroupManager,
    HubCallerClients,
    HubClients,
    HubContext,
    SingleClientProxy,
)
from signalr_core.connection_handler import (
    ConnectionContext,
    ConnectionHandler,
    ConnectionHandlerEndpoint,
)
from signalr_core.context import HubCallerContext, Principal
from signalr_core.cors import CorsPolicy
from signalr_core.endpoint import HubEndpoint
from signalr_core.errors import (
    AuthenticationError,
    ClientResultError,
    ClientResultsNotAllowedError,
    ClientUnavailableError,
    HandshakeError,
    HubException,
    HubMethodNotFound,
    InvalidArguments,
    InvocationError,
    MessageEncodeError,
    MessageTooLargeError,
    ProtocolError,
    SignalRError,
)
from signalr_core.filters import (
    DisconnectedNext,
    HubFilter,
    HubInvocationContext,
    HubLifetimeContext,
    InvokeNext,
    LifetimeNext,
)
from signalr_core.hub import Hub, HubAuthorizePolicy, UserPolicy, hub_method
from signalr_core.lifetime import (
    CloseRequest,
    DefaultHubLifetimeManager,
    HubConnectionHandle,
    HubLifetimeManager,
    LocalConnection,
)
from signalr_core.messages import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HandshakeRequest,
    HubMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
)
from signalr_core.options import HttpTransportType, HubOptions
from signalr_core.protocols import (
    HubProtocol,
    JsonHubProtocol,
    MessagePackHubProtocol,
    default_protocols,
)

__all__ = [
    "AckMessage",
    "AuthRequest",
    "AuthenticationError",
    "Authenticator",
    "CancelInvocationMessage",
    "ClientProxy",
    "ClientResultError",
    "ClientResultsNotAllowedError",
    "ClientUnavailableError",
    "CloseMessage",
    "CloseRequest",
    "CompletionMessage",
    "ConnectionContext",
    "ConnectionHandler",
    "ConnectionHandlerEndpoint",
    "CorsPolicy",
    "DefaultHubLifetimeManager",
    "DisconnectedNext",
    "GroupManager",
    "HandshakeError",
    "HandshakeRequest",
    "HttpTransportType",
    "Hub",
    "HubAuthorizePolicy",
    "HubCallerClients",
    "HubCallerContext",
    "HubClients",
    "HubConnectionHandle",
    "HubContext",
    "HubEndpoint",
    "HubException",
    "HubFilter",
    "HubInvocationContext",
    "HubLifetimeContext",
    "HubLifetimeManager",
    "HubMessage",
    "HubMethodNotFound",
    "HubOptions",
    "HubProtocol",
    "InvalidArguments",
    "InvocationError",
    "InvocationMessage",
    "InvokeNext",
    "JsonHubProtocol",
    "LifetimeNext",
    "LocalConnection",
    "LoggerFactory",
    "MessageEncodeError",
    "MessagePackHubProtocol",
    "MessageTooLargeError",
    "PingMessage",
    "Principal",
    "ProtocolError",
    "SequenceMessage",
    "SignalRError",
    "SingleClientProxy",
    "StreamInvocationMessage",
    "StreamItemMessage",
    "StructuredLogger",
    "TransferFormat",
    "UserPolicy",
    "default_protocols",
    "hub_method",
    "set_logger_factory",
]
