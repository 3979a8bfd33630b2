"""``POST /v1/cypher``: a user's read-only Cypher query, run by
:class:`graphstore.sandbox.CypherRunner` as the dedicated query user, in a child process, with a
timeout enforced on both sides, a row cap and a byte cap. Writes, syntax errors, bad parameters,
timeouts and memory-hungry queries come back as 400 with the problem's ``kind``; too many queries
at once or an unreachable Neo4j as 503 (``api.errors``).

The rows travel as the child wrote them (JSON text, at most ``ATLAS_CYPHER_BYTE_CAP`` bytes), so
the API never decodes or re-encodes a large result: its memory stays flat."""

from __future__ import annotations

import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from neo4j import Driver
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ResourcesDep
from api.openapi import Problem
from api.security import ReadCaller
from graphstore.sandbox import Account, CypherRunner, Limits
from workers.settings import Settings

router = APIRouter(prefix="/v1/cypher", tags=["cypher"])
_runner_lock = threading.Lock()


class CypherQuery(BaseModel):
    """A Cypher read; values go in ``params`` and are named ``$name`` in the query."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=100_000,
                       examples=["MATCH (c:Circuit) RETURN c.id AS id LIMIT 5"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"x": 0.9}])


class CypherRows(BaseModel):
    """The query's columns and its rows, up to ``row_cap`` rows and ``byte_cap`` bytes of rows;
    ``truncated`` when it had more, ``truncated_by`` saying which cap left them out."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    truncated_by: Literal["rows", "bytes"] | None
    row_cap: int
    byte_cap: int


def cypher_runner(settings: Settings, admin: Driver) -> CypherRunner:
    """The runner of users' Cypher for ``settings``; ``admin`` is the admin's driver."""
    account = Account(uri=settings.neo4j_uri, user=settings.cypher_user,
                      password=settings.cypher_password.get_secret_value(),
                      database=settings.neo4j_database)
    limits = Limits(timeout_s=settings.cypher_timeout_s, grace_s=settings.cypher_grace_s,
                    row_cap=settings.cypher_row_cap, byte_cap=settings.cypher_byte_cap,
                    child_memory_mb=settings.cypher_child_memory_mb,
                    max_concurrent=settings.cypher_max_concurrent,
                    hold_max_s=settings.cypher_hold_max_s)
    return CypherRunner(admin, account, limits, admin_user=settings.neo4j_user)


def _runner(request: Request, res: ResourcesDep) -> CypherRunner:
    """One runner per app (its semaphore bounds the queries of the whole process)."""
    with _runner_lock:
        runner = getattr(request.app.state, "cypher_runner", None)
        if runner is None or runner.admin is not res.neo4j:
            runner = request.app.state.cypher_runner = cypher_runner(res.settings, res.neo4j)
        return runner


RunnerDep = Annotated[CypherRunner, Depends(_runner)]


@router.post("", response_model=CypherRows,
             responses={400: {"model": Problem, "description": "The query cannot run here: kind "
                              "write, refused, syntax, parameter, timeout, memory or invalid"},
                        503: {"model": Problem, "description": "kind busy (too many queries at once) "
                              "or unavailable (Neo4j cannot be reached)"}})
def run(body: CypherQuery, caller: ReadCaller, runner: RunnerDep) -> Response:
    """Run ``query`` read-only (``ATLAS_CYPHER_TIMEOUT_S``, ``ATLAS_CYPHER_ROW_CAP``,
    ``ATLAS_CYPHER_BYTE_CAP``)."""
    result = runner.run(body.query, body.params)
    return Response(result.json_body(row_cap=runner.limits.row_cap,
                                     byte_cap=runner.limits.byte_cap),
                    media_type="application/json")
