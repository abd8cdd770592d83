"""The exception hierarchy of :mod:`signalr_core`.

Every error the library raises on purpose derives from :class:`SignalRError`. Errors caused by
the peer sending bytes or messages that break the protocol derive from :class:`ProtocolError`,
so a driver can catch that one class to close the connection.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ClientResultError",
    "ClientResultsNotAllowedError",
    "ClientUnavailableError",
    "HandshakeError",
    "HubException",
    "HubMethodNotFound",
    "InvalidArguments",
    "InvocationError",
    "MessageTooLargeError",
    "ProtocolError",
    "SignalRError",
]


class SignalRError(Exception):
    """Root of the library's exception hierarchy."""


class ProtocolError(SignalRError):
    """The peer broke the protocol: malformed frames, invalid messages, bad handshake."""


class MessageTooLargeError(ProtocolError):
    """A frame (or an unterminated partial frame) exceeds ``max_message_size``."""


class HandshakeError(ProtocolError):
    """The handshake failed; ``str(exc)`` is the text ASP.NET Core sends to the client.

    Attributes:
        detail: For a malformed handshake request, ASP.NET's exception text (for example
            ``"InvalidDataException: Missing required property 'protocol'. ..."``), which the
            client sees only when detailed errors are enabled.
    """

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class MessageEncodeError(SignalRError):
    """A value in an outgoing message cannot be encoded by the protocol (for example an
    integer outside MessagePack's 64-bit range, or an unsupported type)."""


class HubException(SignalRError):
    """Raised by hub code; its message reaches the client verbatim.

    Any other exception raised by a hub method is hidden from the client unless detailed
    errors are enabled, as in ASP.NET Core.
    """


class InvocationError(SignalRError):
    """An invocation cannot run (method not found, bad arguments, not authorized, ...).

    ``str(exc)`` is the client-facing text.
    """


class HubMethodNotFound(InvocationError):
    """The client invoked a hub method that does not exist."""


class InvalidArguments(InvocationError):
    """The invocation's arguments do not bind to the hub method's parameters."""


class AuthenticationError(SignalRError):
    """The authenticate hook refused the request."""


class ClientResultError(HubException):
    """A client answered a client-result invocation with an error (its text is the message).

    Also raised when the client had no handler (``Client didn't provide a result.``) or its
    result does not convert to the requested type. Being a :class:`HubException`, its text
    reaches the hub method's own caller when the hub method lets it propagate, as in ASP.NET.
    """


class ClientUnavailableError(SignalRError):
    """A client result cannot come: the connection does not exist, closed while the server was
    waiting, or has too many pending results (ASP.NET throws ``IOException`` for the first two).
    """


class ClientResultsNotAllowedError(SignalRError):
    """Client results were requested where they cannot work (``on_connected`` /
    ``on_disconnected``, when the connection cannot read the client's answer)."""
