"""Download responses driven as ASGI apps on real files: the ZIP and single files stream, stop
at once when the client goes, release their slot, and never use anyio's shared thread limiter."""

from __future__ import annotations

import io
import os
import zipfile
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message
from structlog.testing import capture_logs

from exporter_api.errors import NotFound, TooManyRequests
from exporter_api.problems import exception_handlers
from exporter_api.runs.downloads import (
    DownloadFailed,
    Downloads,
    DownloadSlots,
    content_disposition,
)
from exporter_api.runs.filerecords import StoredFile
from exporter_api.workers import listening_socket

KEY = ("USER1", "db-test")
RUN_ID = "01JAAAAAAAAAAAAAAAAAAAAAAA"


def _stored(name: str) -> StoredFile:
    return StoredFile(
        run_id=RUN_ID,
        file_id=name,
        group_id="g",
        script_id="s",
        variant=1,
        name=name,
        size_bytes=0,  # not trusted: the archive reads what is on the disk
        rows=1,
        sha256="abc",
        created_at=datetime.now(UTC).isoformat(),
    )


async def _unrecorded() -> None:
    """A download's ``on_served`` where no audit trail is kept."""


_SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}


async def _never_disconnects() -> Message:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def _serve(response: Any) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await response(_SCOPE, _never_disconnects, send)
    return sent


def _body(sent: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent[1:])


async def test_zip_of_the_run_files(tmp_path: Path) -> None:
    files = {"a.csv": b"x,y\n1,2\n" * 10_000, "Отчёт.csv": "имя\n".encode(), "empty.csv": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    downloads = Downloads(max_per_user=1)
    stored = [_stored(n) for n in [*files, "gone.csv"]]  # gone.csv was removed since listing
    response = downloads.zip(KEY, RUN_ID, tmp_path, stored, on_served=_unrecorded)
    assert downloads.slots.active(KEY) == 1
    with capture_logs() as logs:
        sent = await _serve(response)
    assert downloads.slots.active(KEY) == 0
    start = sent[0]
    assert start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/zip"
    assert b"content-length" not in headers
    assert headers[b"content-disposition"] == content_disposition(f"{RUN_ID}.zip").encode()
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert all(len(m.get("body", b"")) <= 128 * 1024 for m in sent)  # bounded chunks
    with zipfile.ZipFile(io.BytesIO(_body(sent))) as archive:
        assert {n: archive.read(n) for n in archive.namelist()} == files
    assert [e["event"] for e in logs] == ["download_finished"]


def _unreadable_run(directory: Path) -> list[StoredFile]:
    """Two files, the second a regular file whose read fails with EIO: a real OSError from the
    file system while the archive is being streamed (the status line is already sent)."""
    (directory / "a.csv").write_bytes(os.urandom(300_000))  # several chunks go out first
    (directory / "b.csv").symlink_to("/proc/self/mem")
    return [_stored("a.csv"), _stored("b.csv")]


async def test_read_error_after_the_response_started_aborts_the_response(tmp_path: Path) -> None:
    downloads = Downloads(max_per_user=1)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    response = downloads.zip(
        KEY, RUN_ID, tmp_path, _unreadable_run(tmp_path), on_served=_unrecorded
    )
    with capture_logs() as logs, pytest.raises(DownloadFailed):
        await response(_SCOPE, _never_disconnects, send)
    assert sent[0]["type"] == "http.response.start"
    assert len(sent) > 2  # part of the archive went out
    assert all(m.get("more_body") for m in sent[1:])  # the body is never ended
    assert [e["event"] for e in logs] == ["zip_stream_failed"]
    assert logs[0]["error_type"] == "OSError"
    assert downloads.slots.active(KEY) == 0


async def test_read_error_cuts_the_connection_under_hypercorn(tmp_path: Path) -> None:
    # The app as served: Starlette with the service's exception handlers, on hypercorn. The
    # client gets the 200 and part of the archive, then the connection closes before the end
    # of the chunked body: an incomplete transfer, never a truncated archive that ends cleanly.
    downloads = Downloads(max_per_user=1)
    stored = _unreadable_run(tmp_path)

    async def zip_endpoint(request: Request) -> Response:
        return downloads.zip(KEY, RUN_ID, tmp_path, stored, on_served=_unrecorded)

    app: Any = Starlette(
        routes=[Route("/zip", zip_endpoint)], exception_handlers=exception_handlers()
    )
    listening = listening_socket("127.0.0.1", 0)  # accepts before hypercorn runs: no polling
    port = listening.getsockname()[1]
    config = HypercornConfig()
    config.bind = [f"fd://{listening.detach()}"]  # hypercorn owns (and closes) it
    config.accesslog = None
    config.errorlog = None
    stop = anyio.Event()
    received: list[bytes] = []

    async def read_body(response: httpx.Response) -> None:
        async for chunk in response.aiter_raw():
            received.append(chunk)

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(hypercorn_serve, app, config, shutdown_trigger=stop.wait))
            try:
                async with (
                    httpx.AsyncClient(timeout=30) as client,
                    client.stream("GET", f"http://127.0.0.1:{port}/zip") as response,
                ):
                    assert response.status_code == 200
                    assert response.headers["transfer-encoding"] == "chunked"
                    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked"):
                        await read_body(response)
            finally:
                stop.set()
    assert sum(map(len, received)) > 0  # part of the archive came first
    events = [e["event"] for e in logs]
    assert "zip_stream_failed" in events
    assert "download_finished" not in events
    assert downloads.slots.active(KEY) == 0


