"""signalr_core: an ASGI implementation of the ASP.NET Core SignalR server.

The official ``@microsoft/signalr`` JavaScript client (browser and Node) connects unchanged over
WebSockets, Server-Sent Events and Long Polling, with the JSON and MessagePack hub protocols.

Example::

    from signalr_core import Hub, HubEndpoint, HubOptions

    class ChatHub(Hub):
        async def send(self, user: str, message: str) -> None:
            await self.clients.all.send("ReceiveMessage", user, message)

    endpoint = HubEndpoint(ChatHub, options=HubOptions(enable_detailed_errors=True))
    # Starlette: routes=[*endpoint.routes("/hubs/chat")], and in the app lifespan:
    #     async with endpoint.lifespan(): yield
"""

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
    "TransferFormat",
    "UserPolicy",
    "default_protocols",
    "hub_method",
]
