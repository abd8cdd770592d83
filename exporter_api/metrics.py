"""Prometheus metrics: `GET /metrics` (text format 0.0.4) through prometheus-client.

Theory of operation
-------------------
Two kinds of numbers, read two ways:

* Events are counted where they happen, in this process: logins, runs ended (by status), rows
  and bytes exported, script durations, queue waits, downloads, hub connections (per
  transport), hub messages sent, slow-consumer aborts (signalr_core's
  ``HubOptions.on_slow_consumer``), backplane publish failures of run events. `Metrics` owns one
  ``CollectorRegistry`` per app (made in `create_app`, never a module global), so several apps
  in one process (tests) do not collide.
* State shared by every instance is read from the state store when scraped: runs active now
  (Queued, Running) and database connections in use (slot leases of live instances) per
  database. Every instance answers the same value for these: aggregate them with ``max``,
  not ``sum``.

``serve --workers N`` (one port, N processes): a scrape reaches one worker, so the counters of
all of them are kept in files under ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess
mode, set up by `exporter_api.workers`) and the scraped worker sums them. prometheus-client
chooses the mode when it is first imported, from that variable: the supervisor sets it in the
workers' environment before they start.

Access (``[metrics]``): off unless ``enabled``; then a scrape must come from an address in
``allow_from`` (when not empty) and carry ``Authorization: Bearer <EXPORTER_METRICS_TOKEN>``
(when that token is set). One of the two must be configured.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import anyio.to_thread
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exporter_api.errors import StoreUnavailable
from exporter_api.problems import problem
from exporter_api.timestamps import parse_time

if TYPE_CHECKING:
    from exporter_api.config import ExportConfig
    from exporter_api.runs.models import RunState
    from exporter_api.store import Store

_log = structlog.get_logger("exporter_api.metrics")

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format every Prometheus reads (our names need none of 1.0.0's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_TOKEN_ENV = "EXPORTER_METRICS_TOKEN"  # noqa: S105 - the variable's name, not a secret

# Export durations: from a second to a few hours.
_DURATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def multiprocess_dir() -> str | None:
    """The multiprocess directory when prometheus-client runs in multiprocess mode."""
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def _seconds(start: str | None, end: str | None) -> float | None:
    """Seconds between two of the wire's ISO-8601 UTC times (``None`` if one is missing)."""
    if not start or not end:
        return None
    return max(0.0, (parse_time(end) - parse_time(start)).total_seconds())


