"""The output of one variant: batches from the provider to one or more finished files.

Theory of operation: the provider (on the event loop, or its own fetch thread) hands each
batch -- rows of a DB-API cursor, or CSV bytes of a PostgreSQL COPY -- to :meth:`write_rows` /
:meth:`write`, which put it on a bounded hand-off (``HANDOFF_BATCHES`` deep) and return. One
consumer task takes the batches in order and formats and writes each on a worker thread, so
the database is read while the previous batch is formatted and written, and memory holds at
most a few batches whatever the size of the result. A slow disk makes ``write_rows`` wait
(back-pressure), never grows a queue.

Splitting (``max_rows_per_file`` / ``max_bytes_per_file``) starts a new part with its own
header when the current one is full; parts are sealed (fsynced) as they fill and committed all
together by the caller once the result is complete, so a variant that fails leaves no file
at all. A byte limit is kept exactly for CSV (a batch that would cross it is halved until it
fits; a single row longer than the limit gets a part of its own) and checked between batches
against the compressed size for ``csv.gz``; XLSX parts split by rows only. CSV bytes (a
provider's own CSV, PostgreSQL COPY) are cut at record ends, never re-formatted, the header
line they start with repeated at the top of every part.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream
from xlsxwriter.exceptions import FileCreateError

from exporter_api.csvcodec import CsvEncoder, Row, record_ends
from exporter_api.runs.files import (
    DEFAULT_DIR_MODE,
    DEFAULT_FILE_MODE,
    UTF8_BOM,
    FileWriter,
    disk_call,
)
from exporter_api.runs.writers.formats import (
    XLSX_MAX_ROWS,
    CsvStyle,
    FileFormat,
    media_type,
    part_name,
)
from exporter_api.runs.writers.xlsx import XlsxBook

if TYPE_CHECKING:
    from types import TracebackType

HANDOFF_BATCHES = 2

# A CSV-bytes batch (PostgreSQL COPY, header included) or a header with a batch of rows.
_Bytes = tuple[None, bytes, int]
_Rows = tuple[Sequence[str], Sequence[Row], int]
_Item = _Bytes | _Rows


@dataclass(frozen=True)
class OutputSpec:
    """What one variant's files look like."""

    format: FileFormat = "csv"
    style: CsvStyle = field(default_factory=CsvStyle)
    max_rows_per_file: int = 0  # 0: no limit
    max_bytes_per_file: int = 0
    gzip_level: int = 1
    file_mode: int = DEFAULT_FILE_MODE
    dir_mode: int = DEFAULT_DIR_MODE
    xlsx_rows_per_sheet: int = XLSX_MAX_ROWS - 1
    # XlsxWriter's temporary files (each sheet's rows, the ZIP's parts): they hold export data,
    # so by default they go where the partial files go (the run's directory, never the system's
    # /tmp): on the export volume, under its permissions, and removed by the reconciliation of
    # unrecorded files (`runs.reconcile`) when a crash leaves them behind.
    xlsx_tmpdir: str | None = None

    @property
    def media_type(self) -> str:
        """What the files are served as; a CSV says its charset (the profile's encoding)."""
        return media_type(self.format, self.style.encoding)

    @property
    def splits(self) -> bool:
        return bool(self.max_rows_per_file or self.max_bytes_per_file)

    def needs_rows(self, server_csv: bool, server_style: bool = False) -> bool:
        """Whether the provider must deliver rows (formatted here, on the output's thread)
        rather than CSV bytes: the provider's own CSV (``server_csv``: PostgreSQL COPY, SQLite's
        lines) is taken for every CSV file -- split files too, cut at record ends -- unless the
        style changes values and the provider cannot apply it (``server_style``)."""
        return not (
            server_csv and self.format != "xlsx" and (server_style or not self.style.changes_values)
        )


class _CsvPart:
    """One CSV (or gzip-compressed CSV) file being written (worker thread only)."""

    def __init__(self, writer: FileWriter, spec: OutputSpec, header: bytes | None) -> None:
        writer.open_sync()
        self.writer = writer
        self.rows = 0
        gz = spec.format == "csv.gz"
        self._z = zlib.compressobj(spec.gzip_level, zlib.DEFLATED, 31) if gz else None
        if spec.style.bom:
            self.put(UTF8_BOM, 0)
        if header is not None:
            self.put(header, 0)

    @property
    def size(self) -> int:
        return self.writer.size

    def put(self, data: bytes, rows: int) -> None:
        self.writer.bytes_written += len(data)
        if self._z is not None:
            data = self._z.compress(data)
        if data:
            self.writer.write_sync(data)
        self.rows += rows
        self.writer.rows = self.rows

    def seal(self) -> None:
        if self._z is not None:
            self.writer.write_sync(self._z.flush())
            self._z = None
        self.writer.seal_sync()


