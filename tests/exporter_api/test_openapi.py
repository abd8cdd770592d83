"""The OpenAPI document says what the server enforces: constraints come from the same msgspec
types the handlers decode with, the catalog's ids from the configuration."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from exporter_api.api import meta
from exporter_api.api.auth import LoginRequest
from exporter_api.app import create_app
from exporter_api.config import Settings, load_config
from exporter_api.openapi import Operation, build_openapi
from exporter_api.runs.operations import runs_operations


def _document(settings: Settings) -> dict[str, Any]:
    document: dict[str, Any] = create_app(settings).state.openapi
    return document


def _component(document: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
    return schema


def test_list_runs_parameters_are_typed(settings: Settings) -> None:
    operation = _document(settings)["paths"]["/api/runs"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
    }
    assert params["limit"]["in"] == "query"
    assert not params["limit"]["required"]
    cursor = params["cursor"]["schema"]
    assert cursor["type"] == "string"
    assert cursor["pattern"] == "^[0-9A-HJKMNP-TV-Z]{26}$"
    assert "default" not in cursor  # absent, not null
    assert params["cursor"]["description"] == "nextCursor of the previous page"


def test_login_ids_are_the_catalogs_and_fields_are_bounded(settings: Settings) -> None:
    document = _document(settings)
    login = document["paths"]["/api/auth/login"]["post"]
    schema = _component(document, login["requestBody"]["content"]["application/json"]["schema"])
    config = load_config(settings.config_path)
    props = schema["properties"]
    assert props["databaseId"]["enum"] == sorted(d.id for d in config.databases)
    assert props["managerId"]["enum"] == ["m1", "m2"]
    assert props["streamId"]["enum"] == ["s1", "s2", "s3"]
    # each manager with its own streams
    assert {
        b["properties"]["managerId"]["const"]: b["properties"]["streamId"]["enum"]
        for b in schema["anyOf"]
    } == {"m1": ["s1", "s2"], "m2": ["s3"]}
    assert (props["dbUsername"]["minLength"], props["dbUsername"]["maxLength"]) == (1, 128)
    assert (props["dbPassword"]["minLength"], props["dbPassword"]["maxLength"]) == (1, 1024)
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("username", "accepted"),
    [
        ("USER1", True),
        (" x ", True),
        ("ü", True),
        ("", False),
        ("  ", False),
        ("USER1\n", False),
        ("US\x7fER", False),
        ("U\x85", False),
        ("U" * 129, False),
    ],
)
def test_username_pattern_is_what_the_server_checks(username: str, accepted: bool) -> None:
    """msgspec's check and the document's pattern are one string; both read it the same way."""
    body = {
        "dbUsername": username,
        "dbPassword": "x",
        "databaseId": "d",
        "managerId": "m",
        "streamId": "s",
    }
    try:
        msgspec.convert(body, LoginRequest)
    except msgspec.ValidationError:
        assert not accepted
    else:
        assert accepted


def test_modes_are_enums(settings: Settings) -> None:
    schemas = _document(settings)["components"]["schemas"]
    assert schemas["RunCreateRequest"]["properties"]["mode"]["enum"] == [
        "AllGroups",
        "SingleGroup",
        "SingleScript",
    ]
    assert schemas["ScriptSelection"]["properties"]["exportMode"]["enum"] == [
        "AllColumns",
        "CustomColumns",
    ]


def test_security_schemes(settings: Settings) -> None:
    document = _document(settings)
    schemes = document["components"]["securitySchemes"]
    assert schemes["signedLink"] == {
        **schemes["signedLink"],
        "type": "apiKey",
        "in": "query",
        "name": "sig",
    }
    assert schemes["refreshCookie"]["in"] == "cookie"
    assert schemes["refreshCookie"]["name"] == "exporter_refresh"
    paths = document["paths"]
    for path in ("/api/runs/{runId}/files/{fileId}", "/api/runs/{runId}/files.zip"):
        operation = paths[path]["get"]
        assert operation["security"] == [{"bearer": []}, {"signedLink": []}]
        assert "sig" not in {p["name"] for p in operation["parameters"]}
    assert paths["/api/auth/refresh"]["post"]["security"] == [{"refreshCookie": []}]
    assert paths["/api/auth/logout"]["post"]["security"] == [
        {},
        {"bearer": []},
        {"refreshCookie": []},
    ]
    assert "security" not in paths["/api/auth/login"]["post"]


def test_every_429_documents_retry_after(settings: Settings) -> None:
    responses = [
        r
        for item in _document(settings)["paths"].values()
        for operation in item.values()
        for status, r in operation["responses"].items()
        if status == "429"
    ]
    assert len(responses) >= 4  # login, createRun, both downloads
    for response in responses:
        header = response["headers"]["Retry-After"]
        assert header["required"] is True
        assert header["schema"] == {"type": "integer", "minimum": 1}


def _examples() -> list[tuple[Operation, str, Any, Any]]:
    out = []
    for op in [*meta.auth_and_catalog_operations(), *runs_operations()]:
        if op.request_example is not None:
            out.append((op, "request", op.request, op.request_example))
        if op.response_example is not None:
            out.append((op, "response", op.response, op.response_example))
    return out


@pytest.mark.parametrize(
    ("op", "part", "type_", "example"), _examples(), ids=lambda v: getattr(v, "operation_id", "")
)
def test_examples_are_valid_bodies(op: Operation, part: str, type_: Any, example: Any) -> None:
    """Decoded with the server's own types and constraints, every example is accepted."""
    builtins = msgspec.to_builtins(example)
    assert msgspec.convert(builtins, type_) == example


