"""A real in-memory sink for provider tests (records what an export writes)."""

from __future__ import annotations

import anyio


class CollectingSink:
    def __init__(self, delay_s: float = 0.0, max_bytes: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.rows: list[int] = []
        self.delay_s = delay_s
        self.max_bytes = max_bytes
        self.first_write = anyio.Event()

    async def write(self, chunk: bytes, rows: int) -> None:
        self.first_write.set()
        if self.max_bytes is None or sum(map(len, self.chunks)) < self.max_bytes:
            self.chunks.append(chunk)
        self.rows.append(rows)
        if self.delay_s:
            await anyio.sleep(self.delay_s)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def lines(self) -> list[str]:
        return self.data.decode("utf-8").splitlines()


class FailingSink(CollectingSink):
    """Raises `error` from write number `fail_on` (as a file writer hitting a full disk would)."""

    def __init__(self, error: BaseException, fail_on: int = 1) -> None:
        super().__init__(max_bytes=1)
        self.error, self.fail_on = error, fail_on

    async def write(self, chunk: bytes, rows: int) -> None:
        await super().write(chunk, rows)
        if len(self.rows) == self.fail_on:
            raise self.error