class _ZipTarget:
    """The partial file as XlsxWriter's ZIP sees it. A ZIP that failed half-way (a full disk)
    stays referenced by its traceback and finishes itself when collected: once ``cut`` it
    writes into nothing, instead of into a file that is closed (or another file by then)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._end = 0  # the offset a cut target pretends to be at (the ZIP computes with it)
        self.cut = False

    def write(self, data: bytes) -> int:
        if self.cut:
            self._end += len(data)
            return len(data)
        written = self._file.write(data)
        self._end = max(self._end, self._file.tell())
        return written

    def tell(self) -> int:
        return self._end if self.cut else self._file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        if self.cut:
            self._end = offset if whence == 0 else self._end + offset
            return self._end
        return self._file.seek(offset, whence)

    def flush(self) -> None:
        if not self.cut:
            self._file.flush()

    def seekable(self) -> bool:
        return True


class _XlsxPart:
    def __init__(self, writer: FileWriter, spec: OutputSpec, labels: Sequence[str]) -> None:
        writer.open_sync()
        self.writer = writer
        self.rows = 0
        self._target = _ZipTarget(writer.file)
        self.book = XlsxBook(
            self._target,  # type: ignore[arg-type]  # the part of IO[bytes] a ZipFile uses
            labels,
            text_dates=spec.style.text_dates,
            rows_per_sheet=spec.xlsx_rows_per_sheet,
            tmpdir=spec.xlsx_tmpdir or str(writer.directory),
        )

    @property
    def size(self) -> int:
        return self.writer.size

    def add(self, batch: Sequence[Row]) -> None:
        self.book.add(batch)
        self.rows += len(batch)
        self.writer.rows = self.rows

    def seal(self) -> None:
        try:
            self.book.close()
        except FileCreateError as exc:  # XlsxWriter wraps the OSError of writing the ZIP
            self._target.cut = True
            cause = exc.args[0] if exc.args else None
            if isinstance(cause, OSError):
                raise cause from None
            raise
        except BaseException:
            self._target.cut = True
            raise
        self.writer.rehash_sync()
        self.writer.seal_sync()


_Part = _CsvPart | _XlsxPart


class VariantOutput:
    """An export sink (``write`` for CSV bytes, ``write_rows`` for rows) producing the files of
    one variant in ``directory``. Use as ``async with``; :meth:`finish` once the provider
    returned, then commit each of :attr:`parts`. Leaving the block removes every part not
    committed.

    The files' names are this class's rule alone: ``name`` when the result fits one file,
    ``..._part001``, ``..._part002``... (`part_name`) when it was split; each part's
    ``FileWriter.name`` says it once :meth:`finish` returned."""

    def __init__(
        self,
        spec: OutputSpec,
        directory: Path,
        name: str,
        on_progress: Callable[[int, int], Awaitable[None]] | None = None,
    ) -> None:
        self.spec = spec
        self.directory = directory
        self.name = name
        self.parts: list[FileWriter] = []
        self.rows = 0
        self._on_progress = on_progress
        self._current: _Part | None = None
        self._books: list[XlsxBook] = []  # workbooks not closed yet
        self._sealed_bytes = 0
        self._labels: list[str] | None = None
        self._header: bytes | None = None  # the CSV bytes' header line (b"": none)
        self._encoder: CsvEncoder | None = None
        self._failure: BaseException | None = None
        self._done = anyio.Event()
        self._stack = AsyncExitStack()
        # A thread of this output's own: never one of the shared pool's, which a few slow disks
        # could otherwise exhaust while fetch threads wait on their hand-offs.
        self._thread = anyio.CapacityLimiter(1)
        self._send: MemoryObjectSendStream[_Item] | None = None
        self._tg: anyio.abc.TaskGroup

    @property
    def bytes_written(self) -> int:
        current = self._current.size if self._current is not None else 0
        return self._sealed_bytes + current

    async def __aenter__(self) -> VariantOutput:
        send, receive = anyio.create_memory_object_stream[_Item](HANDOFF_BATCHES)
        self._send = send
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._tg.start_soon(self._consume, receive)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._send is not None
        self._send.close()  # the consumer ends after the batch in hand
        if exc is not None:
            self._tg.cancel_scope.cancel()
        try:
            # The block's own exception is not the task group's: it propagates as it is,
            # never wrapped in an exception group.
            await self._stack.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._discard, limiter=self._thread)

    def _discard(self) -> None:
        for book in self._books:
            book.abort()
        for writer in self.parts:
            if not writer.committed:
                writer.discard_sync()

    # --- the sink ------------------------------------------------------------------------

    async def write(self, chunk: bytes, rows: int) -> None:
        """CSV bytes (header included in the first chunk) for ``rows`` rows."""
        await self._hand_off((None, chunk, rows))

    async def write_rows(self, header: Sequence[str], batch: Sequence[Row]) -> None:
        """A batch of rows of a result whose column labels are ``header``."""
        if batch:
            await self._hand_off((header, batch, len(batch)))

    async def _hand_off(self, item: _Item) -> None:
        if self._failure is not None:
            raise self._failure
        assert self._send is not None
        try:
            await self._send.send(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            if self._failure is None:
                raise
            raise self._failure from None

    async def finish(self) -> int:
        """Wait for every batch handed off, seal the last part, name the parts; the number of
        rows."""
        assert self._send is not None
        await self._send.aclose()
        await self._done.wait()
        if self._failure is not None:
            raise self._failure
        await anyio.to_thread.run_sync(disk_call, self._close_part, limiter=self._thread)
        if len(self.parts) == 1:  # split files that all fit in one: no part number
            self.parts[0].rename(self.name)
        return self.rows

    # --- the consumer --------------------------------------------------------------------

    async def _consume(self, receive: anyio.abc.ObjectReceiveStream[_Item]) -> None:
        try:
            async with receive:
                async for item in receive:
                    try:
                        await anyio.to_thread.run_sync(
                            disk_call, lambda i=item: self._process(i), limiter=self._thread
                        )
                    except Exception as exc:
                        # The next hand-off raises it (the receiving end closes now), so the
                        # provider stops the query and the variant fails with this error.
                        self._failure = exc
                        return
                    if self._on_progress is not None:
                        await self._on_progress(self.rows, self.bytes_written)
        finally:
            self._done.set()

    def _process(self, item: _Item) -> None:
        if item[0] is None:
            _, chunk, count = item
            if self.spec.format == "xlsx":
                raise RuntimeError("CSV bytes for an XLSX output")
            if self.spec.splits:
                self._add_bytes(chunk, count)
                return
            part = self._current or self._open_part(None)
            assert isinstance(part, _CsvPart)
            part.put(chunk, count)
            self.rows += count
            return
        header, batch, _ = item
        if self._labels is None:
            self._labels = list(header)  # XLSX: XlsxBook refuses more than Excel's columns
            self._encoder = self.spec.style.encoder(self._labels)
        self._add_rows(batch)

    def _add_rows(self, batch: Sequence[Row]) -> None:
        max_rows, max_bytes = self.spec.max_rows_per_file, self.spec.max_bytes_per_file
        start = 0
        while start < len(batch):
            part = self._current or self._open_part(self._labels)
            take = batch[start:]
            if max_rows:
                take = take[: max_rows - part.rows]
            if isinstance(part, _XlsxPart):
                part.add(take)
            else:
                assert self._encoder is not None
                data = self._encoder.encode(take, self.rows + 1)
                if max_bytes:
                    while part.size + len(data) > max_bytes and len(take) > 1:
                        take = take[: len(take) // 2]
                        data = self._encoder.encode(take, self.rows + 1)
                    if part.size + len(data) > max_bytes and part.rows:
                        self._close_part()  # full: the rows go to the next part
                        continue
                part.put(data, len(take))
            self.rows += len(take)
            start += len(take)
            if (max_rows and part.rows >= max_rows) or (max_bytes and part.size >= max_bytes):
                self._close_part()

    def _add_bytes(self, chunk: bytes, count: int) -> None:
        """CSV bytes of whole records (the header line first in the first chunk, when asked
        for) into parts cut at record ends, each part starting with the header line: the
        server's own CSV, split without reformatting a value."""
        if self._header is None:
            self._header = b""
            if self.spec.style.header:
                end = record_ends(chunk, 1)[0]
                self._header, chunk = chunk[:end], chunk[end:]
        max_rows, max_bytes = self.spec.max_rows_per_file, self.spec.max_bytes_per_file
        ends: list[int] | None = None  # record ends in the chunk, found once a cut is needed
        start = done = 0  # offset and records of the chunk already written
        while start < len(chunk):
            part = self._current or self._open_part(None, self._header)
            take = count - done
            if max_rows:
                take = min(take, max_rows - part.rows)
            end = len(chunk)
            if take < count - done or (max_bytes and part.size + end - start > max_bytes):
                if ends is None:
                    ends = record_ends(chunk)
                if max_bytes:
                    reach = max_bytes - part.size + start  # the chunk offset the part may reach
                    fits = bisect.bisect_right(ends, reach, done, done + take) - done
                    if not fits and part.rows:
                        self._close_part()  # full: the records go to the next part
                        continue
                    take = max(fits, 1)  # a record longer than the limit: a part of its own
                end = ends[done + take - 1]
            assert isinstance(part, _CsvPart)
            part.put(chunk[start:end], take)
            self.rows += take
            done += take
            start = end
            if (max_rows and part.rows >= max_rows) or (max_bytes and part.size >= max_bytes):
                self._close_part()

    def _open_part(self, labels: Sequence[str] | None, header: bytes | None = None) -> _Part:
        spec = self.spec
        index = len(self.parts) + 1
        name = part_name(self.name, index) if spec.splits else self.name
        writer = FileWriter(self.directory, name, file_mode=spec.file_mode, dir_mode=spec.dir_mode)
        self.parts.append(writer)
        part: _Part
        if spec.format == "xlsx":
            part = _XlsxPart(writer, spec, labels or [])
            self._books.append(part.book)
        else:
            if labels is not None and spec.style.header:
                assert self._encoder is not None
                header = self._encoder.header()
            part = _CsvPart(writer, spec, header or None)
        self._current = part
        return part

    def _close_part(self) -> None:
        part, self._current = self._current, None
        if part is not None:
            part.seal()
            if isinstance(part, _XlsxPart):
                self._books.remove(part.book)
            self._sealed_bytes += part.size


__all__ = ["HANDOFF_BATCHES", "OutputSpec", "VariantOutput"]
