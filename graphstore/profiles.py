"""Circuits compared ACROSS models: a profile per stored circuit whose numbers mean the same thing in
any model, computed in Cypher from the stored graph (:data:`graphstore.queries.CIRCUIT_PROFILES`).

Components of different models are different components: ``a1.h2`` of ``multitask`` is not
``a1.h2`` of ``multitask-llama``, so the overlap of :mod:`graphstore.overlap` (component identity)
is defined only within one model. Across models we compare what is comparable, each number within
one circuit and normalised by its own model's graph (definitions also in ``graphstore/SCHEMA.md``):

- **size**: components kept (``n_nodes``), edges kept (``n_edges``), heads and MLPs kept;
- **faithfulness** under the task metric and under the search metric (as stored);
- **depth profile**: per layer, heads kept / heads per layer of the model (``n_layers`` values in
  [0, 1]): where in depth the circuit sits;
- **edge share by input**: the fraction of the circuit's edges whose receiver input is ``q``,
  ``k``, ``v``, ``mlp`` or ``logits`` (sums to 1); **MLP share**: the fraction of edges with an MLP
  (or neuron) at either end;
- **composition** (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits"):
  head -> later head edges by the receiving head's input (Q-, K-, V-composition), and the
  K-composition edges out of layer-0 heads: the previous-token -> induction path of a 2-layer
  induction circuit;
- **logit writers**: per layer, heads with an edge into ``logits`` (IOI's name movers write
  there), and MLPs with an edge into ``logits``;
- **longest path**: the most edges on a path embed -> logits through the circuit's own edges,
  against the most the model's graph allows (``max_path``: 2 * n_layers + 1 with sequential
  attention and MLP, n_layers + 1 with parallel blocks or no MLPs). How many sequential steps
  the circuit uses, not how many components.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from neo4j import Driver

from graphstore import queries

#: Receiver inputs of an edge, in the order profiles show them.
INPUTS: tuple[str, ...] = ("q", "k", "v", "mlp", "logits")
#: Head -> head edges, by the receiving head's input.
COMPOSITION: tuple[str, ...] = ("q", "k", "v")


@dataclass(frozen=True)
class CircuitProfile:
    """What of one stored circuit compares across models (see the module's definitions).
    Shares are None for a circuit without edges; faithfulness None where it was not stored."""

    id: str
    model: str
    task: str | None
    method: str | None
    architecture: str | None
    n_layers: int
    n_heads: int
    parallel: bool
    n_nodes: int
    n_edges: int
    heads: int
    mlps: int
    metric: str | None
    faithfulness_task: float | None
    search_metric: str | None
    faithfulness_search: float | None
    head_fraction_per_layer: tuple[float, ...]  # [n_layers]: heads kept / n_heads
    edge_share: dict[str, float | None]  # input -> fraction of edges, keys INPUTS
    mlp_edge_share: float | None
    composition: dict[str, int]  # receiving head's input -> head->head edges, keys COMPOSITION
    k_composition_from_layer0: int
    logit_heads_per_layer: tuple[int, ...]  # [n_layers]: heads with an edge into logits
    logit_mlps: int
    longest_path: int  # edges on the longest embed -> logits path; 0 when there is none
    max_path: int  # the longest such path the model's graph allows


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _profile(r: dict) -> CircuitProfile:
    """A profile from one row of ``CIRCUIT_PROFILES``."""
    n_heads, edges = r["n_heads"], r["edges"]
    return CircuitProfile(
        id=r["id"], model=r["model"], task=r["task"], method=r["method"],
        architecture=r["architecture"], n_layers=r["n_layers"], n_heads=n_heads,
        parallel=bool(r["parallel"]), n_nodes=r["n_nodes"] or 0, n_edges=edges,
        heads=sum(r["heads_per_layer"]), mlps=r["mlps"], metric=r["metric"],
        faithfulness_task=r["faithfulness_task"], search_metric=r["search_metric"],
        faithfulness_search=r["faithfulness_search"],
        head_fraction_per_layer=tuple(k / n_heads for k in r["heads_per_layer"]),
        edge_share={i: _share(r[f"input_{i}"], edges) for i in INPUTS},
        mlp_edge_share=_share(r["mlp_edges"], edges),
        composition={i: r[f"comp_{i}"] for i in COMPOSITION},
        k_composition_from_layer0=r["comp_k_from_layer0"],
        logit_heads_per_layer=tuple(r["logit_heads_per_layer"]), logit_mlps=r["logit_mlps"],
        longest_path=r["longest_path"], max_path=r["max_path"],
    )


def circuit_profiles(driver: Driver, ids: Sequence[str], *, database: str) -> list[CircuitProfile]:
    """The profile of every circuit of ``ids`` (any models; repeats dropped), in the order given.
    Raises ValueError naming the ids that match no stored circuit."""
    if isinstance(ids, str):
        raise ValueError("circuit ids: give a list of ids, not one string")
    wanted = list(dict.fromkeys(ids))
    if not wanted or any(not isinstance(i, str) or not i for i in wanted):
        raise ValueError("circuit ids: give one or more non-empty circuit ids")
    records, _, _ = driver.execute_query(queries.CIRCUIT_PROFILES, ids=wanted, database_=database,
                                         routing_="r")
    found = {r["id"]: _profile(r.data()) for r in records}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ValueError(f"no stored circuit with id {', '.join(map(repr, missing))}; "
                         "`circuits list` shows the stored ids")
    return [found[i] for i in wanted]
