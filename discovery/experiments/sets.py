"""Shared and unique parts of two circuits: the five sets of a pair (A, B, A∩B, A∖B, B∖A) at node
level (heads, MLPs, neurons: the ablatable components, never ``embed``/``logits``) and at edge
level (edge names). Torch-free: pure set arithmetic on :class:`discovery.circuit.Circuit`."""

from __future__ import annotations

from collections.abc import Iterable

from discovery.circuit import Circuit, Node
from discovery.experiments.result import ComponentSets, pair_key, set_names

#: Node kinds that can be ablated (the circuit's ends, embed and logits, cannot).
ABLATABLE = ("attention", "mlp", "neuron")


def kind_of(name: str) -> str:
    """``attention``, ``mlp`` or ``neuron`` for a component name; ValueError for embed/logits."""
    kind = Node.parse(name).kind
    if kind not in ABLATABLE:
        raise ValueError(f"{name} ({kind}) is not an ablatable component; use heads, MLPs or neurons")
    return kind


def component_order(name: str) -> tuple[int, int, int, int]:
    """Sort key in model order: layer, then heads before the MLP before its neurons."""
    node = Node.parse(name)
    rank = {"attention": 0, "mlp": 1, "neuron": 2}[node.kind]
    return (node.layer or 0, rank, node.head if node.head is not None else -1,
            node.neuron if node.neuron is not None else -1)


def sort_components(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(names), key=component_order))


def circuit_components(circuit: Circuit) -> frozenset[str]:
    """The circuit's ablatable nodes: heads, MLPs and neurons."""
    return frozenset(n.name for n in circuit.nodes if n.kind in ABLATABLE)


def circuit_edges(circuit: Circuit) -> frozenset[str]:
    return frozenset(e.name for e in circuit.edges)


def _jaccard(x: frozenset[str], y: frozenset[str]) -> float | None:
    union = x | y
    return None if not union else len(x & y) / len(union)


def five_sets(a: str, b: str, x: frozenset[str], y: frozenset[str]) -> dict[str, frozenset[str]]:
    """{set name: members} for A = ``x`` and B = ``y`` (names from :func:`set_names`)."""
    names = set_names(a, b)
    return dict(zip(names, (x, y, x & y, x - y, y - x), strict=True))


def component_sets(a: str, b: str, circuit_a: Circuit, circuit_b: Circuit) -> ComponentSets:
    """The pair's sets at node and edge level, in model order, with both Jaccard indices."""
    nx, ny = circuit_components(circuit_a), circuit_components(circuit_b)
    ex, ey = circuit_edges(circuit_a), circuit_edges(circuit_b)
    return ComponentSets(
        pair=pair_key(a, b),
        nodes={k: sort_components(v) for k, v in five_sets(a, b, nx, ny).items()},
        edges={k: tuple(sorted(v)) for k, v in five_sets(a, b, ex, ey).items()},
        node_jaccard=_jaccard(nx, ny), edge_jaccard=_jaccard(ex, ey),
    )


def all_components(n_layers: int, n_heads: int, mlp: bool) -> tuple[str, ...]:
    """Every head and MLP of the model (neurons are drawn per MLP where needed), in model order."""
    names: list[str] = []
    for layer in range(n_layers):
        names += [f"a{layer}.h{h}" for h in range(n_heads)]
        if mlp:
            names.append(f"m{layer}")
    return tuple(names)
