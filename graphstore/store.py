"""Write, read and delete circuits over a Neo4j driver passed in by the caller.

One circuit is one write transaction: all of it lands or none of it does. Every statement MERGEs on
keys, so a retried write (a re-delivered job) creates no duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from neo4j import Driver, ManagedTransaction

from discovery.circuit import Circuit, Edge, Metrics, Node, Provenance
from graphstore import queries

BATCH = 1000


def _chunks(rows: list[dict[str, Any]], size: int = BATCH) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def component_uid(model: str, name: str) -> str:
    """The key of a component shared by every circuit of ``model``: ``"<model>/a3.h5"``."""
    return f"{model}/{name}"


def ensure_schema(driver: Driver, *, database: str) -> None:
    """Create constraints and indexes if they do not exist (idempotent)."""
    for statement in queries.SCHEMA:
        driver.execute_query(statement, database_=database)


def _circuit_props(circuit: Circuit) -> dict[str, Any]:
    p, m = circuit.provenance, circuit.metrics
    return {
        "id": circuit.id,
        "method": p.method,
        "threshold": p.threshold,
        "metric": m.name,
        "metric_full": m.full,
        "metric_empty": m.empty,
        "metric_circuit": m.circuit,
        "faithfulness": m.faithfulness,
        "n_nodes": len(circuit.nodes),
        "n_edges": len(circuit.edges),
        "created_at": p.created_at,
        "device": p.device,
        "seed": p.seed,
        # Maps are not Neo4j property values: the whole provenance travels as JSON.
        "provenance": json.dumps(circuit.to_dict()["provenance"], sort_keys=True),
    }


def _write_tx(tx: ManagedTransaction, circuit: Circuit) -> None:
    model, task = circuit.provenance.model, circuit.provenance.task
    tx.run(
        queries.MERGE_CIRCUIT,
        model={"id": model, "name": model, "sha256": circuit.provenance.model_sha256},
        task={"id": task, "name": task, "metric": circuit.metrics.name,
              "dataset_hash": circuit.provenance.dataset_hash},
        circuit=_circuit_props(circuit),
    )
    for kind, label in queries.KIND_LABELS.items():
        rows = [
            {"uid": component_uid(model, n.name), "name": n.name, "model": model, "kind": n.kind,
             "layer": n.layer, "head": n.head, "neuron": n.neuron, "score": n.score}
            for n in circuit.nodes if n.kind == kind
        ]
        for chunk in _chunks(rows):
            tx.run(queries.merge_components(label), rows=chunk, circuit_id=circuit.id)
    neurons = [
        {"uid": component_uid(model, n.name), "mlp_uid": component_uid(model, f"m{n.layer}"),
         "mlp_name": f"m{n.layer}", "model": model, "layer": n.layer}
        for n in circuit.nodes if n.kind == "neuron"
    ]
    for chunk in _chunks(neurons):
        tx.run(queries.LINK_NEURONS, rows=chunk)
    edges = [
        {"src": component_uid(model, e.src), "dst": component_uid(model, e.dst),
         "input": e.input, "score": e.score}
        for e in circuit.edges
    ]
    for chunk in _chunks(edges):
        tx.run(queries.MERGE_EDGES, rows=chunk, circuit_id=circuit.id)


def write_circuit(driver: Driver, circuit: Circuit, *, database: str) -> str:
    """Store ``circuit`` in one transaction; returns its id. Safe to call twice."""
    with driver.session(database=database) as session:
        session.execute_write(_write_tx, circuit)
    return circuit.id


def read_circuit(driver: Driver, circuit_id: str, *, database: str) -> Circuit | None:
    """The stored circuit with ``circuit_id``, or None."""
    with driver.session(database=database) as session:
        record = session.execute_read(
            lambda tx: tx.run(queries.READ_CIRCUIT, circuit_id=circuit_id).single()
        )
    if record is None:
        return None
    props = record["circuit"]
    nodes = tuple(
        sorted((Node(**n) for n in record["nodes"] if n["name"] is not None), key=lambda n: n.name)
    )
    edges = tuple(
        sorted((Edge(**e) for e in record["edges"] if e["src"] is not None), key=lambda e: e.name)
    )
    metrics = Metrics(full=props["metric_full"], empty=props["metric_empty"],
                      circuit=props["metric_circuit"], name=props["metric"])
    return Circuit(id=circuit_id, nodes=nodes, edges=edges, metrics=metrics,
                   provenance=Provenance(**json.loads(props["provenance"])))


def ping(driver: Driver, *, database: str) -> bool:
    """True when the database answers a trivial read."""
    records, _, _ = driver.execute_query(queries.PING, database_=database, routing_="r")
    return records[0]["ok"] == 1
