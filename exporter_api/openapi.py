"""The OpenAPI 3.1 document, generated from the msgspec types of the REST DTOs.

Route modules describe their operations with `Operation`; `build_openapi` turns the request and
response Structs into JSON Schema components (`msgspec.json.schema_components`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from exporter_api.problems import PROBLEM_CONTENT_TYPE, Problem

_REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class Operation:
    method: str  # "get", "post", ...
    path: str  # OpenAPI template: /api/runs/{runId}
    summary: str
    operation_id: str
    tag: str
    request: Any = None  # a msgspec type for the JSON body
    response: Any = None  # the 2xx JSON body type (None: no body)
    status: int = 200
    errors: tuple[int, ...] = ()
    auth: bool = True
    path_params: tuple[str, ...] = ()
    query_params: tuple[tuple[str, str], ...] = ()  # (name, description)
    response_content_type: str = "application/json"
    extra: dict[str, Any] = field(default_factory=dict)


def build_openapi(operations: Iterable[Operation], title: str, version: str) -> dict[str, Any]:
    ops = list(operations)
    types: list[Any] = [Problem]
    for op in ops:
        for t in (op.request, op.response):
            if t is not None and t not in types and isinstance(t, type):
                types.append(t)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    by_type = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        item: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": {},
        }
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in op.path_params
        ] + [
            {
                "name": n,
                "in": "query",
                "required": False,
                "description": d,
                "schema": {"type": "string"},
            }
            for n, d in op.query_params
        ]
        if params:
            item["parameters"] = params
        if op.request is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[op.request]}},
            }
        ok: dict[str, Any] = {"description": "Success"}
        if op.response is not None:
            schema = by_type.get(op.response, {"type": "string", "format": "binary"})
            ok["content"] = {op.response_content_type: {"schema": schema}}
        item["responses"][str(op.status)] = ok
        problem_ref = {"$ref": _REF.format(name="Problem")}
        for status in sorted({*op.errors, *((401,) if op.auth else ())}):
            item["responses"][str(status)] = {
                "description": "RFC 9457 problem details",
                "content": {PROBLEM_CONTENT_TYPE: {"schema": problem_ref}},
            }
        if op.auth:
            item["security"] = [{"bearer": []}]
        item.update(op.extra)
        paths.setdefault(op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


__all__ = ["Operation", "build_openapi"]
