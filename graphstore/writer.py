"""Write one circuit in one transaction (``graphstore/SCHEMA.md``, "Writing and deleting").

One circuit is one write transaction: all of it lands or none of it does. Shared nodes (model,
task, circuit, components) are MERGEd on their keys. A write first locks the circuit's node and
clears the memberships an earlier write of the same id left, then writes them anew in ``UNWIND``
batches; the earlier write's edges are updated in place when they look like the new version's
(the same edges at :data:`SAMPLE` positions; each edge that differs is replaced), and cleared
first otherwise; finally it prunes components only the earlier version used. So a retried
write (a re-delivered job) leaves exactly one copy, a corrected circuit written under the same id
leaves nothing stale, and edges need no per-edge MERGE (which scans every FEEDS between two
components, a cost that grows with the number of stored circuits).

Where the time of a large write goes (GPT-2 small's 32,491 edges, ``bench/graphstore.py``): the
driver packs parameters in pure Python at about 1.7 us per value, and the server commits every
FEEDS created or deleted with its properties (about 0.3 s for 32k created, a second for 32k
deleted and recreated). So edges travel as few values as possible (one integer for the endpoints
and input, one float for the score; ``order`` is the position in the list) in few, large
statements, an unchanged rewrite touches no relationship, and the Python-side checks skip
per-edge work that a cache answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from neo4j import Driver, ManagedTransaction, Record

from discovery.circuit import EDGE_INPUTS, Circuit, Edge, Node, mlp_name
from graphstore import queries

#: Rows per ``UNWIND`` statement of pruning (and of experiments, which import it via the store).
BATCH = 1000

#: Rows per ``UNWIND`` statement of a circuit write (components and edges). Each statement costs
#: a round trip and a re-match of the circuit's components, so GPT-2 small's 32k edges go in one.
WRITE_BATCH = 50_000

#: Edges of a rewrite compared with the earlier write's at the same positions: all the same, and
#: the earlier FEEDS are updated in place (an unchanged rewrite then writes almost nothing).
SAMPLE = 32

#: Called inside the write transaction after each batch: ``(stage, rows done, rows total)``,
#: stage one of ``components``, ``neurons``, ``edges``. Raising aborts the whole write.
BatchCallback = Callable[[str, int, int], None]


def component_uid(model: str, name: str) -> str:
    """The key of a component shared by every circuit of ``model``: ``"<model>/a3.h5"``."""
    return f"{model}/{name}"


def edge_weight(score: float | None) -> float:
    """The weight of an edge in score-weighted overlaps: ``abs(score)``, 1.0 when unscored."""
    return 1.0 if score is None else abs(score)


def chunks(rows: list[Any], size: int) -> Iterator[list[Any]]:
    """``rows`` in consecutive slices of at most ``size``."""
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _finite_or_null(score: object) -> bool:
    return score is None or (not isinstance(score, bool) and isinstance(score, int | float)
                             and math.isfinite(score))


def _check_score(score: object, where: str) -> None:
    if not _finite_or_null(score):
        raise ValueError(f"circuit {where}: score {score!r} is not a finite number; use a float or null")


def _check_nodes(circuit: Circuit) -> None:
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


def _check_edge_name(circuit: Circuit, edge: Edge) -> None:
    try:
        parsed = Edge.parse(edge.name, score=edge.score)
    except ValueError as exc:
        raise ValueError(f"circuit {circuit.id}: edge {edge.src}->{edge.dst} ({edge.input}): {exc}") from None
    if (parsed.src, parsed.dst, parsed.input) != (edge.src, edge.dst, edge.input):
        raise ValueError(f"circuit {circuit.id}: edge {edge.name!r} has input {edge.input!r}, "
                         f"but its receiver takes {parsed.input!r}")


def _check_edges(circuit: Circuit) -> None:
    names = {n.name for n in circuit.nodes}  # each already checked by _check_nodes
    # Whether an edge parses depends only on its receiver and input once its source is a checked
    # node name (node names hold no '-', '<' or '>'): parse one edge per (receiver, input), not
    # all 32k of a large circuit (that was a third of a second).
    suited: set[tuple[str, str]] = set()
    keys: set[tuple[str, str, str]] = set()
    for edge in circuit.edges:
        if edge.src not in names or (edge.dst, edge.input) not in suited:
            _check_edge_name(circuit, edge)
            suited.add((edge.dst, edge.input))
        key = (edge.src, edge.dst, edge.input)
        if key in keys:
            raise ValueError(f"circuit {circuit.id}: edge {edge.name!r} is listed twice")
        keys.add(key)
        if not _finite_or_null(edge.score):  # the message only on failure: names cost time
            _check_score(edge.score, f"{circuit.id}: edge {edge.name}")


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
    _check_nodes(circuit)
    _check_edges(circuit)


def _no_nulls(props: dict[str, Any]) -> dict[str, Any]:
    # ``SET n += {k: null}`` would delete k; a missing value must not erase a known one.
    return {k: v for k, v in props.items() if v is not None}


def circuit_props(circuit: Circuit) -> dict[str, Any]:
    """The Circuit node's properties (``SCHEMA.md``, Nodes), None values left out."""
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
        # what circuit.to_dict()["provenance"] holds, without converting 32k edges to get it
        "provenance": json.dumps(asdict(p)),
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
        for chunk in chunks(rows, batch):
            tx.run(queries.merge_components(queries.KIND_LABELS[kind]), rows=chunk,
                   circuit_id=circuit.id).consume()
            done += len(chunk)
            tick("components", done, len(circuit.nodes))
    neurons = [
        {"uid": component_uid(model, n.name), "mlp_uid": component_uid(model, mlp_name(n.layer)),
         "mlp_name": mlp_name(n.layer), "model": model, "layer": n.layer}
        for n in circuit.nodes if n.kind == "neuron" and n.layer is not None
    ]
    for start, chunk in enumerate(chunks(neurons, batch)):
        tx.run(queries.LINK_NEURONS, rows=chunk).consume()
        tick("neurons", min((start + 1) * batch, len(neurons)), len(neurons))


