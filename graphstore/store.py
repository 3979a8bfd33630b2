"""Write, read, list and delete circuits over a Neo4j driver passed in by the caller.

One circuit is one write transaction: all of it lands or none of it does. Shared nodes (model,
task, circuit, components) are MERGEd on their keys. A write first locks the circuit's node and
clears the memberships and edges an earlier write of the same id left, then creates them anew in
``UNWIND`` batches, and finally prunes components only the earlier version used. So a retried
write (a re-delivered job) leaves exactly one copy, a corrected circuit written under the same id
leaves nothing stale, and edges need no per-edge MERGE (which scans every FEEDS between two
components, a cost that grows with the number of stored circuits).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from neo4j import Driver, ManagedTransaction, Record

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance, mlp_name
from graphstore import queries

#: Rows per ``UNWIND`` statement.
BATCH = 1000

#: Called inside the write transaction after each batch: ``(stage, rows done, rows total)``,
#: stage one of ``components``, ``neurons``, ``edges``. Raising aborts the whole write.
BatchCallback = Callable[[str, int, int], None]


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


def component_uid(model: str, name: str) -> str:
    """The key of a component shared by every circuit of ``model``: ``"<model>/a3.h5"``."""
    return f"{model}/{name}"


def ensure_schema(driver: Driver, *, database: str) -> None:
    """Create constraints and indexes if they do not exist (idempotent)."""
    for statement in queries.SCHEMA:
        driver.execute_query(statement, database_=database)


def _chunks(rows: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _check_score(score: object, where: str) -> None:
    if score is None:
        return
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise ValueError(f"circuit {where}: score {score!r} is not a finite number; use a float or null")


def check_circuit(circuit: Circuit) -> None:
    """Raise ValueError naming the field when ``circuit`` cannot be stored faithfully.

    Node fields must agree with the node's name (they become the shared component's properties
    and its label), edge inputs must suit their receiver, names must not repeat, scores must be
    finite numbers or null."""
    if not circuit.id or not isinstance(circuit.id, str):
        raise ValueError("circuit id: must be a non-empty string")
    for field in ("model", "task", "method"):
        if not getattr(circuit.provenance, field):
            raise ValueError(f"circuit {circuit.id}: provenance.{field} is empty; name the {field}")
    seen: set[str] = set()
    for node in circuit.nodes:
        try:
            parsed = Node.parse(node.name, score=node.score)
        except ValueError as exc:
            raise ValueError(f"circuit {circuit.id}: {exc}") from None
        if parsed != node:
            raise ValueError(
                f"circuit {circuit.id}: node {node.name!r} has kind/layer/head/neuron "
                f"{(node.kind, node.layer, node.head, node.neuron)}, but its name means "
                f"{(parsed.kind, parsed.layer, parsed.head, parsed.neuron)}; fix the node's fields"
            )
        if node.name in seen:
            raise ValueError(f"circuit {circuit.id}: node {node.name!r} is listed twice")
        seen.add(node.name)
        _check_score(node.score, f"{circuit.id}: node {node.name}")
    keys: set[tuple[str, str, str]] = set()
    for edge in circuit.edges:
        try:
            parsed_edge = Edge.parse(edge.name, score=edge.score)
        except ValueError as exc:
            raise ValueError(f"circuit {circuit.id}: edge {edge.src}->{edge.dst} ({edge.input}): {exc}") from None
        if (parsed_edge.src, parsed_edge.dst, parsed_edge.input) != (edge.src, edge.dst, edge.input):
            raise ValueError(f"circuit {circuit.id}: edge {edge.name!r} has input {edge.input!r}, "
                             f"but its receiver takes {parsed_edge.input!r}")
        key = (edge.src, edge.dst, edge.input)
        if key in keys:
            raise ValueError(f"circuit {circuit.id}: edge {edge.name!r} is listed twice")
        keys.add(key)
        _check_score(edge.score, f"{circuit.id}: edge {edge.name}")


def edge_weight(score: float | None) -> float:
    """The weight of an edge in score-weighted overlaps: ``abs(score)``, 1.0 when unscored."""
    return 1.0 if score is None else abs(score)


def _no_nulls(props: dict[str, Any]) -> dict[str, Any]:
    # ``SET n += {k: null}`` would delete k; a missing value must not erase a known one.
    return {k: v for k, v in props.items() if v is not None}


def _circuit_props(circuit: Circuit) -> dict[str, Any]:
    p, m, g = circuit.provenance, circuit.metrics, circuit.graph
    return _no_nulls({
        "id": circuit.id,
        "method": p.method,
        "threshold": p.threshold,
        "metric": m.name,
        "metric_full": m.full,
        "metric_empty": m.empty,
        "metric_circuit": m.circuit,
        "faithfulness": m.faithfulness_task,
        "faithfulness_task": m.faithfulness_task,
        "search_metric": m.search_metric,
        "search_full": m.search_full,
        "search_empty": m.search_empty,
        "search_circuit": m.search_circuit,
        "faithfulness_search": m.faithfulness_search,
        "n_nodes": len(circuit.nodes),
        "n_edges": len(circuit.edges),
        "score_mass": sum(edge_weight(e.score) for e in circuit.edges),
        "created_at": p.created_at,
        "device": p.device,
        "seed": p.seed,
        "model_sha256": p.model_sha256,
        "dataset_hash": p.dataset_hash,
        "graph_n_layers": g.n_layers if g else None,
        "graph_n_heads": g.n_heads if g else None,
        "graph_mlp": g.mlp if g else None,
        "graph_parallel": g.parallel if g else None,
        "graph_kv_groups": g.kv_groups if g else None,  # None: k/v inputs per query head
        "architecture": p.architecture or None,
        "dtype": p.dtype,
        # Maps are not Neo4j property values: they travel as JSON text, keys in their own order.
        "params": json.dumps(p.params),
        "versions": json.dumps(p.versions),
        "provenance": json.dumps(circuit.to_dict()["provenance"]),
        "edge_scores": json.dumps(circuit.edge_scores),
        # the faithfulness curve and stability as JSON, their headline numbers as properties
        # Cypher can filter and sort on
        "curve": json.dumps(circuit.curve) if circuit.curve is not None else None,
        "cpr": (circuit.curve or {}).get("cpr"),
        "cmd": (circuit.curve or {}).get("cmd"),
        "stability": json.dumps(circuit.stability) if circuit.stability is not None else None,
        "stability_orders": (circuit.stability or {}).get("orders", {}).get("jaccard_mean"),
        "stability_prompts": (circuit.stability or {}).get("prompts", {}).get("jaccard_mean"),
    })


def _owner_props(circuit: Circuit) -> tuple[dict[str, Any], dict[str, Any]]:
    p, g = circuit.provenance, circuit.graph
    model = _no_nulls({"id": p.model, "name": p.model, "sha256": p.model_sha256 or None,
                       "n_layers": g.n_layers if g else None, "n_heads": g.n_heads if g else None,
                       "mlp": g.mlp if g else None, "d_mlp": p.params.get("d_mlp")})
    task = _no_nulls({"id": p.task, "name": p.task, "metric": circuit.metrics.name})
    return model, task


def _component_rows(circuit: Circuit) -> dict[str, list[dict[str, Any]]]:
    model = circuit.provenance.model
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in queries.KIND_LABELS}
    for order, n in enumerate(circuit.nodes):
        rows[n.kind].append({"uid": component_uid(model, n.name), "name": n.name, "model": model,
                             "kind": n.kind, "layer": n.layer, "head": n.head, "neuron": n.neuron,
                             "score": n.score, "order": order})
    return rows


def _write_components(tx: ManagedTransaction, circuit: Circuit, batch: int,
                      tick: BatchCallback) -> None:
    """Merge the circuit's components, include them, and link its neurons to their MLPs."""
    model, done = circuit.provenance.model, 0
    for kind, rows in _component_rows(circuit).items():
        for chunk in _chunks(rows, batch):
            tx.run(queries.merge_components(queries.KIND_LABELS[kind]), rows=chunk,
                   circuit_id=circuit.id).consume()
            done += len(chunk)
            tick("components", done, len(circuit.nodes))
    neurons = [
        {"uid": component_uid(model, n.name), "mlp_uid": component_uid(model, mlp_name(n.layer)),
         "mlp_name": mlp_name(n.layer), "model": model, "layer": n.layer}
        for n in circuit.nodes if n.kind == "neuron" and n.layer is not None
    ]
    for start, chunk in enumerate(_chunks(neurons, batch)):
        tx.run(queries.LINK_NEURONS, rows=chunk).consume()
        tick("neurons", min((start + 1) * batch, len(neurons)), len(neurons))


