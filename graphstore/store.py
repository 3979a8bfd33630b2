"""Write, read, list and delete circuits over a Neo4j driver passed in by the caller.

Writing lives in :mod:`graphstore.writer` (one transaction per circuit, replace-on-write; its
names are re-exported here, where callers have always found them); this module reads, lists and
deletes, and creates the schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from neo4j import Driver, ManagedTransaction, Record

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance
from graphstore import queries
from graphstore.writer import (
    BATCH,
    WRITE_BATCH,
    BatchCallback,
    check_circuit,
    circuit_props,
    component_uid,
    edge_weight,
    prune,
    write_circuit,
    write_tx,
)

_circuit_props = circuit_props  # its name before graphstore.writer (tests/unit/test_dtype.py)

__all__ = [
    "BATCH", "WRITE_BATCH", "BatchCallback", "CircuitSummary", "check_circuit", "circuit_from_record",
    "circuit_props", "component_uid", "delete_circuit", "edge_weight", "ensure_schema",
    "fetch_circuit", "list_circuits", "metrics_from_props", "ping", "read_circuit", "write_circuit",
    "write_tx",
]


@dataclass(frozen=True)
class CircuitSummary:
    """One row of :func:`list_circuits`."""

    id: str
    model: str
    task: str
    method: str
    threshold: float | None
    metric: str | None  # the task metric
    faithfulness: float | None  # under the task metric (the historical name)
    n_nodes: int
    n_edges: int
    created_at: str
    faithfulness_task: float | None = None  # the same value, named unmistakably
    search_metric: str | None = None
    faithfulness_search: float | None = None  # None for circuits stored before it was kept


def ensure_schema(driver: Driver, *, database: str) -> None:
    """Create constraints and indexes if they do not exist (idempotent)."""
    for statement in queries.SCHEMA:
        driver.execute_query(statement, database_=database)


def _delete_tx(tx: ManagedTransaction, circuit_id: str) -> bool:
    tx.run(queries.CLEAR_EDGES, circuit_id=circuit_id).consume()
    record = tx.run(queries.DELETE_CIRCUIT, circuit_id=circuit_id).single()
    if record is None:
        return False
    prune(tx, record)
    return True


def delete_circuit(driver: Driver, circuit_id: str, *, database: str) -> bool:
    """Remove a circuit, its memberships and edges, and the components, model and task that no
    other circuit uses; returns False when there was no such circuit."""
    with driver.session(database=database) as session:
        return session.execute_write(_delete_tx, circuit_id)


def fetch_circuit(driver: Driver, circuit_id: str, *, database: str) -> Record | None:
    """The raw record of a stored circuit (``circuit`` properties, ``nodes``, ``edges``), or None."""
    with driver.session(database=database) as session:
        return session.execute_read(
            lambda tx: tx.run(queries.READ_CIRCUIT, circuit_id=circuit_id).single()
        )


def _ordered(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    present = [r for r in rows if r[key] is not None]
    return sorted(present, key=lambda r: (r["order"] is None, r["order"] or 0))


def metrics_from_props(props: dict[str, Any]) -> Metrics:
    """The :class:`Metrics` of a stored Circuit node's properties (search fields None when the
    circuit was stored before they were kept)."""
    return Metrics(full=props.get("metric_full"), empty=props.get("metric_empty"),
                   circuit=props.get("metric_circuit"), name=props["metric"],
                   search_metric=props.get("search_metric"), search_full=props.get("search_full"),
                   search_empty=props.get("search_empty"), search_circuit=props.get("search_circuit"))


def circuit_from_record(record: Record) -> Circuit:
    """Rebuild the :class:`Circuit` that was written, from :func:`fetch_circuit`'s record."""
    props = record["circuit"]
    nodes = tuple(Node(**{k: v for k, v in n.items() if k != "order"})
                  for n in _ordered(record["nodes"], "name"))
    edges = tuple(Edge(**{k: v for k, v in e.items() if k != "order"})
                  for e in _ordered(record["edges"], "src"))
    metrics = metrics_from_props(props)
    graph = (GraphShape(props["graph_n_layers"], props["graph_n_heads"], props["graph_mlp"],
                        parallel=bool(props.get("graph_parallel")),  # absent on older circuits
                        kv_groups=props.get("graph_kv_groups"))  # absent: per query head
             if props.get("graph_n_layers") is not None else None)
    return Circuit(id=props["id"], nodes=nodes, edges=edges, metrics=metrics,
                   provenance=Provenance(**json.loads(props["provenance"])), graph=graph,
                   edge_scores=json.loads(props.get("edge_scores") or "{}"),
                   curve=json.loads(props["curve"]) if props.get("curve") else None,
                   stability=json.loads(props["stability"]) if props.get("stability") else None)


def read_circuit(driver: Driver, circuit_id: str, *, database: str) -> Circuit | None:
    """The stored circuit with ``circuit_id``, equal to the one written, or None."""
    record = fetch_circuit(driver, circuit_id, database=database)
    return None if record is None else circuit_from_record(record)


def list_circuits(driver: Driver, *, database: str, model: str | None = None,
                  task: str | None = None, method: str | None = None,
                  min_faithfulness: float | None = None, max_faithfulness: float | None = None,
                  min_faithfulness_search: float | None = None,
                  max_faithfulness_search: float | None = None,
                  ids: list[str] | None = None, sort: str = "created_at", limit: int = 100,
                  offset: int = 0) -> list[CircuitSummary]:
    """Stored circuits matching every filter given (``ids``: only these; ``min/max_faithfulness``
    bound the task-metric faithfulness, ``*_faithfulness_search`` the search-metric one), in the
    order ``sort`` names (:data:`graphstore.queries.LIST_SORTS`; newest first by default), at most
    ``limit`` of them after skipping the first ``offset`` (paging)."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    records, _, _ = driver.execute_query(
        queries.list_circuits(sort), model=model, task=task, method=method,
        min_faithfulness=min_faithfulness, max_faithfulness=max_faithfulness,
        min_search=min_faithfulness_search, max_search=max_faithfulness_search, ids=ids, limit=limit,
        offset=offset,
        database_=database, routing_="r",
    )
    return [CircuitSummary(**record.data()) for record in records]


def ping(driver: Driver, *, database: str) -> bool:
    """True when the database answers a trivial read."""
    records, _, _ = driver.execute_query(queries.PING, database_=database, routing_="r")
    return records[0]["ok"] == 1
