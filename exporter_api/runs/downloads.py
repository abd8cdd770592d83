"""Downloads of a run's files: one file, or all of them as a ZIP built while it streams.

Theory of operation
-------------------
A download is a coroutine that reads a chunk, (for the ZIP) compresses it, and awaits the
ASGI ``send`` of it. Reading and compressing run on worker threads under a small limiter of
their own (`Downloads.io_limiter`), never under anyio's default one, which the state store and
the file writer share: a thread is held for one chunk's read, never while a client is slow.
A stalled client costs a suspended coroutine and the bytes in flight, nothing more: the ASGI
server's ``send`` backpressure is the only buffer (hypercorn drains its transport first).

The body is produced under a task group that also watches ``receive()``: when the client
disconnects (``http.disconnect``) or ``send`` fails, the production is cancelled at once —
no further reading or compressing — and ``download_aborted`` is logged. When the ZIP cannot
be completed (a file unreadable part-way: ``zip_stream_failed``), the response raises
`DownloadFailed` instead of ending the body: the server cuts the connection, and the client sees
an incomplete transfer rather than a 200 whose truncated archive ends cleanly.

Each user (login + database) may hold at most ``server.max_downloads_per_user`` downloads at a
time, single files and ZIPs together; one more is refused with 429 and ``Retry-After``.

A download is served once every check that can refuse it (429, a file gone: 404, a range outside
the file: 416) has passed: only then, just before the status line goes out, does the response
await its ``on_served`` callback (the audit record: "who exported what"). A callback that
raises refuses the download still, since nothing has been sent yet. A HEAD request (the
headers alone: nothing is read or exported) is not recorded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import BinaryIO, TypeVar, TypeVarTuple, Unpack
from urllib.parse import quote

import anyio
import anyio.to_thread
import structlog
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from exporter_api.errors import NotFound, TooManyRequests
from exporter_api.problems import problem
from exporter_api.runs.filerecords import StoredFile
from exporter_api.runs.zipstream import ZipError, ZipWriter

__all__ = [
    "DownloadFailed",
    "DownloadLease",
    "DownloadSlots",
    "Downloads",
    "FileDownloadResponse",
    "OnServed",
    "ZipDownloadResponse",
    "content_disposition",
]

_log = structlog.get_logger("exporter_api.runs.downloads")

CHUNK_BYTES = 64 * 1024
"""Bytes read per step; also the most the ZIP keeps before it sends."""
IO_THREADS = 4
"""Worker threads that download reads and deflate may use at once (all downloads together)."""
RETRY_AFTER_S = 5

UserKey = tuple[str, str]  # (login, database id)
OnServed = Callable[[], Awaitable[None]]
"""Awaited once a download is served, before its status line (see the module's docstring)."""
_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the RFC 5987 ``filename*`` (UTF-8)."""
    fallback = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    fallback = fallback.replace("\\", "_").replace('"', "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


class DownloadLease:
    """One taken download slot; `release` is idempotent."""

    def __init__(self, slots: DownloadSlots, key: UserKey) -> None:
        self._slots = slots
        self._key = key
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self._key)


class DownloadSlots:
    """Concurrent downloads per user, bounded.

    The count is kept in this process only: with several instances behind a balancer a user
    may hold ``max_per_user`` downloads on each. That still bounds what one user can pin per
    process, which is what the limit protects (sockets, worker time, memory).
    """

    def __init__(self, max_per_user: int, retry_after_s: int = RETRY_AFTER_S) -> None:
        if max_per_user < 1:
            raise ValueError("max_per_user must be at least 1")
        self.max_per_user = max_per_user
        self.retry_after_s = retry_after_s
        self._active: dict[UserKey, int] = {}

    def active(self, key: UserKey) -> int:
        return self._active.get(key, 0)

    def acquire(self, key: UserKey) -> DownloadLease:
        """A slot for ``key``, or `TooManyRequests` when all of theirs are taken."""
        count = self._active.get(key, 0)
        if count >= self.max_per_user:
            _log.info("download_refused", login=key[0], database_id=key[1], active=count)
            raise TooManyRequests(
                f"at most {self.max_per_user} downloads at a time; wait for one to finish",
                retry_after_s=self.retry_after_s,
            )
        self._active[key] = count + 1
        return DownloadLease(self, key)

    def _release(self, key: UserKey) -> None:
        count = self._active.get(key, 0) - 1
        if count > 0:
            self._active[key] = count
        else:
            self._active.pop(key, None)


class _ClientGone(Exception):
    """``send`` failed: the client is no longer there."""


class DownloadFailed(Exception):
    """The body could not be completed after the status line went out (a file became
    unreadable): raised out of the response so that the ASGI server cuts the connection
    instead of ending the body, and the client sees an incomplete transfer, not a whole one."""

    def __init__(self) -> None:
        super().__init__("the download failed after it started")


def _open_regular(path: Path) -> tuple[BinaryIO, os.stat_result] | None:
    """``path`` opened for reading with its status, or None when it is not a regular file."""
    try:
        # O_NONBLOCK: opening a FIFO planted under the name must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb"), status
    except BaseException:
        os.close(fd)
        raise


class _DownloadResponse(Response):
    """The ASGI driver shared by both downloads: start, body under a disconnect watch, end."""

    kind = "download"

    def __init__(
        self,
        downloads: Downloads,
        lease: DownloadLease,
        run_id: str,
        media_type: str,
        headers: dict[str, str],
        on_served: OnServed,
    ) -> None:
        super().__init__(media_type=media_type, headers=headers)
        self.downloads = downloads
        self.lease = lease
        self.run_id = run_id
        self.on_served = on_served
        self.bytes_sent = 0

    async def _body(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Release what the response holds besides its slot (an open file)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        log = _log.bind(run_id=self.run_id, kind=self.kind)
        gone = False
        failed = False

        async def send_message(message: Message) -> None:
            try:
                await send(message)
            except Exception as exc:  # how a server says "client gone" differs per server
                raise _ClientGone from exc

        async def send_body(chunk: bytes) -> None:
            await send_message({"type": "http.response.body", "body": chunk, "more_body": True})
            self.bytes_sent += len(chunk)

        async def watch_disconnect(scope_to_cancel: anyio.CancelScope) -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            scope_to_cancel.cancel()

        head = scope.get("method") == "HEAD"  # the headers only: nothing read, nothing exported
        try:
            if not head:
                await self.on_served()
            start = {"type": "http.response.start", "status": self.status_code}
            await send_message({**start, "headers": self.raw_headers})
            if not head:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch_disconnect, tg.cancel_scope)
                    try:
                        await self._body(send_body)
                    except _ClientGone:  # caught here: a task group would wrap it in a group
                        gone = True
                    except DownloadFailed:  # (logged by the body)
                        failed = True
                    tg.cancel_scope.cancel()
            if gone:
                raise _ClientGone
            if failed:
                # Never the end of the body: hypercorn (like uvicorn) closes the connection
                # when the app raises, so the chunked body stays unterminated.
                raise DownloadFailed
            await send_message({"type": "http.response.body", "body": b"", "more_body": False})
            log.info("download_finished", bytes_sent=self.bytes_sent)
        except _ClientGone:
            log.info("download_aborted", bytes_sent=self.bytes_sent)
        finally:
            self._close()
            self.lease.release()


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range ``header`` asks for, as ``(first, last)`` inclusive.

    ``None`` means "send the whole file" (no header, a unit other than bytes, several ranges,
    or a malformed value: RFC 9110 lets a server ignore those). Raises ``RangeNotSatisfiable``
    for a well-formed range that lies outside the file.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash or not (first_text.isdigit() or last_text.isdigit()):
        return None
    if not first_text:  # a suffix: the last N bytes
        if not last_text.isdigit() or int(last_text) == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - int(last_text)), size - 1
    if not first_text.isdigit() or (last_text and not last_text.isdigit()):
        return None
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if first >= size or first > last:
        raise RangeNotSatisfiable(size)
    return first, last


class RangeNotSatisfiable(Exception):
    """A byte range outside the file (answered 416 with ``Content-Range: bytes */size``)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class FileDownloadResponse(_DownloadResponse):
    """One file, already open (so a vanished file is a 404 before the status line).

    It replaces Starlette's ``FileResponse``, which held no thread while a client was slow
    either (it awaits ``send`` on the event loop) but stats, opens and reads every chunk under
    anyio's shared default limiter, and has no place to hold a download slot. One byte range
    (``Range: bytes=…``) is served with 206, so an interrupted download of a large export
    resumes where it stopped; several ranges get the whole file.
    """

    kind = "file"

    def __init__(
        self,
        downloads: Downloads,
        lease: DownloadLease,
        run_id: str,
        source: BinaryIO,
        size: int,
        media_type: str,
        headers: dict[str, str],
        on_served: OnServed,
        byte_range: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(downloads, lease, run_id, media_type, headers, on_served)
        self.source = source
        self.headers["accept-ranges"] = "bytes"
        first, last = byte_range if byte_range is not None else (0, size - 1)
        if byte_range is not None:
            self.status_code = 206
            self.headers["content-range"] = f"bytes {first}-{last}/{size}"
        self.offset = first
        self.remaining = max(0, last - first + 1)
        self.headers["content-length"] = str(self.remaining)

    async def _body(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        source = self.source

        def read(n: int) -> bytes:
            if self.offset:
                source.seek(self.offset)
                self.offset = 0
            return source.read(n)

        while self.remaining > 0:
            chunk = await self.downloads.run_io(read, min(CHUNK_BYTES, self.remaining))
            if not chunk:
                break  # the file shrank under us: end the body (Content-Length tells)
            self.remaining -= len(chunk)
            await send(chunk)

    def _close(self) -> None:
        # A read-only regular file: close() has nothing to flush and does not block.
        self.source.close()


class ZipDownloadResponse(_DownloadResponse):
    """Every file of a run as one ZIP, built while it streams (no Content-Length: chunked)."""

    kind = "zip"

    def __init__(
        self,
        downloads: Downloads,
        lease: DownloadLease,
        run_id: str,
        directory: Path,
        files: Iterable[StoredFile],
        headers: dict[str, str],
        on_served: OnServed,
    ) -> None:
        super().__init__(downloads, lease, run_id, "application/zip", headers, on_served)
        self.directory = directory
        self.files = list(files)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]

    async def _body(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        writer = ZipWriter()
        pending = bytearray()

        async def put(data: bytes) -> None:
            # Headers and deflate output come in small pieces: gather up to one chunk.
            pending.extend(data)
            if len(pending) >= CHUNK_BYTES:
                chunk = bytes(pending)
                pending.clear()
                await send(chunk)

        def read_and_deflate(source: BinaryIO) -> bytes | None:
            data = source.read(CHUNK_BYTES)
            return writer.feed(data) if data else None

        try:
            for stored in self.files:
                opened = await self.downloads.run_io(_open_regular, self.directory / stored.name)
                if opened is None:
                    continue  # removed since it was listed (retention): leave it out
                source, status = opened
                try:
                    await put(
                        writer.begin(stored.name, mtime=status.st_mtime, size_hint=status.st_size)
                    )
                    run_io = self.downloads.run_io
                    while (out := await run_io(read_and_deflate, source)) is not None:
                        await put(out)
                    await put(writer.end())
                finally:
                    source.close()  # read-only regular file: nothing to flush, no blocking
            await put(writer.finish())
        except (OSError, ZipError) as exc:
            # A file became unreadable (or grew past 4 GiB while read) after the status line
            # went out: the response is aborted, so the client sees an incomplete transfer
            # rather than a truncated archive that ends cleanly. The message may hold paths.
            _log.error("zip_stream_failed", run_id=self.run_id, error_type=type(exc).__name__)
            raise DownloadFailed from None
        if pending:
            await send(bytes(pending))


class Downloads:
    """The download side of the runs API: slots per user and the I/O limiter, per app."""

    def __init__(self, max_per_user: int, io_threads: int = IO_THREADS) -> None:
        self.slots = DownloadSlots(max_per_user)
        # Created outside the event loop, anyio binds it to the loop at first use.
        self.io_limiter = anyio.CapacityLimiter(io_threads)

    async def run_io(self, func: Callable[[Unpack[_Args]], _T], *args: *_Args) -> _T:
        """``func(*args)`` on a worker thread under the downloads' own limiter."""
        return await anyio.to_thread.run_sync(func, *args, limiter=self.io_limiter)

    async def file(
        self,
        key: UserKey,
        directory: Path,
        stored: StoredFile,
        media_type: str,
        range_header: str | None = None,
        *,
        on_served: OnServed,
    ) -> Response:
        """The response for one stored file (`NotFound` when it is gone from the disk); 206
        for one satisfiable byte range, 416 for a range outside the file. ``on_served`` is
        awaited only when the file is served (200 or 206)."""
        lease = self.slots.acquire(key)
        try:
            opened = await self.run_io(_open_regular, directory / stored.name)
        except BaseException:
            lease.release()
            raise
        if opened is None:
            lease.release()
            raise NotFound("file no longer exists")
        source, status = opened
        try:
            byte_range = parse_range(range_header, status.st_size)
        except RangeNotSatisfiable as exc:
            source.close()
            lease.release()
            return problem(
                416,
                "Range Not Satisfiable",
                f"the file has {exc.size} bytes",
                headers={"Content-Range": f"bytes */{exc.size}", "Cache-Control": "no-store"},
            )
        return FileDownloadResponse(
            self,
            lease,
            stored.run_id,
            source,
            status.st_size,
            media_type,
            {
                "Content-Disposition": content_disposition(stored.name),
                "X-Content-SHA256": stored.sha256,
                "Cache-Control": "private, no-store",
            },
            on_served,
            byte_range,
        )

    def zip(
        self,
        key: UserKey,
        run_id: str,
        directory: Path,
        files: Iterable[StoredFile],
        *,
        on_served: OnServed,
    ) -> ZipDownloadResponse:
        """The response streaming every file of ``run_id`` as ``<runId>.zip`` (``on_served``
        awaited just before its status line)."""
        lease = self.slots.acquire(key)
        return ZipDownloadResponse(
            self,
            lease,
            run_id,
            directory,
            files,
            {
                "Content-Disposition": content_disposition(f"{run_id}.zip"),
                "Cache-Control": "private, no-store",
            },
            on_served,
        )
