"""Runs: the export engine, run REST endpoints and the /hubs/runs hub.

`build_runs(services)` is the seam between the app factory (exporter_api.app) and this package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from exporter_api.services import Services


class RunsComponent:
    """Routes and lifespan of the runs feature (placeholder until the engine lands)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.routes: list[BaseRoute] = []

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        yield


def build_runs(services: Services) -> RunsComponent:
    return RunsComponent(services)
