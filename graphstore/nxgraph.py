"""A stored circuit as a networkx graph, built from what Neo4j returns.

The layout is the one :func:`discovery.export.to_networkx` gives a :class:`Circuit` in memory, so
a circuit read back from the store equals the one written, graph for graph: a ``MultiDiGraph``
(a networkx ``DiGraph`` subclass) whose edge *key is the edge's input*, because the q, k and v
edges between two heads are three edges of the circuit that a plain ``DiGraph`` would fold into
one. Nodes carry ``kind``, ``layer``, ``head``, ``neuron``, ``score``; edges ``input``, ``score``
and ``index`` (the circuit's own edge order); ``g.graph`` carries the metrics, provenance and edge
scores as JSON and the graph shape. Attributes that are None are left out, as GraphML wants.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import networkx as nx
from neo4j import Driver

from discovery.circuit import Provenance
from graphstore.store import fetch_circuit, metrics_from_props


def _scalars(**attrs: Any) -> dict[str, Any]:
    return {k: float(v) if k == "score" else v for k, v in attrs.items() if v is not None}


def _graph_attrs(props: dict[str, Any]) -> dict[str, Any]:
    metrics = metrics_from_props(props)
    provenance = Provenance(**json.loads(props["provenance"]))
    attrs: dict[str, Any] = {
        "circuit_id": props["id"],
        "metrics": json.dumps(asdict(metrics)),
        "provenance": json.dumps(asdict(provenance)),
        "edge_scores": json.dumps(json.loads(props.get("edge_scores") or "{}")),
    }
    if props.get("graph_n_layers") is not None:
        attrs |= {"n_layers": props["graph_n_layers"], "n_heads": props["graph_n_heads"],
                  "mlp": props["graph_mlp"], "parallel": bool(props.get("graph_parallel"))}
        if props.get("graph_kv_groups") is not None:  # one k/v input per key-value group
            attrs["kv_groups"] = props["graph_kv_groups"]
    return attrs


def circuit_graph(driver: Driver, circuit_id: str, *, database: str) -> nx.MultiDiGraph | None:
    """The stored circuit ``circuit_id`` as a ``MultiDiGraph`` keyed by input, or None."""
    record = fetch_circuit(driver, circuit_id, database=database)
    if record is None:
        return None
    g = nx.MultiDiGraph(**_graph_attrs(record["circuit"]))
    nodes = [n for n in record["nodes"] if n["name"] is not None]
    for n in sorted(nodes, key=lambda n: (n["order"] is None, n["order"] or 0)):
        g.add_node(n["name"], **_scalars(kind=n["kind"], layer=n["layer"], head=n["head"],
                                         neuron=n["neuron"], score=n["score"]))
    edges = [e for e in record["edges"] if e["src"] is not None]
    for e in sorted(edges, key=lambda e: (e["order"] is None, e["order"] or 0)):
        g.add_edge(e["src"], e["dst"], key=e["input"],
                   **_scalars(input=e["input"], score=e["score"], index=e["order"]))
    return g