class Metrics:
    """Every metric of one app, on the app's own registry."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.logins = Counter(
            "exporter_logins",
            "Login attempts by outcome (succeeded, failed, locked_out, throttled).",
            ["database", "outcome"],
            registry=registry,
        )
        self.runs_finished = Counter(
            "exporter_runs_finished",
            "Runs that ended, by final status.",
            ["database", "status"],
            registry=registry,
        )
        self.rows_exported = Counter(
            "exporter_rows_exported",
            "Rows written to export files (counted when the run ends).",
            ["database"],
            registry=registry,
        )
        self.bytes_exported = Counter(
            "exporter_bytes_exported",
            "Bytes written to export files (counted when the run ends).",
            ["database"],
            registry=registry,
        )
        self.script_duration = Histogram(
            "exporter_script_duration_seconds",
            "Time from a script's start to its end (all of its variants), per script.",
            ["database", "script"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "exporter_run_queue_wait_seconds",
            "Time from a run's creation to its start (a free instance and connection slot).",
            ["database"],
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.downloads = Counter(
            "exporter_downloads",
            "Downloads started, by kind (file, zip) and authorisation (token, link).",
            ["kind", "via"],
            registry=registry,
        )
        self.hub_connections = Gauge(
            "exporter_hub_connections",
            "Hub connections open now, per transport.",
            ["transport"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.hub_messages = Counter(
            "exporter_hub_messages_sent",
            "Run events sent to the hub (one per group send), per method.",
            ["method"],
            registry=registry,
        )
        self.hub_slow_consumers = Counter(
            "exporter_hub_slow_consumer_aborts",
            "Hub connections aborted because their outgoing buffer was full, per transport.",
            ["transport"],
            registry=registry,
        )
        self.backplane_failures = Counter(
            "exporter_backplane_publish_failures",
            "Run events the Redis backplane failed to publish.",
            registry=registry,
        )
        self.audit_failures = Counter(
            "exporter_audit_write_failures",
            "Audit records that could not be written to the state store.",
            registry=registry,
        )

    # --- events ------------------------------------------------------------------------------

    def login(self, database_id: str, outcome: str) -> None:
        self.logins.labels(database_id, outcome).inc()

    def run_ended(self, state: RunState) -> None:
        """Count a run that reached its final status (once, by the instance that ended it)."""
        db = state.database_id
        self.runs_finished.labels(db, state.status).inc()
        rows = sum(s.rows_exported for g in state.groups for s in g.scripts)
        written = sum(s.bytes_written for g in state.groups for s in g.scripts)
        if rows:
            self.rows_exported.labels(db).inc(rows)
        if written:
            self.bytes_exported.labels(db).inc(written)
        for group in state.groups:
            for script in group.scripts:
                took = _seconds(script.started_at, script.finished_at)
                if took is not None:
                    self.script_duration.labels(db, script.script_id).observe(took)
        waited = _seconds(state.created_at, state.started_at)
        if waited is not None:
            self.queue_wait.labels(db).observe(waited)

    def download(self, kind: str, via: str) -> None:
        self.downloads.labels(kind, via).inc()

    def hub_connection(self, transport: str, delta: int) -> None:
        self.hub_connections.labels(transport).inc(delta)

    def hub_message(self, method: str) -> None:
        self.hub_messages.labels(method).inc()

    def slow_consumer(self, transport: str) -> None:
        self.hub_slow_consumers.labels(transport).inc()

    def backplane_failure(self) -> None:
        self.backplane_failures.inc()

    def audit_failure(self) -> None:
        self.audit_failures.inc()

    # --- exposition --------------------------------------------------------------------------

    def render(self, shared: Iterable[Metric] = ()) -> bytes:
        """The text exposition: this process's (or, in multiprocess mode, every worker's)
        metrics, then ``shared`` (read from the store for this scrape)."""
        path = multiprocess_dir()
        if path is not None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        extra = CollectorRegistry()
        extra.register(_Fixed(list(shared)))
        return generate_latest(registry) + generate_latest(extra)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


async def store_gauges(store: Store, config: ExportConfig, stale_after_s: float) -> list[Metric]:
    """Gauges of the state every instance shares, read from the store now."""
    from exporter_api.runs.slots import held_by_database

    up = GaugeMetricFamily("exporter_store_up", "Whether the state store answered this scrape.")
    active = GaugeMetricFamily(
        "exporter_runs_active", "Runs Queued or Running now (every instance).", labels=["status"]
    )
    in_use = GaugeMetricFamily(
        "exporter_db_connections_in_use",
        "Export database connections held by running scripts now (every instance).",
        labels=["database"],
    )
    limit = GaugeMetricFamily(
        "exporter_db_connections_max",
        "Connection cap of each export database (databases.max_connections).",
        labels=["database"],
    )
    for db in config.databases:
        limit.add_metric([db.id], db.max_connections)
    try:
        by_status = dict(
            await store.fetch_all(
                "SELECT status, COUNT(*) FROM runs WHERE status IN ('Queued', 'Running')"
                " GROUP BY status"
            )
        )
        held = await held_by_database(store, stale_after_s)
    except StoreUnavailable:  # a scrape still answers (with exporter_store_up 0)
        _log.warning("metrics_store_read_failed")
        up.add_metric([], 0)
        return [up, limit]
    up.add_metric([], 1)
    for status in ("Queued", "Running"):
        active.add_metric([status], int(by_status.get(status, 0)))
    for db in config.databases:
        in_use.add_metric([db.id], int(held.get(db.id, 0)))
    return [up, active, in_use, limit]


class MetricsAccess:
    """Who may scrape: an address allow-list and/or a bearer token (both when both are set)."""

    def __init__(self, allow_from: Sequence[str], token: str | None) -> None:
        self.networks = [ipaddress.ip_network(cidr, strict=False) for cidr in allow_from]
        self.token = token or None
        if not self.networks and self.token is None:
            raise ValueError(
                "[metrics] enabled needs allow_from addresses or EXPORTER_METRICS_TOKEN"
            )

    @property
    def loopback_only(self) -> bool:
        """The allow-list names only loopback addresses (which a local proxy also has)."""
        return bool(self.networks) and all(n.is_loopback for n in self.networks)

    def allows(self, client: str | None, authorization: str | None) -> bool:
        if self.networks:
            try:
                address = ipaddress.ip_address(client or "")
            except ValueError:
                return False
            if not any(address in network for network in self.networks):
                return False
        if self.token is not None:
            scheme, _, given = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                return False
        return True


def metrics_route(path: str, access: MetricsAccess) -> Route:
    """``GET <path>``: the exposition, for allowed scrapers; 404 for everyone else (the
    endpoint does not announce itself)."""

    async def endpoint(request: Request) -> Response:
        client = request.client.host if request.client else None
        if not access.allows(client, request.headers.get("authorization")):
            _log.info("metrics_scrape_refused", client=client)
            return problem(404, "Not Found", "no such resource")
        services = request.app.state.services
        shared = await store_gauges(
            services.store, services.config, services.config.server.takeover_after_s
        )
        # Multiprocess mode reads every worker's files: off the event loop.
        body = await anyio.to_thread.run_sync(services.metrics.render, shared)
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    return Route(path, endpoint, methods=["GET"])


__all__ = [
    "METRICS_TOKEN_ENV",
    "MULTIPROC_DIR_ENV",
    "Metrics",
    "MetricsAccess",
    "metrics_route",
    "multiprocess_dir",
    "store_gauges",
]
