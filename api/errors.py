"""One JSON error format for every failure of the API: ``{"detail": ...}``.

- ``HTTPException`` (404, 401, 403 ...): FastAPI's own ``{"detail": "<message>"}``;
- a request that fails validation: 422 with FastAPI's list of errors, each naming its field in
  ``loc``; a body that is not JSON at all: 400 with one message saying where parsing stopped;
- a user's Cypher that cannot run (:class:`graphstore.readonly.CypherError`): 400, or 503 when
  Neo4j is unreachable or every query slot is taken (``busy``, with ``Retry-After``), with the
  problem's ``kind`` next to the message;
- Neo4j down mid-request: 503 naming the server; Redis (job records, broker) down: 503 naming it;
- anything unexpected: 500 with a short message and an id to find the traceback in the server's
  log; the traceback itself never leaves the server.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerUnreachable
from neo4j.exceptions import ConnectionAcquisitionTimeoutError, ServiceUnavailable, SessionExpired
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from graphstore.readonly import CypherError

log = logging.getLogger("api.errors")

#: HTTP status of each :class:`CypherError` kind; every other kind is the caller's mistake (400).
#: ``busy``: every query slot is taken (``ATLAS_CYPHER_MAX_CONCURRENT``), a retry soon may pass.
CYPHER_STATUS: dict[str, int] = {"unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
                                 "busy": status.HTTP_503_SERVICE_UNAVAILABLE}


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    broken = [e for e in exc.errors() if e.get("type") == "json_invalid"]
    if broken:
        where = broken[0].get("loc", ("body", "?"))[-1]
        reason = broken[0].get("ctx", {}).get("error", "not JSON")
        return JSONResponse(status_code=status.HTTP_400_BAD_REQUEST, content={
            "detail": f"request body is not valid JSON ({reason} at character {where}); "
                      "send a JSON object with Content-Type: application/json"})
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
                        content={"detail": [_brief(e) for e in exc.errors()[:MAX_FIELD_ERRORS]]})


#: Field errors listed in one 422 answer, and the most characters of a rejected input echoed back:
#: an 800 KB value in a request is never sent back whole.
MAX_FIELD_ERRORS = 20
MAX_ECHO = 200


def _brief(error: dict) -> dict:
    """One field error as FastAPI shapes it (``loc``, ``msg``, ``type``), its input cut short."""
    brief = {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", ""))[:1000],
             "type": error.get("type", "value_error")}
    if "input" in error:
        text = repr(error["input"])
        brief["input"] = text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."
    return brief


async def _cypher(request: Request, exc: CypherError) -> JSONResponse:
    code = CYPHER_STATUS.get(exc.kind, status.HTTP_400_BAD_REQUEST)
    headers = {"Retry-After": "2"} if exc.kind == "busy" else None
    return JSONResponse(status_code=code, content={"detail": exc.message, "kind": exc.kind},
                        headers=headers)


async def _neo4j_down(request: Request, exc: Exception) -> JSONResponse:
    settings = request.app.state.resources.settings
    return JSONResponse(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content={
        "detail": f"the circuit store (Neo4j at {settings.neo4j_host}:{settings.neo4j_port}) is not "
                  "reachable; try again later, or see GET /health"})


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    """Redis (job records, the broker) unreachable: 503 naming it, never a 500."""
    return JSONResponse(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content={
        "detail": "the job queue (Redis) is not reachable; try again in a few seconds, or see GET /health",
        "kind": "unavailable"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    error_id = uuid.uuid4().hex[:12]
    log.error("error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    return JSONResponse(status_code=status.HTTP_500_INTERNAL_SERVER_ERROR, content={
        "detail": f"internal error {error_id}; the server's log has the details"})


def install(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(CypherError, _cypher)
    app.add_exception_handler(ServiceUnavailable, _neo4j_down)
    app.add_exception_handler(SessionExpired, _neo4j_down)
    app.add_exception_handler(ConnectionAcquisitionTimeoutError, _neo4j_down)
    for outage in (RedisConnectionError, RedisTimeoutError, BrokerUnreachable):
        app.add_exception_handler(outage, _redis_down)
    app.add_exception_handler(Exception, _unexpected)