def _write_edges(tx: ManagedTransaction, circuit: Circuit, batch: int, tick: BatchCallback) -> None:
    """Create the circuit's FEEDS; abort when a batch does not write every one of its rows."""
    uids = [component_uid(circuit.provenance.model, n.name) for n in circuit.nodes]
    index = {n.name: i for i, n in enumerate(circuit.nodes)}
    # core: kept under every other edge order and prompt draw (discovery.stability); null unmeasured
    listed = (circuit.stability or {}).get("core")
    core = None if listed is None else set(listed)
    edges = [[index[e.src], index[e.dst], e.input, e.score, order, None if core is None else e.name in core]
             for order, e in enumerate(circuit.edges)]
    done = 0
    for chunk in _chunks(edges, batch):
        written = tx.run(queries.CREATE_EDGES, rows=chunk, uids=uids,
                         circuit_id=circuit.id).single()["written"]
        if written != len(chunk):  # a component did not match: never store a partial circuit
            raise RuntimeError(f"circuit {circuit.id}: wrote {written} of {len(chunk)} edges of a batch")
        done += len(chunk)
        tick("edges", done, len(edges))


def _write_tx(tx: ManagedTransaction, circuit: Circuit, batch: int,
              on_batch: BatchCallback | None) -> None:
    """Everything of one circuit; safe to rerun (the driver retries transient failures)."""
    tick = on_batch or (lambda stage, done, total: None)
    earlier = tx.run(queries.LOCK_CIRCUIT, circuit_id=circuit.id).single()
    tx.run(queries.CLEAR_EDGES, circuit_id=circuit.id).consume()
    model_props, task_props = _owner_props(circuit)
    tx.run(queries.MERGE_CIRCUIT, circuit_id=circuit.id, model=model_props, task=task_props,
           circuit=_circuit_props(circuit)).consume()
    _write_components(tx, circuit, batch, tick)
    _write_edges(tx, circuit, batch, tick)
    _prune(tx, earlier)  # what only the earlier version of this circuit used


def write_circuit(driver: Driver, circuit: Circuit, *, database: str, batch: int = BATCH,
                  on_batch: BatchCallback | None = None) -> str:
    """Store ``circuit`` in one transaction, replacing any earlier write of its id; returns the id.

    Safe to call twice: the second call leaves the store as the first did."""
    check_circuit(circuit)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    with driver.session(database=database) as session:
        session.execute_write(_write_tx, circuit, batch, on_batch)
    return circuit.id


def _prune(tx: ManagedTransaction, record: Record) -> None:
    """Delete the components, models and tasks in ``record`` that no circuit uses any more."""
    for uids in (record["neurons"], record["others"]):
        for chunk in _chunks(uids, BATCH):
            tx.run(queries.PRUNE_COMPONENTS, uids=chunk).consume()
    tx.run(queries.PRUNE_OWNERS, models=record["models"], tasks=record["tasks"]).consume()


def _delete_tx(tx: ManagedTransaction, circuit_id: str) -> bool:
    tx.run(queries.CLEAR_EDGES, circuit_id=circuit_id).consume()
    record = tx.run(queries.DELETE_CIRCUIT, circuit_id=circuit_id).single()
    if record is None:
        return False
    _prune(tx, record)
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
