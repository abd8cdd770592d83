"""One call per event site: the audit record and the metric of each event the app sees.

The REST handlers and the run lifecycle call these; each knows what to record and count, so
the handlers stay as they were plus one line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from exporter_api.audit import records
from exporter_api.errors import TooManyRequests

if TYPE_CHECKING:
    from starlette.requests import Request

    from exporter_api.audit.trail import AuditTrail
    from exporter_api.metrics import Metrics
    from exporter_api.runs.filerecords import StoredFile
    from exporter_api.runs.models import RunState
    from exporter_api.runs.repository import RunRepository
    from exporter_api.security import AuthenticatedUser
    from exporter_api.security.throttle import LoginAttempt
    from exporter_api.services import Services


def client_of(request: Request) -> str:
    """The client's address (after `ProxyHeadersMiddleware` believed a trusted proxy)."""
    return request.client.host if request.client else ""


class LoginOf(NamedTuple):
    """Who a login attempt is for (never the password)."""

    login: str
    database_id: str
    manager_id: str
    stream_id: str


async def _login_event(
    svc: Services, request: Request, who: LoginOf, action: str, outcome: str, **details: Any
) -> None:
    svc.metrics.login(who.database_id, outcome)
    await svc.audit.record(
        action,
        login=who.login,
        database_id=who.database_id,
        client=client_of(request),
        details={"manager_id": who.manager_id, "stream_id": who.stream_id, **details},
    )


@asynccontextmanager
async def login_attempt(
    svc: Services, request: Request, who: LoginOf, key: str, time_limit_s: float
) -> AsyncIterator[LoginAttempt]:
    """``svc.throttle.attempt(...)``, recording a refusal (429) as ``login.throttled``: once
    per key and ``Retry-After`` window, so unauthenticated requests cannot flood the trail
    (every refusal is still counted in the metrics)."""
    async with AsyncExitStack() as stack:
        try:
            attempt = await stack.enter_async_context(svc.throttle.attempt(key, time_limit_s))
        except TooManyRequests as exc:
            if svc.audit.first_in_window(key, exc.retry_after_s or 60):
                await _login_event(svc, request, who, records.LOGIN_THROTTLED, "throttled")
            else:
                svc.metrics.login(who.database_id, "throttled")
            raise
        yield attempt


async def login(
    svc: Services,
    request: Request,
    who: LoginOf,
    locked_out: bool,
    failure: str | None = None,
    *,
    session_id: str | None = None,
) -> None:
    """A login's outcome: succeeded (``failure`` None), or failed for ``failure``
    (``invalid_credentials``, ``database_unavailable``); ``locked_out`` when that failure
    locked the login out (a second record, ``login.locked_out``)."""
    if failure is None:
        await _login_event(
            svc, request, who, records.LOGIN_SUCCEEDED, "succeeded", session_id=session_id
        )
        return
    # A database that did not answer is not the user's failure: counted apart.
    outcome = "failed" if failure == "invalid_credentials" else "error"
    await _login_event(svc, request, who, records.LOGIN_FAILED, outcome, reason=failure)
    if locked_out:
        await _login_event(svc, request, who, records.LOGIN_LOCKED_OUT, "locked_out")


async def logout(svc: Services, request: Request, session_id: str) -> None:
    """Before the session is revoked (its user is read from it)."""
    user = await svc.tokens.session_user(session_id)
    await svc.audit.record(
        records.LOGOUT,
        login=user.login if user else "",
        database_id=user.database_id if user else "",
        client=client_of(request),
        details={"session_id": session_id},
    )


async def run_started(
    svc: Services, request: Request, user: AuthenticatedUser, state: RunState
) -> None:
    await svc.audit.record(
        records.RUN_STARTED,
        login=user.login,
        database_id=user.database_id,
        client=client_of(request),
        run_id=state.run_id,
        details=records.run_started_details(state, svc.config),
    )


async def run_cancelled(
    svc: Services, request: Request, user: AuthenticatedUser, state: RunState
) -> None:
    await svc.audit.record(
        records.RUN_CANCEL_REQUESTED,
        login=user.login,
        database_id=user.database_id,
        client=client_of(request),
        run_id=state.run_id,
        details={"status": state.status},
    )


async def download(
    svc: Services,
    request: Request,
    user: AuthenticatedUser,
    run_id: str,
    files: list[StoredFile],
    *,
    signed: bool,
    zipped: bool = False,
) -> None:
    """A download served (every check that could refuse it passed), before its status line:
    one that cannot be recorded is refused still (503)."""
    via = "link" if signed else "token"
    await svc.audit.record(
        records.DOWNLOAD_ZIP if zipped else records.DOWNLOAD_FILE,
        login=user.login,
        database_id=user.database_id,
        client=client_of(request),
        run_id=run_id,
        details=records.download_details(
            files, via=via, ranged=request.headers.get("range") is not None
        ),
        required=True,
    )
    svc.metrics.download("zip" if zipped else "file", via)  # recorded: it is served


class RunEndRecorder:
    """The run lifecycle's observer: a run reached its final status here (once per run)."""

    def __init__(self, audit: AuditTrail, metrics: Metrics, repository: RunRepository) -> None:
        self.audit = audit
        self.metrics = metrics
        self.repository = repository

    async def run_ended(self, state: RunState) -> None:
        self.metrics.run_ended(state)
        files = await self.repository.files(state.run_id)
        await self.audit.record(
            records.RUN_ENDED,
            login=state.login,
            database_id=state.database_id,
            run_id=state.run_id,
            details=records.run_ended_details(state, files),
        )


__all__ = [
    "LoginOf",
    "RunEndRecorder",
    "client_of",
    "download",
    "login",
    "login_attempt",
    "logout",
    "run_cancelled",
    "run_started",
]
