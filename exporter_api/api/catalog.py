"""`/api/catalog`: databases and manager/streams (anonymous: the login form needs them) and the
groups/scripts/column profiles (with a token), in the contract's shape."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exporter_api.api.deps import current_user, json_response, services


class DatabaseDto(msgspec.Struct, rename="camel"):
    id: str
    display_name: str
    provider: str


class DatabasesResponse(msgspec.Struct):
    databases: list[DatabaseDto]


class StreamDto(msgspec.Struct, rename="camel"):
    id: str
    display_name: str


class ManagerDto(msgspec.Struct, rename="camel"):
    id: str
    display_name: str
    streams: list[StreamDto]


class StreamsResponse(msgspec.Struct):
    managers: list[ManagerDto]


class ScriptDto(msgspec.Struct, rename="camel"):
    id: str
    display_name: str
    execution_lane: int
    columns_profile_id: str


class GroupDto(msgspec.Struct, rename="camel"):
    id: str
    display_name: str
    scripts: list[ScriptDto]


class ColumnItemDto(msgspec.Struct):
    id: str
    label: str


class ColumnsProfileDto(msgspec.Struct):
    id: str
    items: list[ColumnItemDto]


class ScriptsResponse(msgspec.Struct, rename="camel"):
    groups: list[GroupDto]
    columns_profiles: list[ColumnsProfileDto]


async def databases(request: Request) -> Response:
    config = services(request).config
    return json_response(
        DatabasesResponse([DatabaseDto(d.id, d.display_name, d.provider) for d in config.databases])
    )


async def streams(request: Request) -> Response:
    config = services(request).config
    return json_response(
        StreamsResponse(
            [
                ManagerDto(
                    m.id, m.display_name, [StreamDto(s.id, s.display_name) for s in m.streams]
                )
                for m in config.managers
            ]
        )
    )


async def scripts(request: Request) -> Response:
    await current_user(request)
    config = services(request).config
    return json_response(
        ScriptsResponse(
            groups=[
                GroupDto(
                    g.id,
                    g.display_name,
                    [
                        ScriptDto(s.id, s.display_name, s.execution_lane, s.columns_profile_id)
                        for s in g.scripts
                    ],
                )
                for g in config.groups
            ],
            columns_profiles=[
                ColumnsProfileDto(p.id, [ColumnItemDto(i.id, i.label) for i in p.items])
                for p in config.columns_profiles
            ],
        )
    )


routes = [
    Route("/api/catalog/databases", databases, methods=["GET"]),
    Route("/api/catalog/streams", streams, methods=["GET"]),
    Route("/api/catalog/scripts", scripts, methods=["GET"]),
]

__all__ = [
    "DatabasesResponse",
    "ScriptsResponse",
    "StreamsResponse",
    "routes",
]