def _random_files(directory: Path, count: int, size: int) -> list[StoredFile]:
    for i in range(count):
        (directory / f"f{i}.bin").write_bytes(os.urandom(size))
    return [_stored(f"f{i}.bin") for i in range(count)]


@pytest.mark.parametrize("kind", ["zip", "file"])
async def test_disconnect_while_the_client_stalls_stops_the_download(
    tmp_path: Path, kind: str
) -> None:
    """The client stops reading (send blocks), then goes: the download ends at once."""
    stored = _random_files(tmp_path, 8, 512 * 1024)
    downloads = Downloads(max_per_user=1)
    if kind == "zip":
        response: Any = downloads.zip(KEY, RUN_ID, tmp_path, stored, on_served=_unrecorded)
    else:
        response = await downloads.file(
            KEY, tmp_path, stored[0], "application/octet-stream", on_served=_unrecorded
        )
    first_body = anyio.Event()
    bodies: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])
            first_body.set()
            await anyio.sleep_forever()  # a client that never reads again

    async def receive() -> Message:
        await first_body.wait()
        return {"type": "http.disconnect"}

    with capture_logs() as logs, anyio.fail_after(5):
        await response(_SCOPE, receive, send)
    assert len(bodies) == 1
    aborted = [e for e in logs if e["event"] == "download_aborted"]
    assert aborted == [
        {
            "event": "download_aborted",
            "log_level": "info",
            "run_id": RUN_ID,
            "kind": kind,
            "bytes_sent": 0,
        }
    ]
    assert downloads.slots.active(KEY) == 0


async def test_send_failing_stops_the_zip(tmp_path: Path) -> None:
    stored = _random_files(tmp_path, 8, 256 * 1024)
    downloads = Downloads(max_per_user=1)
    bodies = 0

    async def send(message: Message) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies == 3:
                raise OSError("connection reset")  # what servers raise for a gone client

    response = downloads.zip(KEY, RUN_ID, tmp_path, stored, on_served=_unrecorded)
    with capture_logs() as logs:
        await response(_SCOPE, _never_disconnects, send)
    assert bodies == 3  # nothing produced after the failed send
    assert [e["event"] for e in logs] == ["download_aborted"]
    assert response.bytes_sent < 3 * 128 * 1024
    assert downloads.slots.active(KEY) == 0


