"""The OpenAPI description of the runs routes (`exporter_api.runs.api`): their operations, the
path and query Structs (the handlers decode the query with the same one), the contract's example
bodies and the downloads' headers. Merged into /api/openapi.json by the app."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from exporter_api.openapi import BEARER, SIGNED_LINK, Operation
from exporter_api.runs.models import (
    FileId,
    GroupSelection,
    RunCreated,
    RunCreateRequest,
    RunFiles,
    RunId,
    RunList,
    RunState,
    ScriptSelection,
    Selection,
)
from exporter_api.runs.writers.formats import MEDIA_TYPES

__all__ = [
    "FILE_MEDIA_TYPES",
    "RUN_CREATED_EXAMPLE",
    "RUN_REQUEST_EXAMPLE",
    "RunFilePath",
    "RunListQuery",
    "RunPath",
    "runs_operations",
]


class RunPath(msgspec.Struct, rename="camel"):
    run_id: RunId


class RunFilePath(msgspec.Struct, rename="camel"):
    run_id: RunId
    file_id: FileId


class RunListQuery(msgspec.Struct):
    """``GET /api/runs``: decoded by `read_query`, so the document shows what is checked."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=100, description="Page size")] = 20
    cursor: Annotated[RunId, msgspec.Meta(description="nextCursor of the previous page")] | None = (
        None
    )


# The contract's example (section 7.1), valid against the demo catalog.
RUN_REQUEST_EXAMPLE = RunCreateRequest(
    mode="AllGroups",
    selection=Selection(
        groups=[
            GroupSelection(
                group_id="g-sales",
                scripts=[
                    ScriptSelection(
                        script_id="s-orders",
                        export_mode="CustomColumns",
                        selected_column_item_ids=["order_id", "customer"],
                    )
                ],
            )
        ]
    ),
)
RUN_CREATED_EXAMPLE = RunCreated(run_id="01KB5Q4ZK8M3T2V6W9YB0C1DEF", status="Queued")


def _run_link(operation_id: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": {"runId": "$response.body#/runId"}}


# What a file is served as, by its format (CSV, gzip-compressed CSV, XLSX).
FILE_MEDIA_TYPES = tuple(dict.fromkeys(MEDIA_TYPES.values()))
_BINARY = {"type": "string", "format": "binary"}


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": {"type": "string"}}


_ATTACHMENT = {"Content-Disposition": _header("attachment, with the file's name")}
_FILE_HEADERS = {
    "X-Content-SHA256": _header("SHA-256 of the whole file, hex (as sha256 in the listing)"),
    "Accept-Ranges": _header("bytes"),
}
_RANGE = {
    "name": "Range",
    "in": "header",
    "required": False,
    "description": "bytes=<first>-<last>: resume an interrupted download (206)",
    "schema": {"type": "string"},
}

# A run's state and its file list both name its files: the downloads follow from either.
_FILE_LINKS = {
    "DownloadRunFile": {
        "operationId": "downloadRunFile",
        "parameters": {
            "runId": "$response.body#/runId",
            "fileId": "$response.body#/files/0/fileId",
        },
    },
    "DownloadRunZip": _run_link("downloadRunZip"),
}


def runs_operations() -> list[Operation]:
    """OpenAPI descriptions of the routes below (merged into /api/openapi.json by the app)."""
    download = (BEARER, SIGNED_LINK)
    return [
        Operation(
            "post",
            "/api/runs",
            "Start an export run",
            "createRun",
            "runs",
            request=RunCreateRequest,
            response=RunCreated,
            status=201,
            errors=(400, 401, 404, 413, 429),
            request_example=RUN_REQUEST_EXAMPLE,
            response_example=RUN_CREATED_EXAMPLE,
            response_headers={
                "Location": {
                    "description": "The new run: /api/runs/{runId}",
                    "required": True,
                    "schema": {"type": "string"},
                }
            },
            links={
                "GetRun": _run_link("getRun"),
                "CancelRun": _run_link("cancelRun"),
                "ListRunFiles": _run_link("listRunFiles"),
            },
            description="The selection is checked against the catalog (unknown ids, a mode that"
            " does not fit the enabled groups or scripts, a CustomColumns script without"
            " columns: 400 naming the field); a user has at most"
            " server.max_active_runs_per_user active runs (429).",
        ),
        Operation(
            "get",
            "/api/runs",
            "The caller's runs, newest first",
            "listRuns",
            "runs",
            response=RunList,
            errors=(400, 401),
            query=RunListQuery,
        ),
        Operation(
            "get",
            "/api/runs/{runId}",
            "Full state of a run (for a page reload)",
            "getRun",
            "runs",
            response=RunState,
            errors=(401, 404),
            path_params=RunPath,
            links=_FILE_LINKS,
        ),
        Operation(
            "post",
            "/api/runs/{runId}/cancel",
            "Cancel a run",
            "cancelRun",
            "runs",
            response=RunState,
            status=202,
            errors=(401, 404, 409),
            path_params=RunPath,
        ),
        Operation(
            "get",
            "/api/runs/{runId}/files",
            "Files of a run",
            "listRunFiles",
            "runs",
            response=RunFiles,
            errors=(401, 404),
            path_params=RunPath,
            links=_FILE_LINKS,
        ),
        Operation(
            "get",
            "/api/runs/{runId}/files/{fileId}",
            "Download one file",
            "downloadRunFile",
            "runs",
            response="binary",
            response_content_type=FILE_MEDIA_TYPES,
            response_headers={**_ATTACHMENT, **_FILE_HEADERS},
            errors=(401, 403, 404, 416, 429),
            error_headers={416: {"Content-Range": _header("bytes */<size of the file>")}},
            more_responses={
                206: {
                    "description": "The byte range asked for (one range; several: the whole file)",
                    "headers": {
                        **_ATTACHMENT,
                        **_FILE_HEADERS,
                        "Content-Range": _header("bytes <first>-<last>/<size>"),
                    },
                    "content": {t: {"schema": _BINARY} for t in FILE_MEDIA_TYPES},
                }
            },
            path_params=RunFilePath,
            headers=(_RANGE,),
            security=download,
        ),
        Operation(
            "get",
            "/api/runs/{runId}/files.zip",
            "Download every file as a ZIP",
            "downloadRunZip",
            "runs",
            response="binary",
            response_content_type="application/zip",
            response_headers=_ATTACHMENT,
            errors=(401, 403, 404, 429),
            path_params=RunPath,
            security=download,
        ),
    ]
