"""``signalrcore`` (PyPI, threads) against a real hub server.

signalrcore runs each connection on threads of its own (a receive thread per transport and a
keep-alive checker) and calls handlers on them. :func:`connected` waits for the connection to
open, and at the end stops it and joins every thread the client started, each with a bounded
wait; a thread still alive fails the test. Two client quirks are handled there: ``stop()``
closes its socket without a WebSocket Close frame while its receive thread is blocked in
``recv()``, which a close from another thread does not wake (so the thread would wait for the
server's next keep-alive Ping, 15 s): the socket is shut down first; and over Server-Sent
Events ``stop()`` leaves the keep-alive checker thread running: it is stopped. Handlers only
put what they get on a queue that the test reads with a timeout; an exception on a client
thread fails the test too (pytest's thread-exception hook, and warnings are errors).

What signalrcore 1.0.2 does not do (client-side, listed in docs/COMPATIBILITY.md): client
results, MessagePack over Long Polling (its binary Long Polling client cannot be built),
MessagePack upload streams (it writes the stream's Invocation without its invocation-id slot
and the closing Completion without a result kind; ASP.NET refuses both too), and more than one
message per Long Polling response (it delivers only the first one at once).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from signalrcore.hub.base_hub_connection import BaseHubConnection
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.subject import Subject
from signalrcore.types import HttpTransportType, HubProtocolEncoding

TIMEOUT = 10.0
WS, SSE, LP = (
    HttpTransportType.web_sockets,
    HttpTransportType.server_sent_events,
    HttpTransportType.long_polling,
)
JSON, MSGPACK = HubProtocolEncoding.text, HubProtocolEncoding.binary
# MessagePack is binary: Server-Sent Events carry text only; Long Polling binary is broken in
# the client.
PAIRS = [
    pytest.param(WS, JSON, id="WebSockets-json"),
    pytest.param(WS, MSGPACK, id="WebSockets-messagepack"),
    pytest.param(SSE, JSON, id="ServerSentEvents-json"),
]
ALL_PAIRS = [*PAIRS, pytest.param(LP, JSON, id="LongPolling-json")]
JSON_PAIRS = [PAIRS[0], PAIRS[2]]


@dataclass
class Client:
    """A connected signalrcore connection and what its handlers received, in order."""

    connection: BaseHubConnection
    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)

    def listen(self, *methods: str) -> None:
        for method in methods:
            self.connection.on(method, lambda args, m=method: self.events.put((m, args)))

    def next_event(self) -> tuple[str, Any]:
        try:
            return self.events.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no event within {TIMEOUT} s")

    def assert_no_event(self) -> None:
        try:
            event = self.events.get_nowait()
        except queue.Empty:
            return
        pytest.fail(f"unexpected event {event!r}")

    def invoke(self, method: str, *arguments: Any) -> Any:
        """Invoke and wait for the completion's result (errors go to ``on_error``)."""
        answers: queue.Queue[Any] = queue.Queue()
        self.connection.invoke(
            method, list(arguments), on_invocation=lambda message: answers.put(message.result)
        )
        try:
            return answers.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no completion for {method} within {TIMEOUT} s")


