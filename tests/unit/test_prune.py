"""The dangling-edge cleanup: what it removes on hand-made circuits, and on real ACDC circuits of
the shipped models that no kept edge is dangling afterwards and faithfulness is unchanged."""

from __future__ import annotations

import pytest
import torch

from discovery.algorithms import ALGORITHMS, AlgorithmConfig
from discovery.circuit import Edge
from discovery.discover import DiscoveryRequest, _mask_of, build_problem, discover, task_data
from discovery.evaluate import evaluate
from discovery.models import load_model
from discovery.prune import dangling, prune_edges


def edges(*names: str) -> list[Edge]:
    return [Edge.parse(n) for n in names]


def test_an_edge_out_of_a_node_nothing_feeds_is_dangling():
    # a1.h1 writes to the logits, but no kept edge enters a1.h1: its output is the ablated one.
    kept = edges("embed->a0.h0<v>", "a0.h0->logits", "a1.h1->logits")
    pruned = prune_edges(kept)
    assert [e.name for e in pruned.edges] == ["embed->a0.h0<v>", "a0.h0->logits"]
    assert (pruned.edges_removed, pruned.nodes_removed) == (1, 1)
    # Under mean or zero ablation that edge is not a no-op: the rule is off there.
    assert prune_edges(kept, from_embed=False).edges_removed == 0


def test_edges_into_a_node_that_reaches_no_logits_are_dangling_under_any_ablation():
    kept = edges("embed->a0.h0<q>", "embed->a0.h1<v>", "a0.h1->m0", "embed->logits")
    for from_embed in (True, False):
        pruned = prune_edges(kept, from_embed=from_embed)
        assert [e.name for e in pruned.edges] == ["embed->logits"]
        assert pruned.nodes_removed == 3  # a0.h0, a0.h1, m0


def test_a_clean_circuit_is_left_alone():
    kept = edges("embed->a0.h0<k>", "a0.h0->a1.h0<q>", "embed->a1.h0<v>", "a1.h0->logits")
    assert dangling(kept) == [] and prune_edges(kept).edges_removed == 0


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return {name: load_model(name, device="cpu") for name in ("multitask", "induction-2l")}


#: Real ACDC circuits with dangling edges (found by running it: 7 -> 4, 11 -> 10, 24 -> 22,
#: 52 -> 51 edges), and one under mean ablation, where only the no-path-to-logits rule applies.
CASES = [("induction-2l", "induction", "corrupt", 0.05, True), ("multitask", "greater_than", "corrupt", 0.05, True),
         ("multitask", "pronoun", "corrupt", 0.05, True), ("multitask", "induction", "corrupt", 0.01, True),
         ("multitask", "ioi", "mean", 0.05, False)]


@pytest.mark.parametrize(("model", "task", "ablation", "tau", "has_dangling"), CASES)
def test_cleanup_keeps_faithfulness_and_leaves_nothing_dangling(models, model, task, ablation, tau,
                                                                has_dangling):
    data = task_data(task, models[model], 24, 0)
    problem = build_problem(models[model], data, metric="kl", ablation=ablation)
    raw = ALGORITHMS["acdc"](problem, AlgorithmConfig(threshold=tau)).mask
    graph = problem.graph
    found = [graph.edge(u, k) for u, k in raw.nonzero().tolist()]
    pruned = prune_edges(found, from_embed=ablation == "corrupt")
    assert (pruned.edges_removed > 0) == has_dangling
    for metric in (None, "kl"):  # the task metric and the search metric
        before = evaluate(problem, raw, metric).circuit
        after = evaluate(problem, _mask_of(graph, pruned.edges), metric).circuit
        assert after == pytest.approx(before, abs=1e-6)
    assert dangling(pruned.edges, from_embed=ablation == "corrupt") == []


def test_discover_records_the_cleanup(models):
    circuit = discover(DiscoveryRequest(model="multitask", task="ioi", n_prompts=24, device="cpu"),
                       model=models["multitask"])
    removed = circuit.provenance.params["dangling_removed"]
    assert set(removed) == {"edges", "nodes"} and removed["edges"] >= 0
    assert dangling(circuit.edges) == []
    assert {n.name for n in circuit.nodes} == {x for e in circuit.edges for x in (e.src, e.dst)}
