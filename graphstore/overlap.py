"""Questions across circuits of one model, answered in Cypher: the components a set of circuits
shares, how much two or more circuits overlap, the task x task overlap matrix, and hub components.

Definitions (also in ``graphstore/SCHEMA.md``), for circuits C_1 .. C_k of one model:

- **node Jaccard**: |N_1 ∩ ... ∩ N_k| / |N_1 ∪ ... ∪ N_k| over components (heads, MLPs, neurons,
  embed, logits);
- **edge Jaccard**: the same over edges keyed by (source, receiver, input), so the q and k edges
  between two heads are different edges;
- **score-weighted overlap**: each circuit's edges weigh ``w(e) = |score|`` (1 when unscored),
  normalised to ``p_i(e) = w_i(e) / sum_e w_i(e)``; the overlap is ``sum_e min_i p_i(e)`` over
  the edges all k share (0 where a circuit lacks the edge). It is 1 for identical circuits with
  proportional scores, 0 for disjoint ones, and does not depend on the scale of each method's
  scores. None when a circuit's scores are all zero.

Jaccard is None when the union is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from neo4j import Driver

from graphstore import queries

#: Component kinds that :func:`hubs` ranks by default (every circuit has embed and logits).
HUB_KINDS: tuple[str, ...] = ("attention", "mlp", "neuron")


@dataclass(frozen=True)
class SharedComponent:
    """A component every circuit of the set includes, with each one's score (None: unscored)."""

    name: str
    kind: str
    layer: int | None
    head: int | None
    neuron: int | None
    scores: tuple[float | None, ...]


@dataclass(frozen=True)
class LayerOverlap:
    """Components of one layer (None: embed and logits); ``present`` and ``unique`` follow the
    order of the circuits."""

    layer: int | None
    union: int
    shared: int
    present: tuple[int, ...]
    unique: tuple[int, ...]


@dataclass(frozen=True)
class Overlap:
    """How two or more circuits of one model overlap (see the module's definitions)."""

    circuits: tuple[str, ...]
    model: str
    nodes_union: int
    nodes_shared: int
    edges_union: int
    edges_shared: int
    weighted: float | None
    unique_nodes: dict[str, tuple[str, ...]]  # circuit -> components only it includes
    unique_edges: dict[str, int]  # circuit -> how many edges only it has
    layers: tuple[LayerOverlap, ...]

    @property
    def node_jaccard(self) -> float | None:
        return jaccard(self.nodes_shared, self.nodes_union)

    @property
    def edge_jaccard(self) -> float | None:
        return jaccard(self.edges_shared, self.edges_union)


@dataclass(frozen=True)
class OverlapMatrix:
    """Task x task overlap of one model: row and column i are ``tasks[i]``'s ``circuits[i]``."""

    model: str
    tasks: tuple[str, ...]
    circuits: tuple[str, ...]
    nodes: tuple[tuple[float | None, ...], ...]  # node Jaccard
    edges: tuple[tuple[float | None, ...], ...]  # edge Jaccard
    weighted: tuple[tuple[float | None, ...], ...]  # score-weighted overlap


@dataclass(frozen=True)
class HubUse:
    """One circuit through a hub: the hub's membership ``score`` in it (None: unscored) and the
    ``share`` of the circuit's score mass on edges into or out of the hub."""

    task: str
    circuit: str
    score: float | None
    share: float | None


@dataclass(frozen=True)
class Hub:
    """A component of one model and the task circuits that include it."""

    name: str
    kind: str
    layer: int | None
    tasks: int
    uses: tuple[HubUse, ...]


def jaccard(shared: int, union: int) -> float | None:
    """``shared / union``; None for an empty union."""
    return shared / union if union else None


def _distinct(ids: Sequence[str], least: int) -> list[str]:
    """``ids`` without repeats, in order; at least ``least`` of them, each a non-empty string."""
    if isinstance(ids, str):
        raise ValueError("circuit ids: give a list of ids, not one string")
    out = list(dict.fromkeys(ids))
    if any(not isinstance(i, str) or not i for i in out):
        raise ValueError("circuit ids: every id must be a non-empty string")
    if len(out) < least:
        raise ValueError(f"circuit ids: need at least {least} distinct ids, got {len(out)}")
    return out


def _model_of(driver: Driver, ids: list[str], *, database: str) -> tuple[str, dict[str, float | None]]:
    """The one model all ``ids`` belong to, and each circuit's score mass; clear errors otherwise."""
    records, _, _ = driver.execute_query(queries.CIRCUIT_INFO, ids=ids, database_=database,
                                         routing_="r")
    found = {r["id"]: r for r in records}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValueError(f"no stored circuit with id {', '.join(map(repr, missing))}; "
                         "`circuits list` shows the stored ids")
    models = sorted({r["model"] for r in records})
    if len(models) > 1:
        raise ValueError(f"circuits belong to different models ({', '.join(models)}): components "
                         "are shared only within one model; compare circuits of one model")
    return models[0], {i: found[i]["score_mass"] for i in ids}


