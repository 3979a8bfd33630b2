"""``/v1/circuits``: list, read (as JSON or any export format) and delete stored circuits."""

from __future__ import annotations

import re
import tempfile
import threading
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel

from api.deps import ResourcesDep
from api.security import ReadCaller, WriteCaller
from discovery.circuit import Circuit
from discovery.export import export
from graphstore.queries import LIST_SORTS
from graphstore.store import delete_circuit, list_circuits, read_circuit

router = APIRouter(prefix="/v1/circuits", tags=["circuits"])

ExportFormat = Literal["json", "graphml", "dot", "png", "svg", "mib"]

#: Media type of each export format.
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "mib": "application/json",
    "graphml": "application/graphml+xml",
    "dot": "text/vnd.graphviz; charset=utf-8",
    "png": "image/png",
    "svg": "image/svg+xml",
}


class CircuitSummaryPublic(BaseModel):
    """One stored circuit, without its nodes and edges. Faithfulness twice: under the task metric
    (``metric``; ``faithfulness_task``, which can exceed 1, and ``faithfulness``, its old name)
    and under the metric the search optimised (``search_metric``, KL for ACDC by default;
    ``faithfulness_search``, None for circuits stored before it was kept)."""

    id: str
    model: str
    task: str
    method: str
    threshold: float | None
    metric: str | None
    faithfulness: float | None
    n_nodes: int
    n_edges: int
    created_at: str | None
    faithfulness_task: float | None = None
    search_metric: str | None = None
    faithfulness_search: float | None = None


class CircuitPage(BaseModel):
    """A page of :class:`CircuitSummaryPublic`, newest first. ``next_offset`` is the ``offset`` of
    the next page, None on the last one."""

    items: list[CircuitSummaryPublic]
    limit: int
    offset: int
    next_offset: int | None


#: Longest name, id or filter value a route takes; longer ones are a client's mistake (422).
MAX_NAME = 200
#: Longest comma-separated list in a query string: URLs stay far below the HTTP server's line limit
#: (16 KB, as percent-encoded UTF-8 can take 12 bytes a character).
MAX_LIST = 1000
#: Deepest page: past this, filter instead of paging (Neo4j's SKIP takes 64-bit integers only).
MAX_OFFSET = 1_000_000
Name = Annotated[str, Query(min_length=1, max_length=MAX_NAME)]
Faithfulness = Annotated[float, Query(allow_inf_nan=False, ge=-1e9, le=1e9)]
#: How ``/v1/circuits`` may be ordered: faithfulness best first (unmeasured last) or newest first.
SortKey = Literal["created_at", "faithfulness_task", "faithfulness_search"]
assert set(SortKey.__args__) == set(LIST_SORTS), "SortKey must name every graphstore sort"
CircuitId = Annotated[str, Path(min_length=1, max_length=MAX_NAME, description="a stored circuit's id")]


@router.get("", response_model=CircuitPage, responses={
    400: {"description": "A bound given under both its names (min_faithfulness and "
                         "min_faithfulness_task ...) with different values"},
})
def list_(
    res: ResourcesDep,
    caller: ReadCaller,
    model: Name | None = None,
    task: Name | None = None,
    method: Name | None = None,
    min_faithfulness: Faithfulness | None = None,
    max_faithfulness: Faithfulness | None = None,
    min_faithfulness_task: Faithfulness | None = None,
    max_faithfulness_task: Faithfulness | None = None,
    min_faithfulness_search: Faithfulness | None = None,
    max_faithfulness_search: Faithfulness | None = None,
    sort: SortKey = "created_at",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> CircuitPage:
    """Stored circuits matching every filter given, one page at a time, newest first or by
    ``sort``. ``min/max_faithfulness_task`` bound the task-metric faithfulness (``min/max_faithfulness``
    are their older names), ``min/max_faithfulness_search`` the search-metric one."""
    low = _one_of("min_faithfulness", min_faithfulness, min_faithfulness_task)
    high = _one_of("max_faithfulness", max_faithfulness, max_faithfulness_task)
    rows = list_circuits(res.neo4j, database=res.settings.neo4j_database, model=model, task=task,
                         method=method, min_faithfulness=low, max_faithfulness=high,
                         min_faithfulness_search=min_faithfulness_search,
                         max_faithfulness_search=max_faithfulness_search, sort=sort,
                         limit=limit + 1, offset=offset)
    items = [CircuitSummaryPublic.model_validate(r, from_attributes=True) for r in rows[:limit]]
    return CircuitPage(items=items, limit=limit, offset=offset,
                       next_offset=offset + limit if len(rows) > limit else None)


def _one_of(old: str, value: float | None, task_value: float | None) -> float | None:
    """A bound given under its old name or its ``_task`` name; both, differing, is a 400."""
    if value is not None and task_value is not None and value != task_value:
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            detail=f"{old} and {old}_task name the same bound (task-metric "
                                   f"faithfulness) but differ ({value} vs {task_value}); give one")
    return task_value if task_value is not None else value


def _stored(res: ResourcesDep, circuit_id: str) -> Circuit:
    circuit = read_circuit(res.neo4j, circuit_id, database=res.settings.neo4j_database)
    if circuit is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no circuit with id {circuit_id!r}")
    return circuit


#: Drawings one at a time: routes run in a thread pool, and matplotlib's font and text caches are
#: not thread-safe.
_DRAWING = threading.Lock()


def render(circuit: Circuit, fmt: str) -> bytes:
    """``circuit`` in export format ``fmt``, as bytes (via :func:`discovery.export.export`)."""
    with tempfile.TemporaryDirectory(prefix="atlas-export-") as tmp:
        target = FilePath(tmp) / f"circuit.{fmt}"
        if fmt in ("png", "svg"):
            with _DRAWING:
                return export(circuit, fmt, target).read_bytes()
        return export(circuit, fmt, target).read_bytes()


@router.get("/{circuit_id}", responses={
    200: {"description": "The circuit: JSON by default, or the export format asked for",
          "content": {t: {} for t in MEDIA_TYPES.values()}},
    404: {"description": "No such circuit"},
})
def get(
    circuit_id: CircuitId,
    res: ResourcesDep,
    caller: ReadCaller,
    format: Annotated[ExportFormat, Query(description="json (default), graphml, dot, png, svg "
                                                      "or mib (EAP-IG / MIB JSON)")] = "json",
) -> Any:
    """The circuit as JSON (the :class:`discovery.circuit.Circuit` layout), or exported."""
    circuit = _stored(res, circuit_id)
    if format == "json":
        return circuit.to_dict()
    try:
        body = render(circuit, format)
    except ValueError as exc:  # e.g. MIB needs the full graph's shape
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from None
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", circuit_id)[:100] or "circuit"
    headers = {"Content-Disposition": f'inline; filename="{filename}.{format}"'}
    return Response(content=body, media_type=MEDIA_TYPES[format], headers=headers)


@router.delete("/{circuit_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"description": "No such circuit"}})
def delete(circuit_id: CircuitId, res: ResourcesDep, caller: WriteCaller) -> Response:
    """Delete the circuit; components other circuits use stay (needs a write key)."""
    if not delete_circuit(res.neo4j, circuit_id, database=res.settings.neo4j_database):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no circuit with id {circuit_id!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
