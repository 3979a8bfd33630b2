"""Both faithfulness numbers and the reproduction provenance in Neo4j: stored as Circuit
properties, read back exactly, listed, filtered and sorted by either; circuits stored before the
search metric was kept still list and sort (last)."""

from __future__ import annotations

import dataclasses

import pytest

from discovery.circuit import Metrics
from graphstore.store import list_circuits, read_circuit, write_circuit

from .reference import synthetic

# (task metric circuit value, search circuit value): task order c, a, b; search order b, c, a.
VALUES = {"a": (1.0, 0.2), "b": (0.3, 0.9), "c": (2.5, 0.5)}


def _circuit(name: str, model: str, **provenance):
    base = synthetic(f"{model}/{name}", model, "ioi", share=0.2, seed=len(name),
                     created_at=f"2025-01-0{'abcd'.index(name) + 1}T00:00:00+00:00")
    task, search = VALUES.get(name, (1.0, None))
    metrics = Metrics(full=2.0, empty=0.0, circuit=task, name="logit_diff",
                      search_metric="kl" if search is not None else None,
                      search_full=0.0 if search is not None else None,
                      search_empty=10.0 if search is not None else None,
                      search_circuit=10.0 * (1 - search) if search is not None else None)
    return dataclasses.replace(base, metrics=metrics,
                               provenance=dataclasses.replace(base.provenance, **provenance))


@pytest.fixture
def three(store, db, scratch_model):
    circuits = {n: _circuit(n, scratch_model) for n in VALUES}
    for c in circuits.values():
        write_circuit(store, c, database=db)
    return circuits


def test_both_faithfulness_and_provenance_round_trip(store, db, scratch_model):
    circuit = _circuit("a", scratch_model, search_metric="kl", ablation="corrupt", prepend_bos=True,
                       tokenizer_sha256="t" * 64, edge_order="receivers reverse-topological",
                       edge_order_sha256="e" * 64)
    write_circuit(store, circuit, database=db)
    back = read_circuit(store, circuit.id, database=db)
    assert back == circuit
    assert back.metrics.faithfulness_search == pytest.approx(0.2)
    assert back.provenance.prepend_bos is True and back.provenance.edge_order_sha256 == "e" * 64
    records, _, _ = store.execute_query(
        "MATCH (c:Circuit {id: $id}) RETURN c.faithfulness AS f, c.faithfulness_task AS ft, "
        "c.faithfulness_search AS fs, c.search_metric AS sm, c.metric AS tm", id=circuit.id,
        database_=db)
    row = records[0]
    assert (row["f"], row["ft"], row["tm"], row["sm"]) == (0.5, 0.5, "logit_diff", "kl")
    assert row["fs"] == pytest.approx(0.2)


def test_list_sorts_by_either_faithfulness(store, db, scratch_model, three):
    def order(sort):
        return [s.id.rsplit("/", 1)[1]
                for s in list_circuits(store, database=db, model=scratch_model, sort=sort)]

    assert order("created_at") == ["c", "b", "a"]
    assert order("faithfulness_task") == ["c", "a", "b"]
    assert order("faithfulness_search") == ["b", "c", "a"]
    with pytest.raises(ValueError, match="unknown sort 'faithfulness'"):
        list_circuits(store, database=db, model=scratch_model, sort="faithfulness")


def test_list_filters_by_either_faithfulness(store, db, scratch_model, three):
    def ids(**bounds):
        return {s.id.rsplit("/", 1)[1] for s in list_circuits(store, database=db, model=scratch_model,
                                                              **bounds)}

    assert ids(min_faithfulness=0.4) == {"a", "c"}  # task: 0.5, 0.15, 1.25
    assert ids(min_faithfulness_search=0.4) == {"b", "c"}  # search: 0.2, 0.9, 0.5
    assert ids(max_faithfulness_search=0.6, min_faithfulness=1.0) == {"c"}
    row = next(s for s in list_circuits(store, database=db, model=scratch_model)
               if s.id.endswith("/b"))
    assert (row.faithfulness, row.faithfulness_task, row.metric) == (0.15, 0.15, "logit_diff")
    assert (row.faithfulness_search, row.search_metric) == (pytest.approx(0.9), "kl")


def test_old_circuits_without_search_metric_list_last(store, db, scratch_model, three):
    old = _circuit("d", scratch_model)  # as stored before: no search metric
    write_circuit(store, old, database=db)
    assert read_circuit(store, old.id, database=db).metrics.faithfulness_search is None
    rows = list_circuits(store, database=db, model=scratch_model, sort="faithfulness_search")
    assert rows[-1].id == old.id and rows[-1].faithfulness_search is None
    assert old.id not in {s.id for s in list_circuits(store, database=db, model=scratch_model,
                                                      min_faithfulness_search=-1e9)}


def test_curve_and_stability_round_trip_and_query(store, db, scratch_model):
    """A circuit's faithfulness curve and stability come back as written; their headline numbers
    are properties one Cypher query can rank circuits by."""
    from discovery.curves import Curve, CurvePoint

    points = tuple(CurvePoint(fraction=x, n_edges=n, metric=m, faithfulness=m / 2.0)
                   for x, n, m in ((0.1, 4, 0.6), (0.5, 20, 1.5), (1.0, 40, 2.0)))
    curve = Curve(points=points, metric="logit_diff", full=2.0, empty=0.0)
    base = _circuit("a", scratch_model)
    core = sorted(e.name for e in base.edges[:2])
    stability = {"orders": {"n": 10, "jaccard_mean": 0.8, "jaccard_min": 0.6, "jaccard": [0.8] * 10},
                 "prompts": {"n": 10, "jaccard_mean": 0.7, "jaccard_min": 0.5, "jaccard": [0.7] * 10},
                 "core": core, "core_share": 2 / len(base.edges)}
    circuit = dataclasses.replace(base, curve=curve.to_dict(), stability=stability)
    plain = _circuit("b", scratch_model)
    for c in (circuit, plain):
        write_circuit(store, c, database=db)
    back = read_circuit(store, circuit.id, database=db)
    assert back == circuit and Curve.from_dict(back.curve) == curve
    assert read_circuit(store, plain.id, database=db).curve is None
    records, _, _ = store.execute_query(
        "MATCH (c:Circuit)-[:OF_MODEL]->(:Model {id: $model}) WHERE c.cpr IS NOT NULL "
        "RETURN c.id AS id, c.cpr AS cpr, c.cmd AS cmd, c.stability_orders AS so, "
        "c.stability_prompts AS sp", model=scratch_model, database_=db)
    assert [r["id"] for r in records] == [circuit.id]
    assert records[0]["cpr"] == pytest.approx(curve.cpr) and records[0]["cmd"] == pytest.approx(curve.cmd)
    assert (records[0]["so"], records[0]["sp"]) == (0.8, 0.7)
    # the core is marked on the circuit's own edges (unmarked where no stability was measured)
    records, _, _ = store.execute_query(
        "MATCH (a)-[f:FEEDS]->(b) WHERE f.circuit IN $ids "
        "RETURN f.circuit AS c, a.name + '->' + b.name + CASE WHEN f.input IN ['q', 'k', 'v'] "
        "THEN '<' + f.input + '>' ELSE '' END AS edge, f.core AS core",
        ids=[circuit.id, plain.id], database_=db)
    marks = {(r["c"], r["edge"]): r["core"] for r in records}
    assert {e for (c, e), m in marks.items() if c == circuit.id and m} == set(core)
    assert all(m is False for (c, e), m in marks.items() if c == circuit.id and e not in core)
    assert all(m is None for (c, _), m in marks.items() if c == plain.id)
