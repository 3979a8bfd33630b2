"""Overlap computed in Cypher equals the same computation done in networkx on the source
circuits: Jaccard of components and edges, score-weighted overlap, what is unique to each, per
layer, the task x task matrix, shared components and hubs."""

from __future__ import annotations

import dataclasses

import pytest

from graphstore.overlap import compare, hubs, jaccard, overlap_matrix, shared_components
from graphstore.store import write_circuit

from . import reference
from .reference import synthetic

SETS = [("ioi", "induction"), ("ioi", "induction", "greater_than"),
        ("ioi", "induction", "greater_than", "successor", "pronoun")]


@pytest.mark.parametrize("tasks", SETS, ids=["-".join(t) for t in SETS])
def test_compare_equals_networkx(real_circuits, store, db, tasks):
    circuits = [real_circuits[t] for t in tasks]
    got = compare(store, [c.id for c in circuits], database=db)
    ref = reference.overlap(circuits)
    assert got.circuits == tuple(c.id for c in circuits)
    assert got.model == circuits[0].provenance.model
    assert (got.nodes_union, got.nodes_shared) == (ref.nodes_union, ref.nodes_shared)
    assert (got.edges_union, got.edges_shared) == (ref.edges_union, ref.edges_shared)
    assert got.node_jaccard == pytest.approx(ref.nodes_shared / ref.nodes_union)
    assert got.edge_jaccard == pytest.approx(ref.edges_shared / ref.edges_union)
    assert got.weighted == pytest.approx(ref.weighted, rel=1e-9, abs=1e-12)
    assert {k: set(v) for k, v in got.unique_nodes.items()} == ref.unique_nodes
    assert got.unique_edges == ref.unique_edges
    assert {x.layer: (x.union, x.shared, x.present, x.unique) for x in got.layers} == ref.layers
    assert ref.nodes_shared > 0 and ref.nodes_shared < ref.nodes_union  # a real, partial overlap


def test_weighted_overlap_ignores_the_scale_of_scores(store, db, scratch_model):
    a = synthetic(f"{scratch_model}-a", scratch_model, "t", seed=1, share=0.5)
    scaled = dataclasses.replace(a, id=f"{scratch_model}-scaled", edges=tuple(
        dataclasses.replace(e, score=10 * e.score) for e in a.edges))
    shuffled = dataclasses.replace(a, id=f"{scratch_model}-shuffled", edges=tuple(
        dataclasses.replace(e, score=f.score) for e, f in zip(a.edges, reversed(a.edges), strict=True)))
    for c in (a, scaled, shuffled):
        write_circuit(store, c, database=db)
    same = compare(store, [a.id, scaled.id], database=db)
    assert (same.node_jaccard, same.edge_jaccard) == (1.0, 1.0)
    assert same.weighted == pytest.approx(1.0)
    moved = compare(store, [a.id, shuffled.id], database=db)
    assert moved.edge_jaccard == 1.0 and 0 < moved.weighted < 1
    assert moved.weighted == pytest.approx(reference.overlap([a, shuffled]).weighted)


def test_shared_components_equal_the_intersection(real_circuits, store, db):
    circuits = [real_circuits[t] for t in ("ioi", "induction", "pronoun")]
    got = shared_components(store, [c.id for c in circuits], database=db)
    expected = set.intersection(*(reference.node_set(c) for c in circuits))
    assert {s.name for s in got} == expected and expected
    scores = [{n.name: n.score for n in c.nodes} for c in circuits]
    for s in got:
        assert s.scores == tuple(sc[s.name] for sc in scores)


def test_overlap_matrix_equals_networkx(real_circuits, store, db):
    model = real_circuits["ioi"].provenance.model
    matrix = overlap_matrix(store, model, database=db)
    assert matrix.tasks == tuple(sorted(real_circuits))
    for i, a in enumerate(matrix.tasks):
        assert matrix.circuits[i] == real_circuits[a].id
        for j, b in enumerate(matrix.tasks):
            ca, cb = real_circuits[a], real_circuits[b]
            na, nb = reference.node_set(ca), reference.node_set(cb)
            ea, eb = reference.edge_set(ca), reference.edge_set(cb)
            wa, wb = reference.weights(ca), reference.weights(cb)
            assert matrix.nodes[i][j] == pytest.approx(len(na & nb) / len(na | nb))
            assert matrix.edges[i][j] == pytest.approx(len(ea & eb) / len(ea | eb))
            assert matrix.weighted[i][j] == pytest.approx(sum(min(wa[e], wb[e]) for e in ea & eb))
    assert matrix.nodes == tuple(zip(*matrix.nodes, strict=True))  # symmetric


def test_overlap_matrix_takes_the_newest_circuit_of_each_task(store, db, scratch_model):
    old = synthetic(f"{scratch_model}-old", scratch_model, "t1", seed=1, created_at="2025-01-01")
    new = synthetic(f"{scratch_model}-new", scratch_model, "t1", seed=2, created_at="2025-06-01")
    other = synthetic(f"{scratch_model}-t2", scratch_model, "t2", seed=3, method="eap")
    for c in (old, new, other):
        write_circuit(store, c, database=db)
    matrix = overlap_matrix(store, scratch_model, database=db)
    assert (matrix.tasks, matrix.circuits) == (("t1", "t2"), (new.id, other.id))
    ne, oe = reference.edge_set(new), reference.edge_set(other)
    assert matrix.edges[0][1] == pytest.approx(jaccard(len(ne & oe), len(ne | oe)))
    only = overlap_matrix(store, scratch_model, database=db, method="synthetic")
    assert only.circuits == (new.id,) and only.nodes == ((1.0,),)
    with pytest.raises(ValueError, match="no stored circuits of model"):
        overlap_matrix(store, scratch_model, database=db, method="acdc")


def test_hubs_equal_counting_in_python(real_circuits, store, db):
    circuits = list(real_circuits.values())
    model = circuits[0].provenance.model
    got = hubs(store, model, database=db, kinds=("attention", "mlp"), limit=6)
    counts = reference.task_counts(circuits, {"attention", "mlp"})
    layer = {n.name: n.layer for c in circuits for n in c.nodes}
    expected = sorted(counts, key=lambda n: (-counts[n], layer[n], n))[:6]
    assert [h.name for h in got] == expected
    assert got[0].tasks == len(circuits)  # some MLP serves every task
    for hub in got:
        assert hub.tasks == counts[hub.name] == len(hub.uses)
        for use in hub.uses:
            c = real_circuits[use.task]
            w = reference.weights(c)
            touching = sum(p for (u, v, _), p in w.items() if hub.name in (u, v))
            assert use.circuit == c.id and use.share == pytest.approx(touching)


def test_bad_requests_are_named(real_circuits, store, db, scratch_model):
    ioi = real_circuits["ioi"].id
    with pytest.raises(ValueError, match="no stored circuit with id 'nope'"):
        compare(store, [ioi, "nope"], database=db)
    with pytest.raises(ValueError, match="at least 2 distinct"):
        compare(store, [ioi], database=db)
    with pytest.raises(ValueError, match="list of ids"):
        compare(store, ioi, database=db)
    other = synthetic(f"{scratch_model}-x", scratch_model, "t", seed=1)
    write_circuit(store, other, database=db)
    with pytest.raises(ValueError, match="different models"):
        compare(store, [ioi, other.id], database=db)
    with pytest.raises(ValueError, match="kinds: unknown"):
        hubs(store, scratch_model, database=db, kinds=("head",))
