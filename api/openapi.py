"""The OpenAPI schema lists every status code each route can answer, each with its JSON body.

Routers declare their own successes and the errors particular to them (404 of a missing circuit,
409 of a finished job). The errors every route shares come from layers below the routes: the
body cap (413, and 400 for a broken ``Content-Length``), malformed JSON (400), API keys (401,
403, 429 for repeated bad keys), the per-key job cap (429), an unreachable Neo4j or Redis (503)
and the last-resort handler (500). :func:`install` adds those to every route that can produce
them, all with one error body, :class:`Problem`, so a client (or a schema fuzzer) can rely on
"every non-2xx answer is JSON with a ``detail``".
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    """Every error answer: ``detail`` says what went wrong and what to do; ``kind`` classifies
    some (a Cypher problem's kind, ``unavailable`` ...). 422 answers carry FastAPI's list of
    field errors in ``detail`` instead."""

    model_config = ConfigDict(extra="allow")
    detail: str | list[Any] = Field(description="what went wrong, and the fix")
    kind: str | None = Field(None, description="a machine-readable class of the problem, where there is one")


#: Shared error answers of every ``/v1`` route (key, body, rate and service layers).
V1_ERRORS: dict[int, str] = {
    400: "Malformed request: a body that is not JSON, or a Content-Length that is not a number",
    401: "Missing or unknown X-API-Key",
    403: "The key lacks the scope this route needs",
    413: "Request body over ATLAS_MAX_BODY_BYTES",
    429: "Too many requests: repeated bad keys from this address, or the key's job cap",
    500: "Unexpected error; the detail carries an id to find it in the server's log",
    503: "Neo4j or Redis cannot be reached; try again later (GET /health)",
}
#: Answers of the routes outside ``/v1`` (health and the web page have no key).
OTHER_ERRORS: dict[int, str] = {
    400: V1_ERRORS[400], 413: V1_ERRORS[413], 429: V1_ERRORS[429], 500: V1_ERRORS[500],
}
#: Routes with a path parameter may name something that does not exist.
NOT_FOUND = "No such resource"


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def add_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with the shared error answers added to every operation (declared ones kept)."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = \
        Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for path, operations in schema.get("paths", {}).items():
        shared = V1_ERRORS if path.startswith("/v1") else OTHER_ERRORS
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            codes = dict(shared)
            if "{" in path:
                codes[404] = NOT_FOUND
            for code, description in codes.items():
                responses.setdefault(str(code), _problem_response(description))
    return schema


def install(app: FastAPI) -> None:
    """Serve the schema with the shared errors added (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_errors(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