@contextlib.contextmanager
def connected(
    url: str,
    transport: HttpTransportType,
    protocol: HubProtocolEncoding,
    token: str | None = None,
) -> Iterator[Client]:
    before = set(threading.enumerate())
    options: dict[str, Any] = {"transport": transport}
    if token is not None:
        options["access_token_factory"] = lambda: token
    connection = (
        HubConnectionBuilder().with_url(url, options=options).with_hub_protocol(protocol).build()
    )
    client = Client(connection)
    opened, closed = threading.Event(), threading.Event()
    connection.on_open(opened.set)
    connection.on_close(closed.set)
    connection.on_error(lambda message: client.events.put(("error", message.error)))
    try:
        connection.start()
        assert opened.wait(TIMEOUT), "the connection did not open"
        yield client
    finally:
        sock = getattr(getattr(connection.transport, "_client", None), "sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the receive thread
        connection.stop()
        if isinstance(sock, socket.socket):
            sock.close()  # stop() returns early when the receive thread saw the end first
        closed.wait(TIMEOUT)
        checker = getattr(connection.transport, "connection_checker", None)
        if checker is not None:
            checker.stop()
        leftover = set(threading.enumerate()) - before
        for thread in leftover:
            thread.join(TIMEOUT)
        alive = [thread.name for thread in leftover if thread.is_alive()]
        assert not alive, f"signalrcore threads still running: {alive}"


@pytest.mark.parametrize(("transport", "protocol"), ALL_PAIRS)
def test_echo_and_errors(
    base_url: str, transport: HttpTransportType, protocol: HubProtocolEncoding
) -> None:
    with connected(f"{base_url}/hub", transport, protocol) as client:
        assert client.invoke("Echo", "héllo ☃") == "héllo ☃"
        client.connection.invoke("Fail", ["boom"])
        assert client.next_event() == (
            "error",
            "An unexpected error occurred invoking 'Fail' on the server. HubException: boom",
        )


@pytest.mark.parametrize(("transport", "protocol"), PAIRS)
def test_server_push(
    base_url: str, transport: HttpTransportType, protocol: HubProtocolEncoding
) -> None:
    with connected(f"{base_url}/hub", transport, protocol) as client:
        client.listen("Pushed")
        client.connection.invoke("Push", ["Pushed", {"n": 1}])
        assert client.next_event() == ("Pushed", [{"n": 1}])
        assert client.invoke("Add", 1, 2) == 3  # a push and a completion in one exchange
        client.assert_no_event()


@pytest.mark.parametrize(("transport", "protocol"), PAIRS)
def test_groups(base_url: str, transport: HttpTransportType, protocol: HubProtocolEncoding) -> None:
    hub = f"{base_url}/hub"
    with (
        connected(hub, transport, protocol) as member,
        connected(hub, transport, protocol) as other,
    ):
        member.listen("GroupMessage")
        other.listen("GroupMessage")
        member.invoke("JoinGroup", "room")
        other.invoke("SendToGroup", "room", "hi")
        assert member.next_event() == ("GroupMessage", ["room", "hi"])
        other.assert_no_event()  # a message for it would have come before its completion

        member.invoke("LeaveGroup", "room")
        other.invoke("SendToGroup", "room", "gone")
        member.invoke("Echo", "after")
        member.assert_no_event()


@pytest.mark.parametrize(("transport", "protocol"), PAIRS)
def test_server_to_client_stream(
    base_url: str, transport: HttpTransportType, protocol: HubProtocolEncoding
) -> None:
    with connected(f"{base_url}/hub", transport, protocol) as client:
        # stream() sends before subscribe() sets the callbacks: the hub waits for OpenGate.
        client.connection.stream("GatedCounter", [5]).subscribe(
            {
                "next": lambda item: client.events.put(("item", item)),
                "complete": lambda message: client.events.put(("complete", message.error)),
                "error": lambda message: client.events.put(("error", message.error)),
            }
        )
        client.connection.invoke("OpenGate", [])
        received = [client.next_event() for _ in range(6)]
        assert received == [*(("item", i) for i in range(5)), ("complete", None)]


@pytest.mark.parametrize(("transport", "protocol"), JSON_PAIRS)
def test_client_to_server_stream(
    base_url: str, transport: HttpTransportType, protocol: HubProtocolEncoding
) -> None:
    with connected(f"{base_url}/hub", transport, protocol) as client:
        client.listen("Uploaded")
        subject = Subject()
        client.connection.invoke("UploadToCaller", subject)
        for item in ("a", "b", "c"):
            subject.next(item)
        subject.complete()
        assert client.next_event() == ("Uploaded", ["a,b,c"])


@pytest.mark.parametrize(("transport", "protocol"), PAIRS)
def test_access_token_factory(
    base_url: str, transport: HttpTransportType, protocol: HubProtocolEncoding
) -> None:
    token = httpx.get(f"{base_url}/token", params={"user": "alice"}, timeout=TIMEOUT).text
    with connected(f"{base_url}/authhub", transport, protocol, token=token) as client:
        assert client.invoke("Whoami") == "alice"


def test_refused_without_token(base_url: str) -> None:
    connection = HubConnectionBuilder().with_url(f"{base_url}/authhub").build()
    with pytest.raises(urllib.error.HTTPError) as refused:
        connection.start()  # negotiate answers 401: no thread is started
    assert refused.value.code == 401
    refused.value.close()
