"""``POST /v1/cypher``: a user's read-only Cypher query, with the server's timeout and row cap
(:func:`graphstore.readonly.run_readonly`). Writes, syntax errors, missing parameters and timeouts
come back as 400 with the problem's ``kind`` and a message (``api.errors``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ResourcesDep
from api.security import ReadCaller
from graphstore.readonly import run_readonly

router = APIRouter(prefix="/v1/cypher", tags=["cypher"])


class CypherQuery(BaseModel):
    """A Cypher read; values go in ``params`` and are named ``$name`` in the query."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, examples=["MATCH (c:Circuit) RETURN c.id AS id LIMIT 5"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"x": 0.9}])


class CypherRows(BaseModel):
    """The query's columns and at most ``row_cap`` rows; ``truncated`` when it had more."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    row_cap: int


class CypherProblem(BaseModel):
    """Why a query did not run: ``kind`` is write, refused, syntax, parameter, timeout, invalid
    or unavailable."""

    detail: str
    kind: str


@router.post("", response_model=CypherRows,
             responses={400: {"model": CypherProblem}, 503: {"model": CypherProblem}})
def run(body: CypherQuery, res: ResourcesDep, caller: ReadCaller) -> CypherRows:
    """Run ``query`` read-only (``ATLAS_CYPHER_TIMEOUT_S``, ``ATLAS_CYPHER_ROW_CAP``)."""
    cap = res.settings.cypher_row_cap
    result = run_readonly(res.neo4j, body.query, body.params, database=res.settings.neo4j_database,
                          timeout_s=res.settings.cypher_timeout_s, row_cap=cap)
    return CypherRows(columns=list(result.columns), rows=[list(r) for r in result.rows],
                      truncated=result.truncated, row_cap=cap)
