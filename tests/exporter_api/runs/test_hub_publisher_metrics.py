"""The run-event publisher counts what it sends, and what the Redis backplane failed to publish
(a real Redis, stopped while the hub runs)."""

from __future__ import annotations

import contextlib

import pytest

from exporter_api.metrics import Metrics
from exporter_api.runs.hub import HubPublisher
from signalr_core import Hub, HubEndpoint
from signalr_core.redis import RedisBackplaneError, RedisHubLifetimeManager
from tests.services import redis_server


class _Hub(Hub):
    pass


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_sent_events_and_backplane_failures_are_counted() -> None:
    metrics = Metrics()
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(redis_server())
        manager = RedisHubLifetimeManager(redis.url, channel_prefix="metrics", hub_name="runs")
        endpoint = HubEndpoint(_Hub, lifetime_manager=manager)
        async with endpoint.lifespan():
            publisher = HubPublisher(endpoint.hub_context, metrics=metrics)
            await publisher.publish("RUN", "script.progress", {"rowsExported": 1})
            assert (
                _value(metrics, "exporter_hub_messages_sent_total", method="script.progress") == 1
            )
            stack.close()  # Redis stops
            with pytest.raises(RedisBackplaneError):
                await publisher.publish("RUN", "script.progress", {"rowsExported": 2})
    assert _value(metrics, "exporter_backplane_publish_failures_total") == 1
    assert _value(metrics, "exporter_hub_messages_sent_total", method="script.progress") == 1