async def test_downloads_never_use_the_shared_thread_limiter(tmp_path: Path) -> None:
    """With every token of anyio's default limiter taken (the store and the file writer share
    it), a ZIP and a file still download: they read through their own limiter."""
    stored = _random_files(tmp_path, 3, 300 * 1024)
    downloads = Downloads(max_per_user=2)
    shared = anyio.to_thread.current_default_thread_limiter()
    holders = [object() for _ in range(int(shared.total_tokens))]
    for holder in holders:
        await shared.acquire_on_behalf_of(holder)
    try:
        with anyio.fail_after(10):
            archive = _body(
                await _serve(downloads.zip(KEY, RUN_ID, tmp_path, stored, on_served=_unrecorded))
            )
            single = await downloads.file(
                KEY, tmp_path, stored[1], "text/csv", on_served=_unrecorded
            )
            one = _body(await _serve(single))
    finally:
        for holder in holders:
            shared.release_on_behalf_of(holder)
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        assert z.read("f1.bin") == one == (tmp_path / "f1.bin").read_bytes()


async def test_head_sends_headers_only(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"x\n" * 1000)
    (tmp_path / "b.csv").symlink_to("/proc/self/mem")  # any read of it fails
    downloads = Downloads(max_per_user=2)
    stored = [_stored("a.csv"), _stored("b.csv")]
    head = {**_SCOPE, "method": "HEAD"}
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with capture_logs() as logs:
        await downloads.zip(KEY, RUN_ID, tmp_path, stored, on_served=_unrecorded)(
            head, _never_disconnects, send
        )
        single = await downloads.file(KEY, tmp_path, stored[0], "text/csv", on_served=_unrecorded)
        await single(head, _never_disconnects, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"] * 2
    assert _body(sent) == b""
    assert dict(sent[2]["headers"])[b"content-length"] == b"2000"
    assert [e["event"] for e in logs] == ["download_finished"] * 2
    assert downloads.slots.active(KEY) == 0


async def test_client_gone_before_the_status_line(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"x\n")
    downloads = Downloads(max_per_user=1)

    async def send(message: Message) -> None:
        raise OSError("connection reset")

    with capture_logs() as logs:
        await downloads.zip(KEY, RUN_ID, tmp_path, [_stored("a.csv")], on_served=_unrecorded)(
            _SCOPE, _never_disconnects, send
        )
    assert [e["event"] for e in logs] == ["download_aborted"]
    assert downloads.slots.active(KEY) == 0


async def test_single_file(tmp_path: Path) -> None:
    data = "id;Клиент\n".encode() * 50_000
    (tmp_path / "Отчёт.csv").write_bytes(data)
    downloads = Downloads(max_per_user=1)
    response = await downloads.file(
        KEY, tmp_path, _stored("Отчёт.csv"), "text/csv; charset=utf-8", on_served=_unrecorded
    )
    sent = await _serve(response)
    headers = dict(sent[0]["headers"])
    assert headers[b"content-length"] == str(len(data)).encode()
    assert headers[b"content-type"] == b"text/csv; charset=utf-8"
    assert headers[b"x-content-sha256"] == b"abc"
    assert headers[b"cache-control"] == b"private, no-store"
    assert headers[b"content-disposition"].startswith(b"attachment;")
    assert _body(sent) == data
    assert downloads.slots.active(KEY) == 0


async def test_missing_file_is_not_found_and_frees_the_slot(tmp_path: Path) -> None:
    downloads = Downloads(max_per_user=1)
    (tmp_path / "dir.csv").mkdir()
    for name in ("gone.csv", "dir.csv"):
        with pytest.raises(NotFound):
            await downloads.file(KEY, tmp_path, _stored(name), "text/csv", on_served=_unrecorded)
    assert downloads.slots.active(KEY) == 0


def test_slots_per_user() -> None:
    slots = DownloadSlots(max_per_user=2, retry_after_s=7)
    first, second = slots.acquire(KEY), slots.acquire(KEY)
    with pytest.raises(TooManyRequests) as refused:
        slots.acquire(KEY)
    assert refused.value.retry_after_s == 7
    # another user, or the same login on another database, has slots of their own
    slots.acquire(("USER2", "db-test"))
    slots.acquire(("USER1", "db-other"))
    first.release()
    first.release()  # idempotent: does not free a slot it no longer holds
    assert slots.active(KEY) == 1
    third = slots.acquire(KEY)
    with pytest.raises(TooManyRequests):
        slots.acquire(KEY)
    second.release()
    third.release()
    assert slots.active(KEY) == 0
    with pytest.raises(ValueError, match="at least 1"):
        DownloadSlots(max_per_user=0)


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100000-", 100_000, None),
        ("bytes=-25", -25, None),
        ("bytes=5-999999999", 5, None),
    ],
)
async def test_one_byte_range_resumes_a_download(
    tmp_path: Path, header: str, first: int, last: int | None
) -> None:
    data = bytes(range(256)) * 1000
    (tmp_path / "big.csv").write_bytes(data)
    downloads = Downloads(max_per_user=1)
    response = await downloads.file(
        KEY, tmp_path, _stored("big.csv"), "text/csv", header, on_served=_unrecorded
    )
    sent = await _serve(response)
    expected = data[first : None if last is None else last + 1]
    start = len(data) + first if first < 0 else first
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 206
    assert (
        headers[b"content-range"]
        == f"bytes {start}-{start + len(expected) - 1}/{len(data)}".encode()
    )
    assert headers[b"content-length"] == str(len(expected)).encode()
    assert _body(sent) == expected
    assert downloads.slots.active(KEY) == 0


