"""Dangling parts of a circuit, and their removal (the cleanup the original ACDC makes).

A kept edge can carry nothing:

- **no path to the logits**: the receiver's output reaches the logits through no kept edge, so
  whatever the edge feeds it changes nothing downstream. Removing such edges is exact under every
  ablation.
- **no path from the embedding**: no kept edge enters the source (nor any node upstream of it), so
  every input of the source is ablated. Under *corrupt* ablation the source then computes exactly
  its corrupted-run output, which is what ablating the edge would substitute: the edge is a no-op
  and removing it is exact (to float rounding). Under mean or zero ablation it is not a no-op (the
  source computes f(mean inputs), not the mean of f), so that rule applies to corrupt ablation only.

Nodes left without an edge go with them; neurons go with their MLP. A key-value group node
``a{L}.kv{G}`` (grouped graphs) has no output of its own: it counts as linked to the query heads
of layer L that read it (with the circuit's shape; without one, to every head of layer L, which
only ever keeps more). Torch-free: the discovery
engine prunes a fresh circuit before evaluating it, and the migration prunes stored circuits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from discovery.circuit import Circuit, Edge, GraphShape, Node, head_name, mlp_name


@dataclass(frozen=True)
class Pruned:
    """The edges kept, and how many edges and nodes the cleanup removed."""

    edges: tuple[Edge, ...]
    edges_removed: int
    nodes_removed: int

    def record(self) -> dict[str, int]:
        """What provenance stores: ``{"edges": n, "nodes": m}``."""
        return {"edges": self.edges_removed, "nodes": self.nodes_removed}


def _kv_links(edges: list[Edge], shape: GraphShape | None) -> list[tuple[str, str]]:
    """(a{L}.kv{G}, a{L}.h{H}) for each key-value group node and each query head reading it."""
    links = []
    for kv in {e.dst for e in edges if ".kv" in e.dst}:
        node = Node.parse(kv)
        if shape is not None and shape.kv_groups:
            size = shape.n_heads // shape.kv_groups
            links += [(kv, head_name(node.layer, h)) for h in range(node.head * size, (node.head + 1) * size)]
        else:
            prefix = f"a{node.layer}.h"
            links += [(kv, n) for e in edges for n in (e.src, e.dst) if n.startswith(prefix)]
    return links


def _closure(edges: Iterable[Edge], start: str, *, downstream: bool,
             shape: GraphShape | None = None) -> set[str]:
    """``start`` and every node linked to it by kept edges, following them downstream (from
    source to receiver) or upstream (from receiver to source)."""
    edges = list(edges)
    pairs = [(e.src, e.dst) for e in edges] + _kv_links(edges, shape)
    links = [(a, b) if downstream else (b, a) for a, b in pairs]
    reached, grew = {start}, True
    while grew:
        grew = False
        for a, b in links:
            if a in reached and b not in reached:
                reached.add(b)
                grew = True
    return reached


def reachable_from_embed(edges: Iterable[Edge], shape: GraphShape | None = None) -> set[str]:
    """Nodes whose output depends on the input through kept edges (``embed`` itself included)."""
    return _closure(edges, "embed", downstream=True, shape=shape)


def reaching_logits(edges: Iterable[Edge], shape: GraphShape | None = None) -> set[str]:
    """Nodes whose output reaches ``logits`` through kept edges (``logits`` itself included)."""
    return _closure(edges, "logits", downstream=False, shape=shape)


def dangling(edges: Iterable[Edge], *, from_embed: bool = True,
             shape: GraphShape | None = None) -> list[Edge]:
    """The kept edges that carry nothing (see the module docstring); ``from_embed`` False applies
    the no-path-to-logits rule only (exact under any ablation)."""
    edges = list(edges)
    back = reaching_logits(edges, shape)
    forward = reachable_from_embed(edges, shape) if from_embed else None
    return [e for e in edges if e.dst not in back or (forward is not None and e.src not in forward)]


def prune_edges(edges: Iterable[Edge], *, from_embed: bool = True,
                shape: GraphShape | None = None) -> Pruned:
    """``edges`` without the dangling ones, until none is left (removing one can strand another)."""
    original = list(edges)
    kept = original
    while True:
        dead = set(map(_key, dangling(kept, from_embed=from_embed, shape=shape)))
        if not dead:
            break
        kept = [e for e in kept if _key(e) not in dead]
    return Pruned(tuple(kept), edges_removed=len(original) - len(kept),
                  nodes_removed=len(_endpoints(original)) - len(_endpoints(kept)))


def prune_circuit(circuit: Circuit, *, from_embed: bool | None = None) -> tuple[Circuit, Pruned]:
    """``circuit`` without its dangling edges and the nodes left without edges (neurons go with their
    MLP). ``from_embed`` None: the rule suits the circuit's ablation (corrupt only). Metrics are
    kept: the removal is exact for the rules applied."""
    if from_embed is None:
        from_embed = circuit.provenance.params.get("ablation", "corrupt") == "corrupt"
    pruned = prune_edges(circuit.edges, from_embed=from_embed, shape=circuit.graph)
    names = _endpoints(pruned.edges)
    nodes = tuple(n for n in circuit.nodes if _stays(n, names))
    result = Pruned(pruned.edges, len(circuit.edges) - len(pruned.edges), len(circuit.nodes) - len(nodes))
    if not result.edges_removed and not result.nodes_removed:
        return circuit, result
    earlier = circuit.provenance.params.get("dangling_removed") or {}
    record = {k: int(earlier.get(k, 0)) + v for k, v in result.record().items()}
    provenance = replace(circuit.provenance, params={**circuit.provenance.params, "dangling_removed": record})
    return replace(circuit, nodes=nodes, edges=pruned.edges, provenance=provenance), result


def _stays(node: Node, names: set[str]) -> bool:
    if node.kind == "neuron":
        return node.layer is not None and mlp_name(node.layer) in names
    return node.name in names


def _endpoints(edges: Iterable[Edge]) -> set[str]:
    return {name for e in edges for name in (e.src, e.dst)}


def _key(edge: Edge) -> tuple[str, str, str]:
    return edge.src, edge.dst, edge.input
