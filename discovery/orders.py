"""The orders ACDC can visit edges in. ACDC decides one edge at a time against the circuit as it
stands, so the order is part of the result: two implementations at one threshold can disagree only
because they visit edges differently. Naming the order makes a circuit reproducible across tools.

* ``ours`` (default): receivers in reverse topological order (logits first), the q, k, v inputs of
  a head as v, k, q; within a receiver its senders latest first (:meth:`Graph.edges_in_order`).
* ``auto-circuit``: receiver layers in reverse order (logits, MLP L, the heads of layer L, MLP L-1,
  ...), within a layer the edges sorted by their auto-circuit names (``A0.1->A2.3.Q``,
  ``Resid Start->MLP 1``, ``MLP 3->Resid End``). auto-circuit's own ACDC sorts by receiver layer
  only and walks a Python set inside a layer, so its order there changes with ``PYTHONHASHSEED``;
  sorting by name is the reproducible order closest to it.
* ``random:SEED``: receiver layers in reverse order as above, the edges of each layer shuffled
  with SEED (interleaving receivers): the shuffles a stability score draws.

Every order keeps receiver layers in reverse topological order: ACDC decides what feeds a node
after what the node feeds, which is what the method is.

Importing this module loads no torch (the API validates orders); :func:`edge_order` takes a
:class:`~discovery.graph.Graph`.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from discovery.circuit import Edge
    from discovery.graph import Graph

#: name -> what it is (``random`` takes a seed: ``random:7``)
ORDERS: dict[str, str] = {
    "ours": "receivers reverse-topological (logits first), senders latest-first",
    "auto-circuit": "receiver layers reverse-topological, within a layer sorted by auto-circuit edge name",
    "random": "receiver layers reverse-topological, within a layer shuffled with the seed",
}


def check_order(spec: str) -> str:
    """``spec`` when it names an order (``ours``, ``auto-circuit``, ``random:<seed>``); else a
    ValueError listing them."""
    name, _, seed = spec.partition(":")
    if name in ("ours", "auto-circuit") and not seed:
        return spec
    if name == "random" and seed.isdigit():
        return spec
    raise ValueError(f"unknown edge order {spec[:40]!r}; use ours, auto-circuit or random:<seed> "
                     "(e.g. random:3)")


def describe(spec: str) -> str:
    """The order in words, for a circuit's provenance."""
    name, _, seed = check_order(spec).partition(":")
    return ORDERS[name] + (f" {seed}" if seed else "")


def edge_order(graph: Graph, spec: str = "ours") -> list[tuple[int, int]]:
    """Every graph edge once, as ``(upstream, input)`` index pairs (a tie set at its first input),
    in the order ``spec`` visits them."""
    name, _, seed = check_order(spec).partition(":")
    if name == "ours":
        return graph.edges_in_order()
    layers = _receiver_layers(graph)
    if name == "auto-circuit":
        return [e for layer in layers for e in sorted(layer, key=lambda e: auto_circuit_name(graph, *e))]
    rng = random.Random(int(seed))
    out: list[tuple[int, int]] = []
    for layer in layers:
        layer = sorted(layer)  # a fixed starting point, so the seed alone decides
        rng.shuffle(layer)
        out += layer
    return out


def order_names(graph: Graph, spec: str = "ours") -> list[str]:
    """The edge names of :func:`edge_order`, in order."""
    return [graph.edge(u, k).name for u, k in edge_order(graph, spec)]


def order_sha256(graph: Graph, spec: str = "ours") -> str:
    """sha256 of :func:`order_names` joined by newlines: a second tool checks its order by it."""
    return hashlib.sha256("\n".join(order_names(graph, spec)).encode()).hexdigest()


def _receiver_layers(graph: Graph) -> list[list[tuple[int, int]]]:
    """The edges grouped by receiver layer (heads of one layer, one MLP, the logits), latest
    layer first."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for tie in graph.ties:
        k = tie[0]
        inp = graph.inputs[k]
        groups.setdefault((inp.layer, inp.stage), []).extend((u, k) for u in range(graph.n_avail[k]))
    return [groups[key] for key in sorted(groups, reverse=True)]


def auto_circuit_node(name: str) -> str:
    """Our upstream node name in auto-circuit's spelling: ``embed`` -> ``Resid Start``,
    ``a2.h3`` -> ``A2.3``, ``m1`` -> ``MLP 1``."""
    if name == "embed":
        return "Resid Start"
    if name.startswith("a"):
        layer, head = name[1:].split(".h")
        return f"A{layer}.{head}"
    return f"MLP {name[1:]}"


def auto_circuit_name(graph: Graph, u: int, k: int) -> str:
    """Edge ``(u, k)`` named as auto-circuit names it (:func:`auto_circuit_edge`)."""
    return auto_circuit_edge(graph.edge(u, k))


def auto_circuit_edge(edge: Edge) -> str:
    """``edge`` named as auto-circuit names it: ``A0.1->A2.3.Q``, ``MLP 3->Resid End`` (a
    key-value group input, which auto-circuit lacks: ``A2.kv0.K``)."""
    src = auto_circuit_node(edge.src)
    if edge.input == "logits":
        dst = "Resid End"
    elif edge.input == "mlp":
        dst = auto_circuit_node(edge.dst)
    else:
        layer, rest = edge.dst[1:].split(".", 1)
        dst = f"A{layer}.{rest.removeprefix('h')}.{edge.input.upper()}"
    return f"{src}->{dst}"