async def _ten_bytes_with_range(tmp_path: Path, header: str) -> tuple[Downloads, Response]:
    """The download of a ten-byte file asked for with ``Range: header`` (and its Downloads)."""
    (tmp_path / "f.csv").write_bytes(b"0123456789")
    downloads = Downloads(max_per_user=1)
    response = await downloads.file(
        KEY, tmp_path, _stored("f.csv"), "text/csv", header, on_served=_unrecorded
    )
    return downloads, response


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=x-y", "bytes=9-2x"])
async def test_unsupported_ranges_get_the_whole_file(tmp_path: Path, header: str) -> None:
    _, response = await _ten_bytes_with_range(tmp_path, header)
    sent = await _serve(response)
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"accept-ranges"] == b"bytes"
    assert _body(sent) == b"0123456789"


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=20-30", "bytes=-0", "bytes=5-2"])
async def test_range_outside_the_file_is_416(tmp_path: Path, header: str) -> None:
    downloads, response = await _ten_bytes_with_range(tmp_path, header)
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */10"
    assert response.headers["content-type"] == "application/problem+json"
    assert downloads.slots.active(KEY) == 0


async def test_on_served_runs_once_before_the_status_line_and_only_when_served(
    tmp_path: Path,
) -> None:
    (tmp_path / "f.csv").write_bytes(b"0123456789")
    downloads = Downloads(max_per_user=1)
    sent: list[Message] = []
    served: list[int] = []

    async def on_served() -> None:
        served.append(len(sent))  # messages sent before it: none

    refused = await downloads.file(
        KEY, tmp_path, _stored("f.csv"), "text/csv", "bytes=10-", on_served=on_served
    )
    assert refused.status_code == 416
    with pytest.raises(NotFound):
        await downloads.file(KEY, tmp_path, _stored("gone.csv"), "text/csv", on_served=on_served)
    response = await downloads.file(
        KEY, tmp_path, _stored("f.csv"), "text/csv", on_served=on_served
    )
    with pytest.raises(TooManyRequests):
        downloads.zip(KEY, RUN_ID, tmp_path, [_stored("f.csv")], on_served=on_served)
    assert served == []

    async def send(message: Message) -> None:
        sent.append(message)

    await response(_SCOPE, _never_disconnects, send)
    assert served == [0]
    assert sent[0]["status"] == 200

    async def unrecorded() -> None:
        raise OSError("the trail is gone")

    sent.clear()
    with pytest.raises(OSError, match="the trail is gone"):
        await downloads.zip(KEY, RUN_ID, tmp_path, [_stored("f.csv")], on_served=unrecorded)(
            _SCOPE, _never_disconnects, send
        )
    assert sent == []  # refused before anything went out: the app answers 503
    assert downloads.slots.active(KEY) == 0
