"""Independent references for the graph-store tests: overlap computed in networkx on the source
circuits (never through Neo4j), and synthetic circuits of any size."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import networkx as nx

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance
from discovery.export import to_networkx


def node_set(circuit: Circuit) -> set[str]:
    return set(to_networkx(circuit).nodes)


def edge_set(circuit: Circuit) -> set[tuple[str, str, str]]:
    return set(to_networkx(circuit).edges(keys=True))


def weights(circuit: Circuit) -> dict[tuple[str, str, str], float]:
    """Each edge's share of the circuit's score mass: ``|score| / sum |score|`` (1 if unscored)."""
    g: nx.MultiDiGraph = to_networkx(circuit)
    raw = {(u, v, k): abs(d.get("score", 1.0)) for u, v, k, d in g.edges(keys=True, data=True)}
    total = sum(raw.values())
    return {e: w / total for e, w in raw.items()}


@dataclass
class RefOverlap:
    nodes_union: int
    nodes_shared: int
    edges_union: int
    edges_shared: int
    weighted: float
    unique_nodes: dict[str, set[str]]
    unique_edges: dict[str, int]
    layers: dict[int | None, tuple[int, int, tuple[int, ...], tuple[int, ...]]]


def overlap(circuits: list[Circuit]) -> RefOverlap:
    nodes = [node_set(c) for c in circuits]
    edges = [edge_set(c) for c in circuits]
    ws = [weights(c) for c in circuits]
    all_nodes, shared_nodes = set().union(*nodes), set.intersection(*nodes)
    all_edges, shared_edges = set().union(*edges), set.intersection(*edges)
    layer_of = {n.name: n.layer for c in circuits for n in c.nodes}
    layers = {}
    for layer in {layer_of[n] for n in all_nodes}:
        in_layer = [{n for n in ns if layer_of[n] == layer} for ns in nodes]
        union = set().union(*in_layer)
        others = [set().union(*(s for j, s in enumerate(in_layer) if j != i)) for i in range(len(in_layer))]
        layers[layer] = (len(union), len(set.intersection(*in_layer)),
                         tuple(len(s) for s in in_layer),
                         tuple(len(s - o) for s, o in zip(in_layer, others, strict=True)))
    unique_nodes, unique_edges = {}, {}
    for i, c in enumerate(circuits):
        other_nodes = set().union(*(n for j, n in enumerate(nodes) if j != i))
        other_edges = set().union(*(e for j, e in enumerate(edges) if j != i))
        unique_nodes[c.id] = nodes[i] - other_nodes
        unique_edges[c.id] = len(edges[i] - other_edges)
    return RefOverlap(
        nodes_union=len(all_nodes), nodes_shared=len(shared_nodes),
        edges_union=len(all_edges), edges_shared=len(shared_edges),
        weighted=sum(min(w[e] for w in ws) for e in shared_edges),
        unique_nodes=unique_nodes, unique_edges=unique_edges, layers=layers,
    )


def task_counts(circuits: list[Circuit], kinds: set[str]) -> Counter:
    """How many task circuits include each component of the given kinds."""
    counts: Counter = Counter()
    for c in circuits:
        counts.update({n.name for n in c.nodes if n.kind in kinds})
    return counts


SMALL = GraphShape(4, 4)  # the multitask model's shape


def synthetic(circuit_id: str, model: str, task: str, *, shape: GraphShape = SMALL,
              share: float = 1.0, seed: int = 0, neurons: int = 0, method: str = "synthetic",
              created_at: str = "2025-01-01T00:00:00+00:00") -> Circuit:
    """A circuit over ``share`` of ``shape``'s edges with random scores, and ``neurons`` random
    neurons in each MLP it uses; deterministic for a seed."""
    rng = random.Random(seed)
    names = [n for n in shape.edges() if rng.random() < share]
    edges = tuple(Edge.parse(n, rng.uniform(-1, 1)) for n in names)
    used = sorted({e.src for e in edges} | {e.dst for e in edges})
    nodes = [Node.parse(n) for n in used]
    for n in used:
        if n.startswith("m") and neurons:
            nodes += [Node.parse(f"{n}.n{i}", rng.random()) for i in sorted(rng.sample(range(64), neurons))]
    return Circuit(
        id=circuit_id, nodes=tuple(nodes), edges=edges,
        metrics=Metrics(full=2.0, empty=0.1, circuit=rng.uniform(0.5, 2.0), name="logit_diff"),
        provenance=Provenance(model=model, task=task, method=method, threshold=0.01,
                              params={"metric": "kl", "n_prompts": 20}, seed=seed,
                              versions={"python": "3.11"}, created_at=created_at),
        graph=shape, edge_scores={e.name: e.score for e in edges},
    )
