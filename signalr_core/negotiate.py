"""Bodies of ``POST {hub}/negotiate`` answers, shaped exactly as ASP.NET Core writes them.

* Version 1 (the client sent ``negotiateVersion=1``): ``connectionId`` is public (shown to hubs
  and other clients), ``connectionToken`` is the secret the client puts in ``?id=`` on
  transport requests.
* Version 0: ``connectionId`` only, which then also identifies transport requests.

``useStatefulReconnect`` appears only when true; a ``ProtocolVersion`` key never appears (the
client takes it for the old ASP.NET SignalR and gives up).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from typing import Final

import msgspec

__all__ = [
    "LONG_POLLING",
    "SERVER_SENT_EVENTS",
    "WEBSOCKETS",
    "NegotiateError",
    "NegotiateRedirect",
    "NegotiateResponse",
    "TransportInfo",
    "build_negotiate_response",
    "encode_negotiate_error",
    "encode_negotiate_redirect",
    "new_connection_id",
]


class TransportInfo(msgspec.Struct, frozen=True, rename="camel"):
    """One entry of ``availableTransports``.

    Attributes:
        transport: ``"WebSockets"``, ``"ServerSentEvents"`` or ``"LongPolling"``.
        transfer_formats: ``"Text"`` and/or ``"Binary"``.
    """

    transport: str
    transfer_formats: tuple[str, ...]


WEBSOCKETS: Final = TransportInfo("WebSockets", ("Text", "Binary"))
SERVER_SENT_EVENTS: Final = TransportInfo("ServerSentEvents", ("Text",))
LONG_POLLING: Final = TransportInfo("LongPolling", ("Text", "Binary"))


class NegotiateResponse(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True
):
    """A successful negotiate answer (field order as ASP.NET writes it)."""

    negotiate_version: int
    connection_id: str
    connection_token: str | None = None
    use_stateful_reconnect: bool = False
    available_transports: tuple[TransportInfo, ...]


class NegotiateRedirect(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True
):
    """Send the client to another server: it negotiates again at ``url`` with ``access_token``."""

    negotiate_version: int = 0
    url: str
    access_token: str | None = None
    available_transports: tuple[TransportInfo, ...] = ()


class NegotiateError(msgspec.Struct, frozen=True, kw_only=True):
    """A refusal the client reports as its connection error."""

    error: str


_encoder: Final = msgspec.json.Encoder()


def build_negotiate_response(
    *,
    negotiate_version: int,
    connection_id: str,
    connection_token: str,
    transports: Sequence[TransportInfo],
    use_stateful_reconnect: bool = False,
) -> bytes:
    """Encode a negotiate answer.

    Args:
        negotiate_version: 0 or 1, from the client's ``negotiateVersion`` query value.
        connection_id: The public connection id.
        connection_token: The secret transport id; left out for version 0 (where the client
            uses ``connection_id``, so pass the same value).
        transports: The transports the endpoint offers, in order of preference.
        use_stateful_reconnect: Offer stateful reconnect (written only when true).

    Returns:
        The UTF-8 JSON body.
    """
    response = NegotiateResponse(
        negotiate_version=negotiate_version,
        connection_id=connection_id,
        connection_token=connection_token if negotiate_version > 0 else None,
        use_stateful_reconnect=use_stateful_reconnect,
        available_transports=tuple(transports),
    )
    return _encoder.encode(response)


def encode_negotiate_error(message: str) -> bytes:
    """Encode ``{"error": message}``."""
    return _encoder.encode(NegotiateError(error=message))


def encode_negotiate_redirect(url: str, access_token: str | None) -> bytes:
    """Encode a redirect answer (``url`` and, if given, ``accessToken``)."""
    return _encoder.encode(NegotiateRedirect(url=url, access_token=access_token))


def new_connection_id() -> str:
    """Return a new id: 16 random bytes, base64url without padding (22 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")
