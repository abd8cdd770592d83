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
