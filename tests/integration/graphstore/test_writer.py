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
from graphstore.writer import edge_sample

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


def test_edges_across_batches_keep_their_exact_scores_and_order(store, db, scratch_model):
    """Edges travel as parallel lists (one integer for endpoints and input, one float): across
    batch boundaries every FEEDS has its own endpoints, input, exact score and position."""
    base = synthetic(f"{scratch_model}-exact", scratch_model, "t", neurons=2, seed=11)
    odd = (5e-324, -1e-300, 1e300, -0.0, None, 0.1 + 0.2, 1 / 3)
    edges = tuple(Edge(e.src, e.dst, e.input, odd[i % len(odd)] if i % 3 == 0 else e.score)
                  for i, e in enumerate(base.edges))
    circuit = dataclasses.replace(base, edges=edges)
    write_circuit(store, circuit, database=db, batch=7)
    assert read_circuit(store, circuit.id, database=db) == circuit
    records, _, _ = store.execute_query(
        "MATCH (a)-[f:FEEDS {circuit: $id}]->(b) RETURN f.order AS order, a.name AS src, "
        "b.name AS dst, f.input AS input, f.score AS score ORDER BY order", id=circuit.id, database_=db)
    assert [r["order"] for r in records] == list(range(len(edges)))
    assert [(r["src"], r["dst"], r["input"], r["score"]) for r in records] == [
        (e.src, e.dst, e.input, e.score) for e in edges]
    assert [math.copysign(1, r["score"]) for r in records if r["score"] is not None] == [
        math.copysign(1, e.score) for e in edges if e.score is not None]  # -0.0 stays negative


