"""The OpenAPI 3.1 document, generated from the msgspec types the server itself validates with.

Route modules describe their operations with `Operation`: the JSON body, the path and the query
are msgspec Structs (the same ones the handlers decode into), so constraints (`msgspec.Meta`:
lengths, ranges, patterns, enums) are written once and both enforced and documented.
`build_openapi` turns them into JSON Schema components (`msgspec.json.schema_components`) and
parameters; `refine` adds what a deployment's catalog allows (database ids, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from exporter_api.problems import PROBLEM_CONTENT_TYPE, Problem

_REF = "#/components/schemas/{name}"

BEARER = "bearer"
SIGNED_LINK = "signedLink"
REFRESH_COOKIE_AUTH = "refreshCookie"
ANONYMOUS = ""
"""In `Operation.security`: the operation also answers callers without credentials."""

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The accessToken of POST /api/auth/login or /api/auth/refresh.",
    },
    SIGNED_LINK: {
        "type": "apiKey",
        "in": "query",
        "name": "sig",
        "description": "A signed, short-lived download link (downloadUrl / zipUrl of a run's files)"
        " carries its own credential: it works without a Bearer token until linksExpireAt"
        " and while the session that listed it lasts.",
    },
    REFRESH_COOKIE_AUTH: {
        "type": "apiKey",
        "in": "cookie",
        "name": "exporter_refresh",
        "description": "The HttpOnly refresh cookie set by login and rotated by every refresh"
        " (path /api/auth). Requests carrying it must prove they come from the page itself:"
        " an Origin of this host (or of a configured CORS origin) or X-Requested-With.",
    },
}

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


@dataclass(frozen=True)
class Operation:
    method: str  # "get", "post", ...
    path: str  # OpenAPI template: /api/runs/{runId}
    summary: str
    operation_id: str
    tag: str
    request: Any = None  # a msgspec type for the JSON body
    response: Any = None  # the 2xx JSON body type ("binary": a file; None: no body)
    status: int = 200
    errors: tuple[int, ...] = ()
    security: tuple[str, ...] = (BEARER,)  # alternatives; () or (ANONYMOUS, ...) for optional
    path_params: Any = None  # a Struct: one field per template name (camelCase on the wire)
    query: Any = None  # a Struct: one field per query parameter
    headers: tuple[dict[str, Any], ...] = ()  # header parameters, as OpenAPI Parameter objects
    response_content_type: str | tuple[str, ...] = "application/json"  # one, or any of these
    response_headers: dict[str, Any] = field(default_factory=dict)
    error_headers: dict[int, dict[str, Any]] = field(default_factory=dict)  # beyond Retry-After
    more_responses: dict[int, dict[str, Any]] = field(default_factory=dict)  # other 2xx, as is
    request_example: Any = None  # encoded with msgspec: a Struct or plain JSON
    response_example: Any = None
    links: dict[str, Any] = field(default_factory=dict)  # OpenAPI links of the 2xx response
    description: str | None = None


def _struct_schema(struct: Any) -> tuple[dict[str, Any], set[str]]:
    """(properties, required names) of a flat Struct, inlined (no $ref)."""
    document = msgspec.json.schema(struct)
    name = document["$ref"].rsplit("/", 1)[1]
    definition = document["$defs"][name]
    return definition["properties"], set(definition.get("required", ()))


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter is absent rather than null: drop the null branch of ``X | None``."""
    branches = schema.get("anyOf")
    if not branches:
        return schema
    kept = [s for s in branches if s.get("type") != "null"]
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if len(kept) == 1:
        return {**kept[0], **rest}
    return {**rest, "anyOf": kept}


def parameters(struct: Any, location: str) -> list[dict[str, Any]]:
    """OpenAPI Parameter objects for the fields of ``struct`` (``path`` or ``query``)."""
    if struct is None:
        return []
    properties, required = _struct_schema(struct)
    params: list[dict[str, Any]] = []
    for name, prop in properties.items():
        schema = _without_null(dict(prop))
        if "default" in schema and schema["default"] is None:
            del schema["default"]  # absent, not null
        param: dict[str, Any] = {
            "name": name,
            "in": location,
            "required": location == "path" or name in required,
        }
        if "description" in schema:
            param["description"] = schema.pop("description")
        param["schema"] = schema
        params.append(param)
    return params


def _example(value: Any) -> Any:
    return msgspec.to_builtins(value)


def _media(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = _example(example)
    return media


def _security(op: Operation) -> list[dict[str, list[str]]]:
    return [{name: []} if name else {} for name in op.security]


def build_openapi(
    operations: Iterable[Operation],
    title: str,
    version: str,
    *,
    refine: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The document of ``operations``. ``refine`` adds to the components what depends on the
    deployment (the catalog's ids the server accepts): per component name, keys to set, and
    under ``properties`` the property schemas to replace."""
    ops = list(operations)
    types: list[Any] = [Problem]
    for op in ops:
        for t in (op.request, op.response):
            if t is not None and t not in types and isinstance(t, type):
                types.append(t)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    by_type = dict(zip(types, schemas, strict=True))
    for component, refinement in (refine or {}).items():
        schema = components[component]
        for key, value in refinement.items():
            if key == "properties":  # replace named properties, keep the others
                schema["properties"] = {**schema["properties"], **value}
            else:
                schema[key] = value
    problem_ref = {"$ref": _REF.format(name="Problem")}
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        item: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
        }
        if op.description:
            item["description"] = op.description
        params = [
            *parameters(op.path_params, "path"),
            *parameters(op.query, "query"),
            *op.headers,
        ]
        if params:
            item["parameters"] = params
        if op.request is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": _media(by_type[op.request], op.request_example)},
            }
        ok: dict[str, Any] = {"description": "Success"}
        if op.response is not None:
            schema = by_type.get(op.response, {"type": "string", "format": "binary"})
            media = op.response_content_type
            ok["content"] = {
                media_type: _media(schema, op.response_example)
                for media_type in ((media,) if isinstance(media, str) else media)
            }
        if op.response_headers:
            ok["headers"] = op.response_headers
        if op.links:
            ok["links"] = op.links
        responses: dict[str, Any] = {str(op.status): ok}
        responses.update({str(status): r for status, r in op.more_responses.items()})
        credentials = [name for name in op.security if name]
        for status in sorted({*op.errors, *((401,) if credentials else ())}):
            error: dict[str, Any] = {
                "description": "RFC 9457 problem details",
                "content": {PROBLEM_CONTENT_TYPE: {"schema": problem_ref}},
            }
            if status == 429:
                error["headers"] = RETRY_AFTER
            if status in op.error_headers:
                error["headers"] = op.error_headers[status]
            responses[str(status)] = error
        item["responses"] = responses
        if credentials:
            item["security"] = _security(op)
        paths.setdefault(op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


__all__ = [
    "ANONYMOUS",
    "BEARER",
    "REFRESH_COOKIE_AUTH",
    "SECURITY_SCHEMES",
    "SIGNED_LINK",
    "Operation",
    "build_openapi",
    "parameters",
]
