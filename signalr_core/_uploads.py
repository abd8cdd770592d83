"""Client-to-server streams ("upload streams") of one hub connection.

A hub method parameter typed as an async iterator takes a stream the client sends: the client
names it by a stream id in its invocation, sends ``StreamItem`` messages with that id and ends it
with a ``Completion`` (with an error text when it failed). :class:`Uploads` keeps one bounded
memory stream per id (``stream_buffer_capacity`` items: the message loop waits when the method
reads slower than the client sends) and the method iterates an :class:`UploadStream`.

The table is made by the first method that takes a stream: most connections never need one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from signalr_core.errors import HubException

if TYPE_CHECKING:
    from signalr_core.hub import HubMethod

__all__ = ["ClientStreamError", "Upload", "UploadStream", "Uploads"]


class ClientStreamError(HubException):
    """The client ended a client-to-server stream with an error (its text is the message).

    A :class:`HubException`, as ASP.NET (since .NET 6) completes the stream's channel with
    ``new HubException(error)``: the method's failure reaches the client with the client's text
    even when detailed errors are off.
    """


class UploadStream(AsyncIterator[Any]):
    """A client-to-server stream as the hub method sees it."""

    __slots__ = ("_receive", "error")

    def __init__(self, receive: MemoryObjectReceiveStream[Any]) -> None:
        self._receive = receive
        self.error: str | None = None

    def __aiter__(self) -> UploadStream:
        return self

    def close(self) -> None:
        self._receive.close()

    async def __anext__(self) -> Any:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self.error is not None:
                raise ClientStreamError(self.error) from None
            raise StopAsyncIteration from None


class Upload:
    """One client-to-server stream: the sending side, the method's side and the item type."""

    __slots__ = ("item_type", "send", "stream")

    def __init__(
        self, send: MemoryObjectSendStream[Any], stream: UploadStream, item_type: Any
    ) -> None:
        self.send = send
        self.stream = stream
        self.item_type = item_type

    def close(self) -> None:
        self.send.close()
        self.stream.close()


class Uploads:
    """One connection's client-to-server streams by stream id.

    Args:
        capacity: Items buffered per stream (``stream_buffer_capacity``).
    """

    __slots__ = ("_capacity", "_uploads")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._uploads: dict[str, Upload] = {}

    def get(self, stream_id: str) -> Upload | None:
        """The open stream with this id (``None`` once its method ended, or unknown)."""
        return self._uploads.get(stream_id)

    def bind(self, method: HubMethod, values: list[Any], stream_ids: tuple[str, ...]) -> list[Any]:
        """The method's arguments: ``values`` with a new stream for each stream parameter."""
        value_iter = iter(values)
        stream_iter = iter(stream_ids)
        args: list[Any] = []
        for param in method.parameters:
            if param.is_stream:
                stream_id = next(stream_iter)
                send, receive = anyio.create_memory_object_stream[Any](self._capacity)
                stream = UploadStream(receive)
                old = self._uploads.pop(stream_id, None)
                if old is not None:
                    old.close()
                self._uploads[stream_id] = Upload(send, stream, param.type)
                args.append(stream)
            else:
                try:
                    args.append(next(value_iter))
                except StopIteration:
                    break  # trailing parameters with defaults
        return args

    def complete(self, stream_id: str, error: str | None) -> None:
        """The client ended a stream (``error``: its error text, if any)."""
        # The entry stays until the method ends (close), which closes both sides.
        upload = self._uploads.get(stream_id)
        if upload is not None and upload.stream.error is None:
            upload.stream.error = error
            upload.send.close()

    def close(self, stream_ids: tuple[str, ...]) -> None:
        """The method that took these streams ended: later items are dropped."""
        for stream_id in stream_ids:
            upload = self._uploads.pop(stream_id, None)
            if upload is not None:
                upload.close()

    def close_all(self) -> None:
        """The connection ends."""
        for upload in self._uploads.values():
            upload.close()
        self._uploads.clear()
