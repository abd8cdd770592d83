"""The run service: what a user may do with runs, shared by the REST API and the hub.

Ownership is checked here once: a run that is not the caller's is `RunNotFound`, exactly like a
run that does not exist, so run ids of other users cannot be probed through either edge. States
read for a user carry the run's files with signed download links for the user's session.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from exporter_api.runs.errors import RunNotFound
from exporter_api.runs.models import RUN_ID_PATTERN, RunFiles, RunList, RunState, format_time
from exporter_api.runs.writers.formats import format_of, media_type
from exporter_api.security.links import ZIP_TARGET

if TYPE_CHECKING:
    from exporter_api.runs.engine import RunEngine
    from exporter_api.runs.filerecords import StoredFile
    from exporter_api.runs.repository import RunOwner, RunRepository
    from exporter_api.runs.selection import RunPlan
    from exporter_api.security import AuthenticatedUser
    from exporter_api.security.links import DownloadLinks

_ULID = re.compile(RUN_ID_PATTERN)


def is_run_id(value: str) -> bool:
    return bool(_ULID.match(value))


def owns(owner: RunOwner | None, user: AuthenticatedUser) -> bool:
    return owner is not None and owner.owns(
        user.login, user.database_id, user.manager_id, user.stream_id
    )


def served_media_type(stored: StoredFile, encoding: str) -> str:
    """What ``stored`` is listed and downloaded as: the media type recorded with it (its
    profile's charset for a CSV), or for a file recorded before media types were (migration
    0008), its name's format with a CSV in ``encoding`` (``[output] encoding``)."""
    if stored.media_type is not None:
        return stored.media_type
    return media_type(format_of(stored.name), encoding)


def sign_files(
    links: DownloadLinks,
    run_id: str,
    files: list[StoredFile],
    user: AuthenticatedUser,
    encoding: str,
) -> RunFiles:
    """The run's files with signed download links for ``user``'s session (and the zip's), each
    with the media type its download is served with (``encoding``: see `served_media_type`)."""
    now = time.time()
    dtos = []
    expires = 0
    for stored in files:
        sig, expires = links.mint(run_id, stored.file_id, user.session_id, now)
        dtos.append(stored.dto(f"{stored.path}?sig={sig}", served_media_type(stored, encoding)))
    sig, expires = links.mint(run_id, ZIP_TARGET, user.session_id, now)
    return RunFiles(
        run_id=run_id,
        files=dtos,
        zip_url=f"/api/runs/{run_id}/{ZIP_TARGET}?sig={sig}",
        links_expire_at=format_time(datetime.fromtimestamp(expires, UTC)),
    )


async def state_for(
    repository: RunRepository,
    links: DownloadLinks,
    run_id: str,
    user: AuthenticatedUser,
    encoding: str,
) -> RunState | None:
    """The stored state of ``run_id`` with its files and signed links (for a page reload)."""
    state = await repository.load(run_id)
    if state is None:
        return None
    signed = sign_files(links, run_id, await repository.files(run_id), user, encoding)
    state.files = signed.files
    state.zip_url = signed.zip_url
    state.links_expire_at = signed.links_expire_at
    return state


class RunService:
    def __init__(
        self, repository: RunRepository, engine: RunEngine, links: DownloadLinks, encoding: str
    ) -> None:
        self.repository = repository
        self.engine = engine
        self.links = links
        self.encoding = encoding  # [output] encoding: see `served_media_type`

    async def check_owner(self, user: AuthenticatedUser, run_id: str) -> None:
        """``RunNotFound`` unless ``run_id`` is one of ``user``'s runs."""
        if not is_run_id(run_id) or not owns(await self.repository.owner(run_id), user):
            raise RunNotFound()

    async def start(self, user: AuthenticatedUser, plan: RunPlan) -> RunState:
        return await self.engine.start(user, plan)

    async def state(self, user: AuthenticatedUser, run_id: str) -> RunState:
        await self.check_owner(user, run_id)
        state = await state_for(self.repository, self.links, run_id, user, self.encoding)
        if state is None:  # deleted by the retention sweep in between
            raise RunNotFound()
        return state

    async def cancel(self, user: AuthenticatedUser, run_id: str) -> RunState:
        """Cancel and return the state after the cancel took effect (bounded wait)."""
        await self.check_owner(user, run_id)
        await self.engine.cancel(run_id)
        return await self.state(user, run_id)

    async def files(self, user: AuthenticatedUser, run_id: str) -> RunFiles:
        await self.check_owner(user, run_id)
        files = await self.repository.files(run_id)
        return sign_files(self.links, run_id, files, user, self.encoding)

    async def list(self, user: AuthenticatedUser, *, limit: int, cursor: str | None) -> RunList:
        """A page of the user's runs, newest first."""
        items = await self.repository.list_runs(
            user.login,
            user.database_id,
            user.manager_id,
            user.stream_id,
            limit=limit + 1,
            cursor=cursor,
        )
        more = len(items) > limit
        items = items[:limit]
        return RunList(items=items, next_cursor=items[-1].run_id if more and items else None)


__all__ = ["RunService", "is_run_id", "owns", "served_media_type", "sign_files", "state_for"]
