"""``/v1/compare``: how two or more stored circuits of one model overlap
(:func:`graphstore.overlap.compare`), and ``/v1/compare/models``: circuits of any models side by
side by what compares across models (:func:`graphstore.profiles.circuit_profiles`); the
definitions of both are in ``graphstore/SCHEMA.md``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from api.deps import ResourcesDep
from api.routers.circuits import MAX_LIST, MAX_NAME, CircuitSummaryPublic
from api.security import ReadCaller
from graphstore.overlap import compare as overlap_of
from graphstore.overlap import shared_components
from graphstore.profiles import CircuitProfile, circuit_profiles
from graphstore.store import list_circuits

router = APIRouter(prefix="/v1/compare", tags=["compare"])

#: Most circuits one comparison takes.
MAX_IDS = 20


class LayerOverlapPublic(BaseModel):
    """Components of one layer (None: embed and logits); ``present`` and ``unique`` per circuit,
    in the order of ``circuits``."""

    layer: int | None
    union: int
    shared: int
    present: list[int]
    unique: list[int]


class SharedComponentPublic(BaseModel):
    """A component every compared circuit includes, with each one's score (None: unscored)."""

    name: str
    kind: str
    layer: int | None
    scores: list[float | None]


class OverlapPublic(BaseModel):
    """Node and edge Jaccard, score-weighted edge overlap, what is unique to each circuit, per
    layer, and the components all share. Jaccards are None when the union is empty; ``weighted``
    is None when a circuit's scores are all zero."""

    model: str
    circuits: list[str]
    summaries: list[CircuitSummaryPublic]
    nodes_union: int
    nodes_shared: int
    node_jaccard: float | None
    edges_union: int
    edges_shared: int
    edge_jaccard: float | None
    weighted: float | None
    unique_nodes: dict[str, list[str]]
    unique_edges: dict[str, int]
    layers: list[LayerOverlapPublic]
    shared: list[SharedComponentPublic]


def parse_ids(text: str) -> list[str]:
    """Comma-separated circuit ids, without blanks and repeats, in order."""
    ids = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if any(len(i) > MAX_NAME for i in ids):
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            detail=f"ids: a circuit id has at most {MAX_NAME} characters")
    if len(ids) < 2:
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            detail=f"ids: give at least 2 distinct circuit ids, comma-separated "
                                   f"(got {len(ids)})")
    if len(ids) > MAX_IDS:
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            detail=f"ids: at most {MAX_IDS} circuits per comparison (got {len(ids)})")
    return ids


@router.get("", response_model=OverlapPublic, responses={
    400: {"description": "Fewer than two ids, or circuits of different models"},
    404: {"description": "An id names no stored circuit"},
})
def compare(
    res: ResourcesDep,
    caller: ReadCaller,
    ids: Annotated[str, Query(max_length=MAX_LIST,
                              description="two or more circuit ids, comma-separated")],
) -> OverlapPublic:
    """The overlap of the circuits named in ``ids`` (all of one model)."""
    wanted, db = parse_ids(ids), res.settings.neo4j_database
    found = {s.id: s for s in list_circuits(res.neo4j, database=db, ids=wanted, limit=len(wanted))}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"no stored circuit with id {', '.join(map(repr, missing))}")
    try:
        overlap = overlap_of(res.neo4j, wanted, database=db)
        shared = shared_components(res.neo4j, wanted, database=db)
    except ValueError as exc:  # circuits of different models
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            detail=f"ids: {exc}; GET /v1/compare/models?ids=... compares circuits "
                                   "of different models by what carries over") from None
    return OverlapPublic(
        model=overlap.model, circuits=list(overlap.circuits),
        summaries=[CircuitSummaryPublic.model_validate(found[i], from_attributes=True)
                   for i in overlap.circuits],
        nodes_union=overlap.nodes_union, nodes_shared=overlap.nodes_shared,
        node_jaccard=overlap.node_jaccard, edges_union=overlap.edges_union,
        edges_shared=overlap.edges_shared, edge_jaccard=overlap.edge_jaccard,
        weighted=overlap.weighted,
        unique_nodes={k: list(v) for k, v in overlap.unique_nodes.items()},
        unique_edges=overlap.unique_edges,
        layers=[LayerOverlapPublic(layer=x.layer, union=x.union, shared=x.shared,
                                   present=list(x.present), unique=list(x.unique))
                for x in overlap.layers],
        shared=[SharedComponentPublic(name=s.name, kind=s.kind, layer=s.layer, scores=list(s.scores))
                for s in shared],
    )


class ModelsComparisonPublic(BaseModel):
    """Circuits of one or more models side by side: ``models`` in order of first appearance,
    ``profiles`` in the order of ``circuits``."""

    circuits: list[str]
    models: list[str]
    profiles: list[CircuitProfile]  # definitions: graphstore/SCHEMA.md, "Profiles across models"


@router.get("/models", response_model=ModelsComparisonPublic, responses={
    400: {"description": "Fewer than two ids, or too many"},
    404: {"description": "An id names no stored circuit"},
})
def compare_models(
    res: ResourcesDep,
    caller: ReadCaller,
    ids: Annotated[str, Query(max_length=MAX_LIST,
                              description="two or more circuit ids, comma-separated, of any models")],
) -> ModelsComparisonPublic:
    """Circuits of different models (or one) side by side. Components of different models are
    different components, so nothing is matched by name: each circuit gets a profile computed in
    Cypher from its stored graph and normalised by its own model: size, faithfulness, heads per
    layer as a fraction of the model's heads (depth profile), share of edges by receiver input
    (q / k / v / mlp / logits), MLP share, head -> head Q/K/V composition (and K-composition out of
    layer 0: the previous-token -> induction path), heads writing to logits per layer, and the
    longest embed -> logits path against the longest the model's graph allows."""
    wanted, db = parse_ids(ids), res.settings.neo4j_database
    try:
        profiles = circuit_profiles(res.neo4j, wanted, database=db)
    except ValueError as exc:  # ids naming no stored circuit
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"ids: {exc}") from None
    return ModelsComparisonPublic(
        circuits=[p.id for p in profiles],
        models=list(dict.fromkeys(p.model for p in profiles)),
        profiles=profiles,
    )
