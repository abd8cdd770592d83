"""The streamed ZIP of a run's files, driven as an ASGI app on real files."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.types import Message

from exporter_api.runs.api import ZipStreamResponse
from exporter_api.runs.repository import StoredFile


def _stored(name: str, size: int) -> StoredFile:
    return StoredFile(
        run_id="R",
        file_id=name,
        group_id="g",
        script_id="s",
        variant=1,
        name=name,
        size_bytes=size,
        rows=1,
        sha256="",
        created_at=datetime.now(UTC).isoformat(),
    )


async def _serve(response: ZipStreamResponse) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:  # pragma: no cover - the response never reads
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}
    await response(scope, receive, send)
    return sent


async def test_archive_of_the_run_files(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"x,y\n1,2\n")
    response = ZipStreamResponse(tmp_path, [_stored("a.csv", 8)], "run.zip")
    sent = await _serve(response)
    assert sent[0]["status"] == 200
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.read("a.csv") == b"x,y\n1,2\n"


async def test_read_error_after_the_response_started_ends_the_body(tmp_path: Path) -> None:
    # A regular file whose read fails with EIO: a real OSError from the file system while the
    # archive is being streamed (the status line is already sent).
    (tmp_path / "a.csv").write_bytes(b"x\n" * 200_000)
    (tmp_path / "b.csv").symlink_to("/proc/self/mem")
    files = [_stored("a.csv", 400_000), _stored("b.csv", 0)]
    sent = await _serve(ZipStreamResponse(tmp_path, files, "run.zip"))
    assert sent[0]["type"] == "http.response.start"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
