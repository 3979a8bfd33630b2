"""The circuit writer against the real Neo4j: exact round trips (as Circuit and as networkx),
idempotent and atomic writes, replacement, deletion that keeps shared components, clear refusals
of bad circuits, and names that cannot inject Cypher."""

from __future__ import annotations

import dataclasses
import math
import threading
import uuid

import networkx as nx
import pytest

from discovery.circuit import Circuit, Edge, Metrics, Node, Provenance
from discovery.export import to_networkx
from graphstore.nxgraph import circuit_graph
from graphstore.store import component_uid, delete_circuit, list_circuits, read_circuit, write_circuit

from .conftest import leftovers, purge_model
from .reference import synthetic

_OF_MODEL = "MATCH (c:Circuit)-[:OF_MODEL]->(:Model {id: $model}) "
SNAPSHOT = {
    "nodes": "MATCH (n:Component {model: $model}) RETURN elementId(n) AS x UNION "
             + _OF_MODEL + "MATCH (c)-[:FOR_TASK]->(t) UNWIND [c, t] AS n RETURN elementId(n) AS x "
             "UNION MATCH (m:Model {id: $model}) RETURN elementId(m) AS x",
    "components": "MATCH (n:Component {model: $model}) RETURN n.name AS x",
    "includes": _OF_MODEL + "MATCH (c)-[r:INCLUDES]->() RETURN count(r) AS x",
    "feeds": _OF_MODEL + "MATCH ()-[f:FEEDS {circuit: c.id}]->() RETURN count(f) AS x",
    "owners": _OF_MODEL + "MATCH (c)-[r:OF_MODEL|FOR_TASK]->() RETURN count(r) AS x",
    "ins": "MATCH (:Neuron {model: $model})-[r:IN]->() RETURN count(r) AS x",
}


def snapshot(driver, db: str, model: str) -> dict[str, object]:
    """Everything of ``model`` in the store: node ids and names, counts of each relationship."""
    out: dict[str, object] = {}
    for key, query in SNAPSHOT.items():
        records, _, _ = driver.execute_query(query, model=model, database_=db)
        values = [r["x"] for r in records]
        out[key] = sorted(values) if key in ("nodes", "components") else values[0]
    return out


def test_real_circuits_round_trip_exactly(real_circuits, store, db):
    for circuit in real_circuits.values():
        assert any(n.kind == "neuron" for n in circuit.nodes)  # the IN links are exercised
        assert read_circuit(store, circuit.id, database=db) == circuit
        g = circuit_graph(store, circuit.id, database=db)
        expected = to_networkx(circuit)
        assert nx.utils.graphs_equal(g, expected)
        assert sorted(g.edges(keys=True, data=True), key=str) == sorted(
            expected.edges(keys=True, data=True), key=str)
    assert read_circuit(store, "no-such-circuit", database=db) is None
    assert circuit_graph(store, "no-such-circuit", database=db) is None


def test_unusual_circuits_round_trip_exactly(store, db, scratch_model):
    base = synthetic(f"{scratch_model}-odd", scratch_model, "odd", neurons=2, seed=3)
    odd = [
        # unscored nodes and edges, no graph shape, no edge scores, neurons without their MLP
        dataclasses.replace(
            base, graph=None, edge_scores={},
            nodes=tuple(Node(n.name, n.kind, n.layer, n.head, n.neuron, None) for n in base.nodes
                        if n.name != "m1") + (Node.parse("m1.n999", 1e-300),),
            edges=tuple(Edge(e.src, e.dst, e.input, None if i % 2 else -e.score)
                        for i, e in enumerate(base.edges) if "m1" not in (e.src, e.dst))),
        # a parallel-block (GPT-NeoX) graph shape and an architecture in the provenance
        dataclasses.replace(base, id=f"{scratch_model}-parallel",
                            graph=dataclasses.replace(base.graph, parallel=True),
                            provenance=dataclasses.replace(base.provenance, architecture="GPTNeoXForCausalLM")),
        # a circuit of two nodes and one edge, metrics whose faithfulness is undefined
        Circuit(id=f"{scratch_model}-tiny", nodes=(Node.parse("embed"), Node.parse("logits")),
                edges=(Edge.parse("embed->logits", 0.0),),
                metrics=Metrics(full=1.0, empty=1.0, circuit=1.0),
                provenance=Provenance(model=scratch_model, task="tiny", method="hand")),
    ]
    for circuit in odd:
        write_circuit(store, circuit, database=db)
        assert read_circuit(store, circuit.id, database=db) == circuit
        assert nx.utils.graphs_equal(circuit_graph(store, circuit.id, database=db), to_networkx(circuit))