def test_contract_examples_are_on_the_operations(settings: Settings) -> None:
    paths = _document(settings)["paths"]
    run = paths["/api/runs"]["post"]
    body = run["requestBody"]["content"]["application/json"]["example"]
    assert body["selection"]["groups"][0]["scripts"][0]["selectedColumnItemIds"] == [
        "order_id",
        "customer",
    ]
    assert run["responses"]["201"]["content"]["application/json"]["example"]["status"] == "Queued"
    login = paths["/api/auth/login"]["post"]
    assert login["requestBody"]["content"]["application/json"]["example"]["dbUsername"] == "USER1"
    scripts = paths["/api/catalog/scripts"]["get"]["responses"]["200"]
    assert scripts["content"]["application/json"]["example"]["columnsProfiles"][0]["id"] == (
        "orders_cols"
    )


def test_path_parameters_come_from_structs() -> None:
    document = build_openapi(runs_operations(), "t", "1")
    download = document["paths"]["/api/runs/{runId}/files/{fileId}"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in download["parameters"]] == [
        ("runId", "path", True),
        ("fileId", "path", True),
        ("Range", "header", False),
    ]
    assert download["parameters"][1]["schema"]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"


def test_downloads_document_ranges_and_their_headers(settings: Settings) -> None:
    paths = _document(settings)["paths"]
    file = paths["/api/runs/{runId}/files/{fileId}"]["get"]
    assert "Range" in {p["name"] for p in file["parameters"] if p["in"] == "header"}
    ok, partial = file["responses"]["200"], file["responses"]["206"]
    assert set(ok["content"]) == set(partial["content"]) >= {"text/csv"}
    assert {"Content-Disposition", "X-Content-SHA256", "Accept-Ranges"} <= set(ok["headers"])
    assert partial["headers"]["Content-Range"]["required"] is True
    assert "Content-Range" in file["responses"]["416"]["headers"]
    archive = paths["/api/runs/{runId}/files.zip"]["get"]["responses"]["200"]
    assert list(archive["content"]) == ["application/zip"]
    assert "Content-Disposition" in archive["headers"]


def test_file_format_is_an_enum(settings: Settings) -> None:
    schemas = _document(settings)["components"]["schemas"]
    selection = schemas["ScriptSelection"]["properties"]["format"]
    assert {"type": "string", "enum": ["csv", "csv.gz", "xlsx"]} in selection["anyOf"]