def test_rewriting_with_fewer_edges_keeps_only_the_new_version(store, db, scratch_model):
    """A rewrite with a third of the edges, another task and a neuron of an MLP it does not
    include: the old edges, neurons and task go, the neuron's MLP stays, and a second write of
    the new version changes nothing."""
    tasks = [f"{which}-{uuid.uuid4().hex}" for which in ("old", "new")]  # tasks are not per model
    old = synthetic(f"{scratch_model}-a", scratch_model, tasks[0], neurons=3, seed=1)
    kept = tuple(e for e in old.edges[: len(old.edges) // 3] if "m1" not in (e.src, e.dst))
    used = {e.src for e in kept} | {e.dst for e in kept}
    new = dataclasses.replace(old, edges=kept, provenance=dataclasses.replace(old.provenance, task=tasks[1]),
                              nodes=tuple(n for n in old.nodes if n.name in used) + (Node.parse("m1.n99"),))
    write_circuit(store, old, database=db)
    write_circuit(store, new, database=db)
    assert read_circuit(store, new.id, database=db) == new
    state = snapshot(store, db, scratch_model)
    assert (state["feeds"], state["includes"], state["ins"]) == (len(kept), len(new.nodes), 1)
    assert state["components"] == sorted(used | {"m1", "m1.n99"})
    records, _, _ = store.execute_query("MATCH (t:Task) WHERE t.id IN $tasks RETURN t.id AS id",
                                        tasks=tasks, database_=db)
    assert [r["id"] for r in records] == [tasks[1]]
    write_circuit(store, new, database=db)
    assert snapshot(store, db, scratch_model) == state


def _feeds(driver, db: str, circuit_id: str) -> dict[int, tuple]:
    """The circuit's FEEDS by order: (element id, source, receiver, input, score, core)."""
    records, _, _ = driver.execute_query(
        "MATCH (a)-[f:FEEDS {circuit: $id}]->(b) RETURN f.order AS order, elementId(f) AS id, "
        "a.name AS src, b.name AS dst, f.input AS input, f.score AS score, f.core AS core",
        id=circuit_id, database_=db)
    assert len({r["order"] for r in records}) == len(records)  # one FEEDS per order
    return {r["order"]: (r["id"], r["src"], r["dst"], r["input"], r["score"], r["core"]) for r in records}


def test_rewrites_update_the_earlier_edges_in_place(store, db, scratch_model):
    """A rewrite whose edges match the earlier write's at the sampled positions keeps each
    earlier FEEDS at the same order, endpoints and input (with the new score and core), replaces
    the others and drops the surplus; one that does not match is written afresh. Every version
    reads back exactly, with ``core`` only where stability was measured."""
    base = synthetic(f"{scratch_model}-inplace", scratch_model, "t", neurons=2, seed=21)
    e = base.edges
    sampled = {row[0] for row in edge_sample(base)}
    i = next(i for i in range(len(e) - 1) if not {i, i + 1} & sampled)
    rescored = dataclasses.replace(
        base, edges=tuple(dataclasses.replace(x, score=None if j % 4 == 0 else -x.score)
                          for j, x in enumerate(e)),
        stability={"orders": {"n": 2, "jaccard_mean": 0.5}, "core": [x.name for x in e[::3]]})
    swapped = dataclasses.replace(base, edges=e[:i] + (e[i + 1], e[i]) + e[i + 2:])
    versions = [(base, None), (base, set()), (rescored, set()), (swapped, {i, i + 1}),
                (base, {i, i + 1}), (dataclasses.replace(base, edges=e[: len(e) // 2]), set()),
                (dataclasses.replace(base, edges=e[::-1]), None), (dataclasses.replace(base, edges=()), set()),
                (base, None)]
    before: dict[int, tuple] = {}
    for version, replaced in versions:
        write_circuit(store, version, database=db, batch=16)
        assert read_circuit(store, version.id, database=db) == version
        after = _feeds(store, db, version.id)
        core = set((version.stability or {}).get("core", ()))
        assert [after[o][1:] for o in range(len(after))] == [
            (x.src, x.dst, x.input, x.score, (x.name in core) if version.stability else None)
            for x in version.edges]
        if replaced is not None:  # None: no claim (first write, or a mismatch cleared them)
            assert {o for o in after if after[o][0] != before[o][0]} == replaced
        before = after


@pytest.mark.parametrize("tamper", [  # a repeated order, a missing one, a gap
    "MATCH ()-[f:FEEDS {circuit: $id, order: 0}]->() SET f.order = 1",
    "MATCH ()-[f:FEEDS {circuit: $id, order: 0}]->() SET f.order = null",
    "MATCH ()-[f:FEEDS {circuit: $id, order: 0}]->() SET f.order = 10000",
])
def test_rewrite_over_irregular_edge_orders_clears_them(store, db, scratch_model, tamper):
    """Earlier edges whose orders are not exactly 0..n-1 (not written by this writer) are
    cleared rather than updated in place: the rewrite still leaves exactly the circuit."""
    circuit = synthetic(f"{scratch_model}-odd-orders", scratch_model, "t", seed=22)
    write_circuit(store, circuit, database=db)
    store.execute_query(tamper, id=circuit.id, database_=db)
    write_circuit(store, circuit, database=db)
    assert read_circuit(store, circuit.id, database=db) == circuit
    assert sorted(_feeds(store, db, circuit.id)) == list(range(len(circuit.edges)))


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
    # the same faults after valid edges into the same receivers (edges are parsed once per
    # receiver and input: these must still be caught)
    (lambda c: dataclasses.replace(c, edges=c.edges + (Edge("a0.h0", "m1", "q"),)), "receiver takes"),
    (lambda c: dataclasses.replace(c, edges=c.edges + (Edge("embed", "a1.h0", "mlp"),)),
     "needs input q, k or v"),
    (lambda c: dataclasses.replace(c, edges=c.edges + (c.edges[-1],)), "listed twice"),
    (lambda c: dataclasses.replace(c, edges=c.edges[:-1] + (dataclasses.replace(c.edges[-1], score=math.inf),)),
     "not a finite number"),
    (lambda c: dataclasses.replace(c, edges=c.edges[:-1] + (dataclasses.replace(c.edges[-1], score=True),)),
     "not a finite number"),
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