def test_rewriting_creates_nothing_new(store, db, scratch_model):
    circuit = synthetic(f"{scratch_model}-a", scratch_model, "t", neurons=3, share=0.5)
    write_circuit(store, circuit, database=db)
    before = snapshot(store, db, scratch_model)
    write_circuit(store, circuit, database=db)  # a re-delivered job
    after = snapshot(store, db, scratch_model)
    assert before == after
    assert (after["feeds"], after["includes"]) == (len(circuit.edges), len(circuit.nodes))
    assert read_circuit(store, circuit.id, database=db) == circuit


def test_rewriting_a_changed_circuit_replaces_it(store, db, scratch_model):
    old = synthetic(f"{scratch_model}-a", scratch_model, "old-task", neurons=3, share=0.6, seed=1)
    new = dataclasses.replace(synthetic(old.id, scratch_model, "new-task", share=0.2, seed=2))
    write_circuit(store, old, database=db)
    write_circuit(store, new, database=db)
    assert read_circuit(store, new.id, database=db) == new
    state = snapshot(store, db, scratch_model)
    assert (state["feeds"], state["includes"], state["ins"]) == (len(new.edges), len(new.nodes), 0)
    assert len(state["components"]) == len(new.nodes)  # what only the old version used is gone


def test_failure_mid_write_leaves_nothing(store, db, scratch_model):
    circuit = synthetic(f"{scratch_model}-fail", scratch_model, f"task-{uuid.uuid4().hex}",
                        neurons=4, seed=5)
    seen, outside = [], []

    def fail_after_two_edge_batches(stage: str, done: int, total: int) -> None:
        seen.append((stage, done))
        if stage == "edges" and done >= 100:
            # from another session, mid-write: nothing of the circuit is visible yet
            outside.append((read_circuit(store, circuit.id, database=db),
                            leftovers(store, db, scratch_model)))
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected failure"):
        write_circuit(store, circuit, database=db, batch=50, on_batch=fail_after_two_edge_batches)
    assert ("edges", 100) in seen and ("components", len(circuit.nodes)) in seen  # it got far
    assert outside == [(None, 0)]
    assert read_circuit(store, circuit.id, database=db) is None
    assert leftovers(store, db, scratch_model) == 0
    records, _, _ = store.execute_query(
        "OPTIONAL MATCH ()-[f:FEEDS {circuit: $id}]->() WITH count(f) AS feeds "
        "OPTIONAL MATCH (t:Task {id: $task}) RETURN feeds, count(t) AS tasks",
        id=circuit.id, task=circuit.provenance.task, database_=db)
    assert (records[0]["feeds"], records[0]["tasks"]) == (0, 0)


def test_failed_rewrite_keeps_the_previous_version(store, db, scratch_model):
    old = synthetic(f"{scratch_model}-a", scratch_model, "t", neurons=2, seed=1)
    write_circuit(store, old, database=db)
    before = snapshot(store, db, scratch_model)
    new = synthetic(old.id, scratch_model, "t", seed=9, share=0.3)

    def fail(stage: str, done: int, total: int) -> None:
        if stage == "edges":
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError):
        write_circuit(store, new, database=db, batch=10, on_batch=fail)
    assert read_circuit(store, old.id, database=db) == old
    assert snapshot(store, db, scratch_model) == before


def test_concurrent_writes_of_one_circuit_leave_one_copy(store, db, scratch_model):
    circuit = synthetic(f"{scratch_model}-race", scratch_model, "t", neurons=2, share=0.7)
    errors = []

    def write() -> None:
        try:
            write_circuit(store, circuit, database=db, batch=100)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    state = snapshot(store, db, scratch_model)
    assert (state["feeds"], state["includes"]) == (len(circuit.edges), len(circuit.nodes))
    assert read_circuit(store, circuit.id, database=db) == circuit


