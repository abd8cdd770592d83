"""``RunsHub`` (``/hubs/runs``): subscribe to a run's live events.

Clients authenticate with the same access token as the REST API (``Authorization: Bearer`` or
the ``access_token`` query parameter). A connection joins the group ``runs:{runId}`` of a run it
owns in one of three ways, so a frontend written against the contract works unchanged:

- ``SubscribeRun(runId)`` (and any alias an operator lists in ``[server.hub]
  subscribe_methods``; the argument may be the id or ``{ "runId": ... }``) first joins the group
  and only then reads the run's state, which it returns: any change persisted after that read is
  also delivered as an event, so nothing is missed between a page reload and the subscription.
- ``/hubs/runs?runId=...`` (the parameter may repeat): joined right after the handshake, before
  the connection reads anything; then the caller gets one ``run.updated`` with the status read
  *after* the join, so it starts from a status no later event can be older than.
- The user feed (``[server.hub] user_feed``): every connection is also in its user's group and
  receives ``run.updated`` for each of the user's runs (one ``groups`` send, each connection
  gets an event once even when it is in both groups).

A run that is not the caller's is refused the same way on every path (``RunNotFound`` from the
service, a log line, no group joined), so run ids of others cannot be probed or watched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import quote

import anyio
import msgspec
import structlog

from exporter_api.config import BUILTIN_SUBSCRIBE, BUILTIN_UNSUBSCRIBE, HubConfig
from exporter_api.runs.errors import RunError
from exporter_api.runs.models import RUN_UPDATED, RunState, RunUpdated
from exporter_api.security import AuthenticatedUser
from signalr_core import Hub, HubException, hub_method
from signalr_core.redis import RedisBackplaneError

if TYPE_CHECKING:
    from exporter_api.metrics import Metrics
    from exporter_api.runs.repository import RunOwner
    from exporter_api.runs.service import RunService
    from signalr_core.clients import HubContext

_OWNER_LOOKUP_TIMEOUT_S = 2.0
_log = structlog.get_logger("exporter_api.runs.hub")

RUN_ID_PARAMETER = "runId"
MAX_QUERY_RUNS = 32
"""At most this many ``runId`` query values are joined per connection (each costs a read)."""


def run_group(run_id: str) -> str:
    return f"runs:{run_id}"


class _Owned(Protocol):
    @property
    def login(self) -> str: ...
    @property
    def database_id(self) -> str: ...
    @property
    def manager_id(self) -> str: ...
    @property
    def stream_id(self) -> str: ...


def user_group(who: _Owned) -> str:
    """The user feed's group: the four fields a run's ownership compares (``RunOwner.owns``),
    so a connection hears exactly the runs ``GET /api/runs`` lists for it."""
    parts = (who.login, who.database_id, who.manager_id, who.stream_id)
    return "user:" + "/".join(quote(p, safe="") for p in parts)


class RunRef(msgspec.Struct, rename="camel", kw_only=True):
    """The object form of a subscription argument: ``{ "runId": "01H..." }``."""

    run_id: str


RunArgument = str | RunRef


def _run_id(argument: RunArgument) -> str:
    return argument.run_id if isinstance(argument, RunRef) else argument


class HubBackend(Protocol):
    @property
    def service(self) -> RunService: ...

    async def session_live(self, session_id: str) -> bool: ...

    async def events_caught_up(self) -> None: ...

    def connection_opened(self, connection_id: str, session_id: str, transport: str) -> None: ...

    def connection_closed(self, connection_id: str) -> None: ...


OwnerLookup = Callable[[str], Awaitable["RunOwner | None"]]


class HubPublisher:
    """The engine's ``EventPublisher``: sends to the run's SignalR group, and ``run.updated``
    also to its owner's user group when the user feed is on (``owners`` given)."""

    def __init__(
        self,
        hub_context: HubContext,
        *,
        owners: OwnerLookup | None = None,
        cache: int = 1024,
        metrics: Metrics | None = None,
    ) -> None:
        self._hub_context = hub_context
        self._metrics = metrics
        self._owners = owners
        self._cache_size = cache
        self._user_groups: dict[str, str] = {}  # run id -> owner's group (owners never change)

    async def publish(self, run_id: str, method: str, payload: object) -> None:
        try:
            await self._publish(run_id, method, payload)
        except RedisBackplaneError:
            if self._metrics is not None:
                self._metrics.backplane_failure()
            raise
        if self._metrics is not None:
            self._metrics.hub_message(method)

    async def _publish(self, run_id: str, method: str, payload: object) -> None:
        clients = self._hub_context.clients
        if method == RUN_UPDATED and self._owners is not None:
            group = await self._user_group(run_id)
            if group is not None:
                await clients.groups([run_group(run_id), group]).send(method, payload)
                return
        await clients.group(run_group(run_id)).send(method, payload)

    async def _user_group(self, run_id: str) -> str | None:
        group = self._user_groups.get(run_id)
        if group is not None:
            return group
        assert self._owners is not None
        try:
            # Bounded: the outbox's one sender waits on it, every run's events behind it.
            with anyio.fail_after(_OWNER_LOOKUP_TIMEOUT_S):
                owner = await self._owners(run_id)
        except Exception as exc:  # the run's own group still gets the event
            _log.warning("run_owner_lookup_failed", run_id=run_id, error_type=type(exc).__name__)
            return None
        if owner is None:
            return None
        if len(self._user_groups) >= self._cache_size:  # bounded: forget the oldest entry
            del self._user_groups[next(iter(self._user_groups))]
        group = self._user_groups[run_id] = user_group(owner)
        return group


