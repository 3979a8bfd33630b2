"""``/v1/models``: the shipped models (read from their cards, without torch), and questions across
the stored circuits of one model: the task x task overlap matrix and the hub components."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel

from api.deps import ResourcesDep
from api.routers.circuits import MAX_LIST, MAX_NAME
from api.security import ReadCaller
from discovery.catalog import model_summary, shipped_models
from graphstore.overlap import HUB_KINDS, hubs, overlap_matrix
from graphstore.queries import KIND_LABELS

router = APIRouter(prefix="/v1/models", tags=["models"])
ModelName = Annotated[str, Path(min_length=1, max_length=MAX_NAME, description="a model id of stored circuits")]


class ModelPublic(BaseModel):
    """A shipped model: its shape and what its card says (``eval``: per-task held-out results)."""

    name: str
    n_layers: int | None
    n_heads: int | None
    d_model: int | None
    n_ctx: int | None
    attn_only: bool
    weights_sha256: str | None
    eval: dict[str, Any]


class OverlapMatrixPublic(BaseModel):
    """Task x task overlap: row and column i are ``tasks[i]``'s newest circuit ``circuits[i]``;
    ``nodes`` and ``edges`` hold Jaccards, ``weighted`` the score-weighted edge overlap."""

    model: str
    tasks: list[str]
    circuits: list[str]
    nodes: list[list[float | None]]
    edges: list[list[float | None]]
    weighted: list[list[float | None]]


class HubUsePublic(BaseModel):
    """One circuit through a hub: the hub's score in it and its share of the circuit's score mass."""

    task: str
    circuit: str
    score: float | None
    share: float | None


class HubPublic(BaseModel):
    """A component and the task circuits that include it."""

    name: str
    kind: str
    layer: int | None
    tasks: int
    uses: list[HubUsePublic]


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


@router.get("", response_model=list[ModelPublic])
def list_(caller: ReadCaller) -> list[ModelPublic]:
    """The models shipped under ``models/``, usable in jobs by name."""
    return [ModelPublic(**model_summary(name)) for name in shipped_models()]


@router.get("/{model}/overlap", response_model=OverlapMatrixPublic,
            responses={404: {"description": "No stored circuits of this model (and method)"}})
def overlap(
    model: ModelName,
    res: ResourcesDep,
    caller: ReadCaller,
    method: Annotated[str | None, Query(min_length=1, max_length=MAX_NAME)] = None,
    tasks: Annotated[str | None, Query(max_length=MAX_LIST,
                                       description="only these tasks, comma-separated")] = None,
) -> OverlapMatrixPublic:
    """Pairwise overlap of the newest circuit per task of ``model`` (of ``method``, if given)."""
    try:
        matrix = overlap_matrix(res.neo4j, model, database=res.settings.neo4j_database,
                                method=method, tasks=_csv(tasks))
    except ValueError as exc:  # nothing stored for this model
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    return OverlapMatrixPublic(
        model=matrix.model, tasks=list(matrix.tasks), circuits=list(matrix.circuits),
        nodes=[list(r) for r in matrix.nodes], edges=[list(r) for r in matrix.edges],
        weighted=[list(r) for r in matrix.weighted],
    )


@router.get("/{model}/hubs", response_model=list[HubPublic])
def hubs_(
    model: ModelName,
    res: ResourcesDep,
    caller: ReadCaller,
    kinds: Annotated[str, Query(max_length=MAX_NAME, description=f"node kinds, comma-separated, of {', '.join(KIND_LABELS)}")]
        = ",".join(HUB_KINDS),
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[HubPublic]:
    """The components of ``model`` included by the circuits of the most tasks."""
    try:
        found = hubs(res.neo4j, model, database=res.settings.neo4j_database,
                     kinds=_csv(kinds) or [], limit=limit)
    except ValueError as exc:  # an unknown kind
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from None
    return [HubPublic(name=h.name, kind=h.kind, layer=h.layer, tasks=h.tasks,
                      uses=[HubUsePublic(task=u.task, circuit=u.circuit, score=u.score, share=u.share)
                            for u in h.uses])
            for h in found]