def edge_keys(circuit: Circuit) -> list[int]:
    """One integer per edge, ``(source index * n_nodes + receiver index) * 5 + input index``
    (indices into ``circuit.nodes`` and :data:`EDGE_INPUTS`): what ``CREATE_EDGES`` decodes.
    One value instead of three, as the driver's packer pays per value."""
    index = {n.name: i for i, n in enumerate(circuit.nodes)}
    code = {name: i for i, name in enumerate(EDGE_INPUTS)}
    n, k = len(circuit.nodes), len(EDGE_INPUTS)
    return [(index[e.src] * n + index[e.dst]) * k + code[e.input] for e in circuit.edges]


def _core_flags(circuit: Circuit) -> list[bool] | None:
    """Per edge: kept under every other edge order and prompt draw (``discovery.stability``);
    None when unmeasured (then no edge gets a ``core`` property)."""
    listed = (circuit.stability or {}).get("core")
    if listed is None:
        return None
    in_core = set(listed)
    return [e.name in in_core for e in circuit.edges]


def edge_sample(circuit: Circuit) -> list[list[Any]]:
    """``[order, source uid, receiver uid, input]`` of :data:`SAMPLE` evenly spaced edges."""
    n, model = len(circuit.edges), circuit.provenance.model
    positions = sorted({j * (n - 1) // (SAMPLE - 1) for j in range(SAMPLE)}) if n else []
    return [[p, component_uid(model, circuit.edges[p].src), component_uid(model, circuit.edges[p].dst),
             circuit.edges[p].input] for p in positions]


def _clear_or_reuse(tx: ManagedTransaction, circuit: Circuit) -> bool:
    """Prepare for this write's edges; True when the earlier write's FEEDS are updated in place
    (``UPDATE_EDGES``: orders exactly 0..n-1, as every write leaves them, and the same edges at
    the sampled positions), False when there are none or they have been cleared."""
    sample = edge_sample(circuit)
    layout = tx.run(queries.EDGE_LAYOUT, circuit_id=circuit.id, sample=sample,
                    positions=[row[0] for row in sample]).single()
    n = layout["n"]
    regular = layout["orders"] == n and layout["low"] == 0 and layout["high"] == n - 1
    if n and regular and layout["same"] == len(sample):
        return True
    if n:
        tx.run(queries.CLEAR_EDGES, circuit_id=circuit.id).consume()
    return False


def _write_edges(tx: ManagedTransaction, circuit: Circuit, batch: int, tick: BatchCallback,
                 reuse: bool) -> None:
    """Write the circuit's FEEDS (over the earlier write's when ``reuse``); abort when a batch
    does not write every one of its rows."""
    uids = [component_uid(circuit.provenance.model, n.name) for n in circuit.nodes]
    keys, scores, core = edge_keys(circuit), [e.score for e in circuit.edges], _core_flags(circuit)
    statement = queries.UPDATE_EDGES if reuse else queries.CREATE_EDGES
    for start in range(0, len(keys), batch):
        end = min(start + batch, len(keys))
        written = tx.run(statement, uids=uids, inputs=list(EDGE_INPUTS), keys=keys[start:end],
                         scores=scores[start:end], core=None if core is None else core[start:end],
                         offset=start, circuit_id=circuit.id).single()["written"]
        if written != end - start:  # a component did not match: never store a partial circuit
            raise RuntimeError(f"circuit {circuit.id}: wrote {written} of {end - start} edges of a batch")
        tick("edges", end, len(keys))
    if reuse:  # the earlier write's edges past the new last one
        tx.run(queries.DROP_EDGES_FROM, circuit_id=circuit.id, n=len(keys)).consume()


def write_tx(tx: ManagedTransaction, circuit: Circuit, batch: int = WRITE_BATCH,
             on_batch: BatchCallback | None = None) -> None:
    """Everything of one circuit inside ``tx``; safe to rerun (the driver retries transient
    failures). :func:`write_circuit` runs it, and ``graphstore.timelines`` inside its own
    transaction."""
    tick = on_batch or (lambda stage, done, total: None)
    earlier = tx.run(queries.LOCK_CIRCUIT, circuit_id=circuit.id).single()
    reuse = _clear_or_reuse(tx, circuit)
    model_props, task_props = _owner_props(circuit)
    tx.run(queries.MERGE_CIRCUIT, circuit_id=circuit.id, model=model_props, task=task_props,
           circuit=circuit_props(circuit)).consume()
    _write_components(tx, circuit, batch, tick)
    _write_edges(tx, circuit, batch, tick, reuse)
    prune(tx, earlier, keep=circuit)  # what only the earlier version of this circuit used


def write_circuit(driver: Driver, circuit: Circuit, *, database: str, batch: int = WRITE_BATCH,
                  on_batch: BatchCallback | None = None) -> str:
    """Store ``circuit`` in one transaction, replacing any earlier write of its id; returns the id.
    ``batch``: rows per ``UNWIND`` statement.

    Safe to call twice: the second call leaves the store as the first did."""
    check_circuit(circuit)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    with driver.session(database=database) as session:
        session.execute_write(write_tx, circuit, batch, on_batch)
    return circuit.id


def _kept_by(circuit: Circuit) -> tuple[set[str], str | None, str | None]:
    """Component uids, model and task that ``circuit`` itself holds on to once written: its
    components and the MLPs its neurons sit in (``IN``)."""
    model = circuit.provenance.model
    uids = {component_uid(model, n.name) for n in circuit.nodes}
    uids |= {component_uid(model, mlp_name(n.layer)) for n in circuit.nodes
             if n.kind == "neuron" and n.layer is not None}
    return uids, model, circuit.provenance.task


def prune(tx: ManagedTransaction, record: Record, keep: Circuit | None = None) -> None:
    """Delete the components, models and tasks in ``record`` that no circuit uses any more.

    ``keep``: the circuit just written in ``tx``; what it holds on to cannot be pruned, so it is
    not even looked at (a rewrite of the same circuit then prunes nothing, in no statement)."""
    kept, model, task = _kept_by(keep) if keep is not None else (set(), None, None)
    for key in ("neurons", "others"):  # neurons first: an MLP stays while a neuron of it remains
        uids = [uid for uid in record[key] if uid not in kept]
        for chunk in chunks(uids, BATCH):
            tx.run(queries.PRUNE_COMPONENTS, uids=chunk).consume()
    models = [m for m in record["models"] if m != model]
    tasks = [t for t in record["tasks"] if t != task]
    if models or tasks:
        tx.run(queries.PRUNE_OWNERS, models=models, tasks=tasks).consume()