def test_delete_keeps_what_other_circuits_use(store, db, scratch_model):
    a = synthetic(f"{scratch_model}-a", scratch_model, "ta", neurons=3, share=0.5, seed=1)
    b = synthetic(f"{scratch_model}-b", scratch_model, "tb", neurons=3, share=0.5, seed=2)
    # b also uses a neuron of an MLP it does not include: the MLP must stay for it
    extra = Node.parse("m3.n999")
    b = dataclasses.replace(b, nodes=tuple(n for n in b.nodes if n.name != "m3" and not
                                           n.name.startswith("m3.")) + (extra,),
                            edges=tuple(e for e in b.edges if "m3" not in (e.src, e.dst)))
    write_circuit(store, a, database=db)
    write_circuit(store, b, database=db)
    assert delete_circuit(store, a.id, database=db) is True
    assert read_circuit(store, a.id, database=db) is None
    assert read_circuit(store, b.id, database=db) == b
    names = snapshot(store, db, scratch_model)["components"]
    assert names == sorted({n.name for n in b.nodes} | {"m3"})  # a's own went, m3 stays for b
    assert delete_circuit(store, b.id, database=db) is True
    assert leftovers(store, db, scratch_model) == 0
    assert delete_circuit(store, b.id, database=db) is False


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: dataclasses.replace(c, nodes=c.nodes + (Node("a0.h0", "mlp", 0),)), "name means"),
    (lambda c: dataclasses.replace(c, nodes=c.nodes + (c.nodes[0],)), "listed twice"),
    (lambda c: dataclasses.replace(c, edges=c.edges + (c.edges[0],)), "listed twice"),
    (lambda c: dataclasses.replace(c, edges=(Edge(c.edges[0].src, c.edges[0].dst, c.edges[0].input,
                                                  math.nan),) + c.edges[1:]), "not a finite number"),
    (lambda c: dataclasses.replace(c, edges=(Edge("embed", "a1.h0", "mlp"),) + c.edges),
     "needs input q, k or v"),
    (lambda c: dataclasses.replace(c, edges=(Edge("a0.h0", "m1", "q"),) + c.edges), "receiver takes"),
    (lambda c: dataclasses.replace(c, provenance=dataclasses.replace(c.provenance, task="")),
     "provenance.task is empty"),
])
def test_bad_circuits_are_refused_before_anything_is_written(store, db, scratch_model, change, message):
    good = synthetic(f"{scratch_model}-bad", scratch_model, "t", seed=4)
    with pytest.raises(ValueError, match=message):
        write_circuit(store, change(good), database=db)
    assert leftovers(store, db, scratch_model) == 0


def test_names_cannot_inject_cypher(store, db, scratch_model):
    canary = f"canary-{uuid.uuid4()}"
    store.execute_query("CREATE (:Probe {key: $key})", key=canary, database_=db)
    evil = "x'}) MATCH (n) DETACH DELETE n //\"}) MATCH (n) DETACH DELETE n //"
    model = f"{scratch_model}{evil}"
    circuit = synthetic(f"id{evil}", model, f"task{evil}", neurons=2)
    try:
        write_circuit(store, circuit, database=db)
        assert read_circuit(store, circuit.id, database=db) == circuit
        assert [s.id for s in list_circuits(store, database=db, model=model)] == [circuit.id]
        records, _, _ = store.execute_query(
            "MATCH (p:Probe {key: $key}) WITH count(p) AS probes "
            "MATCH (n:Component {uid: $uid}) RETURN probes, n.model AS model",
            key=canary, uid=component_uid(model, "embed"), database_=db)
        assert (records[0]["probes"], records[0]["model"]) == (1, model)
    finally:
        purge_model(store, db, model)
        store.execute_query("MATCH (p:Probe {key: $key}) DELETE p", key=canary, database_=db)
    assert leftovers(store, db, model) == 0