class RunsHub(Hub):
    """Live run events. Bound to its backend and settings by :func:`bind_runs_hub`."""

    authorize = True
    backend: ClassVar[HubBackend]
    settings: ClassVar[HubConfig] = HubConfig()

    def _connected_user(self) -> AuthenticatedUser | None:
        principal = self.context.user
        user = principal.claims.get("user") if principal is not None else None
        return user if isinstance(user, AuthenticatedUser) else None

    async def _user(self) -> AuthenticatedUser:
        user = self._connected_user()
        if user is None:
            raise HubException("Unauthorized")
        # Checked again on every call: a session revoked by logout stops working at once,
        # while an access token that merely expired during a long-lived connection does not
        # end it (the token was verified when the connection was made).
        if not await self.backend.session_live(user.session_id):
            raise HubException("Unauthorized: the session has ended, log in again")
        return user

    async def on_connected(self) -> None:
        user = self._connected_user()
        if user is None:
            return
        connection_id = self.context.connection_id
        if self.settings.user_feed:
            await self.groups.add(connection_id, user_group(user))
        run_ids = list(dict.fromkeys(self.context.query_values.get(RUN_ID_PARAMETER, ())))
        if len(run_ids) > MAX_QUERY_RUNS:
            _log.info(
                "hub_query_runs_truncated",
                connection_id=connection_id,
                count=len(run_ids),
                limit=MAX_QUERY_RUNS,
            )
        for run_id in run_ids[:MAX_QUERY_RUNS]:
            state = await self._join(user, run_id, via="query")
            if state is not None:
                # The status read after the join: later events cannot be older than it.
                update = RunUpdated(
                    run_id=state.run_id, status=state.status, updated_at=state.updated_at
                )
                await self.clients.caller.send(RUN_UPDATED, update)
        # Last: signalr_core calls on_disconnected only after on_connected has succeeded.
        self.backend.connection_opened(connection_id, user.session_id, self.context.transport)

    async def on_disconnected(self, error: Exception | None) -> None:
        self.backend.connection_closed(self.context.connection_id)

    async def _join(self, user: AuthenticatedUser, run_id: str, *, via: str) -> RunState | None:
        """Join ``run_id``'s group, then read its state; ``None`` (logged) if it is not the
        user's run: every way in refuses the same runs."""
        service = self.backend.service
        connection_id = self.context.connection_id
        joined = False
        try:
            await service.check_owner(user, run_id)
            await self.groups.add(connection_id, run_group(run_id))
            joined = True
            state = await service.state(user, run_id)
            # Events of changes this instance saved before the read may still be queued for
            # the hub: they go out first, so none the caller gets after this is older.
            await self.backend.events_caught_up()
            return state
        except RunError:
            if joined:  # deleted by the retention sweep between the join and the read
                await self.groups.remove(connection_id, run_group(run_id))
            _log.info(
                "hub_subscribe_refused", connection_id=connection_id, run_id=run_id[:64], via=via
            )
            return None

    @hub_method(BUILTIN_SUBSCRIBE)
    async def subscribe_run(self, run: RunArgument) -> RunState:
        run_id = _run_id(run)
        state = await self._join(await self._user(), run_id, via="method")
        if state is None:  # the hub's one mapping: every run error reads as "not found"
            raise HubException(f"Run {run_id} not found")
        return state

    @hub_method(BUILTIN_UNSUBSCRIBE)
    async def unsubscribe_run(self, run: RunArgument) -> None:
        await self.groups.remove(self.context.connection_id, run_group(_run_id(run)))


def _subscribe_alias(name: str) -> Callable[..., Any]:
    async def alias(self: RunsHub, run: RunArgument) -> RunState:
        return await self.subscribe_run(run)

    return hub_method(name)(alias)


def _unsubscribe_alias(name: str) -> Callable[..., Any]:
    async def alias(self: RunsHub, run: RunArgument) -> None:
        await self.unsubscribe_run(run)

    return hub_method(name)(alias)


def _key(name: str) -> str:
    return name.replace("_", "").lower()  # how signalr_core matches wire names


def bind_runs_hub(backend: HubBackend, settings: HubConfig | None = None) -> type[RunsHub]:
    """A ``RunsHub`` subclass wired to ``backend`` (one per app; no module globals), answering
    the method names of ``settings`` too (validated by the config: no clashes)."""
    settings = settings or HubConfig()
    namespace: dict[str, Any] = {"backend": backend, "settings": settings}
    builtin = {_key(BUILTIN_SUBSCRIBE), _key(BUILTIN_UNSUBSCRIBE)}
    for kind, names, make in (
        ("subscribe", settings.subscribe_methods, _subscribe_alias),
        ("unsubscribe", settings.unsubscribe_methods, _unsubscribe_alias),
    ):
        for index, name in enumerate(names):
            if _key(name) not in builtin:
                namespace[f"_{kind}_alias_{index}"] = make(name)
    return type("RunsHub", (RunsHub,), namespace)
