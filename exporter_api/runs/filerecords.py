"""The export files a run recorded (table ``run_files``): one row per committed file.

A file is recorded in the same transaction as the variant change that produced it
(`RunRepository.save`), so the store never lists a file of a variant it does not call
finished; these are that row's type and its queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter_api.runs.models import RunFile
from exporter_api.runs.writers.formats import format_of

if TYPE_CHECKING:
    from exporter_api.store import Store


@dataclass(frozen=True)
class StoredFile:
    run_id: str
    file_id: str
    group_id: str
    script_id: str
    variant: int
    name: str
    size_bytes: int
    rows: int
    sha256: str
    created_at: str
    # How the file is served (``text/csv; charset=windows-1251``); None: recorded before the
    # media type was, known by its name's format only.
    media_type: str | None = None

    @property
    def path(self) -> str:
        return f"/api/runs/{self.run_id}/files/{self.file_id}"

    def dto(self, download_url: str, media_type: str) -> RunFile:
        """As listed: ``media_type`` is what the download serves (see
        `service.served_media_type`)."""
        return RunFile(
            file_id=self.file_id,
            group_id=self.group_id,
            script_id=self.script_id,
            variant=self.variant,
            name=self.name,
            size_bytes=self.size_bytes,
            rows=self.rows,
            sha256=self.sha256,
            created_at=self.created_at,
            download_url=download_url,
            format=format_of(self.name),
            media_type=media_type,
        )


_FILE_COLUMNS = (
    "run_id, file_id, group_id, script_id, variant, name, size_bytes, rows, sha256, created_at,"
    " media_type"
)


def _file(row: tuple[Any, ...]) -> StoredFile:
    return StoredFile(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        int(row[4]),
        str(row[5]),
        int(row[6]),
        int(row[7]),
        str(row[8]),
        str(row[9]),
        None if row[10] is None else str(row[10]),
    )


async def insert(store: Store, file: StoredFile) -> None:
    """Record ``file`` (inside the caller's transaction)."""
    await store.execute(
        f"INSERT INTO run_files ({_FILE_COLUMNS}) VALUES (:run_id, :file_id,"  # noqa: S608
        " :group_id, :script_id, :variant, :name, :size_bytes, :rows, :sha256,"
        " :created_at, :media_type)",
        {
            "run_id": file.run_id,
            "file_id": file.file_id,
            "group_id": file.group_id,
            "script_id": file.script_id,
            "variant": file.variant,
            "name": file.name,
            "size_bytes": file.size_bytes,
            "rows": file.rows,
            "sha256": file.sha256,
            "created_at": file.created_at,
            "media_type": file.media_type,
        },
    )


async def files(store: Store, run_id: str) -> list[StoredFile]:
    """The files of a run, in the order they were recorded."""
    rows = await store.fetch_all(
        f"SELECT {_FILE_COLUMNS} FROM run_files WHERE run_id = :run_id"  # noqa: S608
        " ORDER BY created_at, name, file_id",  # parts of a variant share created_at
        {"run_id": run_id},
    )
    return [_file(r) for r in rows]


async def file(store: Store, run_id: str, file_id: str) -> StoredFile | None:
    row = await store.fetch_one(
        f"SELECT {_FILE_COLUMNS} FROM run_files"  # noqa: S608
        " WHERE run_id = :run_id AND file_id = :file_id",
        {"run_id": run_id, "file_id": file_id},
    )
    return _file(row) if row is not None else None


__all__ = ["StoredFile", "file", "files", "insert"]
