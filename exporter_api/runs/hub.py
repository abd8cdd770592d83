"""``RunsHub`` (``/hubs/runs``): subscribe to a run's live events.

Clients authenticate with the same access token as the REST API (``Authorization: Bearer`` or
the ``access_token`` query parameter). ``SubscribeRun(runId)`` first joins the connection to the
group ``runs:{runId}`` and only then reads the run's state, so any change persisted after that
read is also delivered as an event: nothing is missed between a page reload and the
subscription.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

from exporter_api.runs.errors import RunError
from exporter_api.runs.models import RunState
from exporter_api.security import AuthenticatedUser
from signalr_core import Hub, HubException, hub_method

if TYPE_CHECKING:
    from exporter_api.runs.service import RunService
    from signalr_core.clients import HubContext


def run_group(run_id: str) -> str:
    return f"runs:{run_id}"


class HubBackend(Protocol):
    @property
    def service(self) -> RunService: ...

    async def session_live(self, session_id: str) -> bool: ...

    def connection_opened(self, connection_id: str, session_id: str) -> None: ...

    def connection_closed(self, connection_id: str) -> None: ...


class HubPublisher:
    """The engine's ``EventPublisher``: sends to the run's SignalR group."""

    def __init__(self, hub_context: HubContext) -> None:
        self._hub_context = hub_context

    async def publish(self, run_id: str, method: str, payload: object) -> None:
        await self._hub_context.clients.group(run_group(run_id)).send(method, payload)


class RunsHub(Hub):
    """Live run events. Bound to its backend by :func:`bind_runs_hub`."""

    authorize = True
    backend: ClassVar[HubBackend]

    async def _user(self) -> AuthenticatedUser:
        principal = self.context.user
        user = principal.claims.get("user") if principal is not None else None
        if user is None:
            raise HubException("Unauthorized")
        # Checked again on every call: a session revoked by logout stops working at once,
        # while an access token that merely expired during a long-lived connection does not
        # end it (the token was verified when the connection was made).
        if not await self.backend.session_live(user.session_id):
            raise HubException("Unauthorized: the session has ended, log in again")
        assert isinstance(user, AuthenticatedUser)
        return user

    async def on_connected(self) -> None:
        principal = self.context.user
        user = principal.claims.get("user") if principal is not None else None
        if isinstance(user, AuthenticatedUser):
            self.backend.connection_opened(self.context.connection_id, user.session_id)

    async def on_disconnected(self, error: Exception | None) -> None:
        self.backend.connection_closed(self.context.connection_id)

    @hub_method("SubscribeRun")
    async def subscribe_run(self, run_id: str) -> RunState:
        user = await self._user()
        service = self.backend.service
        try:
            await service.check_owner(user, run_id)
            await self.groups.add(self.context.connection_id, run_group(run_id))
            return await service.state(user, run_id)
        except RunError:  # the hub's one mapping: every run error reads as "not found"
            raise HubException(f"Run {run_id} not found") from None

    @hub_method("UnsubscribeRun")
    async def unsubscribe_run(self, run_id: str) -> None:
        await self.groups.remove(self.context.connection_id, run_group(run_id))


def bind_runs_hub(backend: HubBackend) -> type[RunsHub]:
    """A ``RunsHub`` subclass wired to ``backend`` (one per app; no module globals)."""
    return type("RunsHub", (RunsHub,), {"backend": backend})