def shared_components(driver: Driver, ids: Sequence[str], *, database: str) -> list[SharedComponent]:
    """Components included by every circuit in ``ids`` (one model), by layer then name."""
    distinct = _distinct(ids, 1)
    _model_of(driver, distinct, database=database)
    records, _, _ = driver.execute_query(queries.SHARED_COMPONENTS, ids=distinct, k=len(distinct),
                                         database_=database, routing_="r")
    return [SharedComponent(**{**r.data(), "scores": tuple(r["scores"])}) for r in records]


def compare(driver: Driver, ids: Sequence[str], *, database: str) -> Overlap:
    """The overlap of two or more circuits of one model (node and edge Jaccard, score-weighted
    overlap, what is unique to each, and a per-layer breakdown)."""
    distinct = _distinct(ids, 2)
    model, mass = _model_of(driver, distinct, database=database)
    params = {"ids": distinct, "k": len(distinct), "database_": database, "routing_": "r"}
    layers, _, _ = driver.execute_query(queries.NODE_OVERLAP_BY_LAYER, **params)
    unique, _, _ = driver.execute_query(queries.UNIQUE_COMPONENTS, **params)
    edges, _, _ = driver.execute_query(queries.EDGE_OVERLAP, **params)
    by_layer = tuple(LayerOverlap(r["layer"], r["union"], r["shared"], tuple(r["present"]),
                                  tuple(r["unique"])) for r in layers)
    names = {r["circuit"]: tuple(sorted(r["names"])) for r in unique}
    e = edges[0]
    weighted = e["weighted"] if all(mass.get(i) for i in distinct) else None
    return Overlap(
        circuits=tuple(distinct), model=model,
        nodes_union=sum(x.union for x in by_layer), nodes_shared=sum(x.shared for x in by_layer),
        edges_union=e["union"], edges_shared=e["shared"], weighted=weighted,
        unique_nodes={i: names.get(i, ()) for i in distinct},
        unique_edges=dict(zip(distinct, e["unique"], strict=True)), layers=by_layer,
    )


def overlap_matrix(driver: Driver, model: str, *, database: str, method: str | None = None,
                   tasks: Sequence[str] | None = None) -> OverlapMatrix:
    """Pairwise overlap of the task circuits of ``model``: per task its newest circuit (of
    ``method``, if given; only ``tasks``, if given)."""
    read = {"database_": database, "routing_": "r"}
    rows, _, _ = driver.execute_query(queries.MATRIX_CIRCUITS, model=model, method=method,
                                      tasks=list(tasks) if tasks is not None else None, **read)
    if not rows:
        raise ValueError(f"no stored circuits of model {model!r}"
                         + (f" with method {method!r}" if method else "")
                         + "; `circuits list` shows what is stored")
    ids = [r["circuit"] for r in rows]
    size = {r["circuit"]: (r["n_nodes"], r["n_edges"], r["score_mass"]) for r in rows}
    nodes, _, _ = driver.execute_query(queries.PAIR_SHARED_NODES, ids=ids, **read)
    edges, _, _ = driver.execute_query(queries.PAIR_SHARED_EDGES, ids=ids, **read)
    # Each pair comes once, in the server's string order: file it both ways.
    shared_nodes = {k: r["shared"] for r in nodes for k in ((r["a"], r["b"]), (r["b"], r["a"]))}
    shared_edges = {k: (r["shared"], r["weighted"]) for r in edges
                    for k in ((r["a"], r["b"]), (r["b"], r["a"]))}

    def cell(a: str, b: str) -> tuple[float | None, float | None, float | None]:
        (na, ea, ma), (nb, eb, mb) = size[a], size[b]
        sn = na if a == b else shared_nodes.get((a, b), 0)
        se, w = (ea, 1.0) if a == b else shared_edges.get((a, b), (0, 0.0))
        return jaccard(sn, na + nb - sn), jaccard(se, ea + eb - se), w if ma and mb else None

    cells = [[cell(a, b) for b in ids] for a in ids]
    return OverlapMatrix(
        model=model, tasks=tuple(r["task"] for r in rows), circuits=tuple(ids),
        nodes=tuple(tuple(c[0] for c in row) for row in cells),
        edges=tuple(tuple(c[1] for c in row) for row in cells),
        weighted=tuple(tuple(c[2] for c in row) for row in cells),
    )


def hubs(driver: Driver, model: str, *, database: str, kinds: Sequence[str] = HUB_KINDS,
         limit: int = 20) -> list[Hub]:
    """Components of ``model`` included by the circuits of the most tasks, with, for every such
    circuit, the share of its score mass carried by edges into or out of the component."""
    unknown = sorted(set(kinds) - set(queries.KIND_LABELS))
    if unknown or not kinds:
        raise ValueError(f"kinds: unknown {unknown or 'none given'}; use some of "
                         f"{', '.join(queries.KIND_LABELS)}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    records, _, _ = driver.execute_query(queries.HUBS, model=model, kinds=list(kinds), limit=limit,
                                         database_=database, routing_="r")
    return [Hub(r["name"], r["kind"], r["layer"], r["tasks"],
                tuple(HubUse(u["task"], u["circuit"], u["score"], u["share"]) for u in r["circuits"]))
            for r in records]
