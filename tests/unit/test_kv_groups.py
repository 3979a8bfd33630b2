"""One k/v input per key-value group (``kv_inputs="group"``, ``GraphShape.kv_groups``) on a tiny
Llama (4 query heads, 2 kv heads) and a tiny Gemma 2 (post-norm): the tied-input graph keeps HF
parity and the ablated run, fast ACDC equals the reference and decides every tie set as one, EAP's
group-edge score is the derivative of moving all its tied columns at once, and the circuit names
``a{L}.kv{G}`` round-trip through dicts, MIB JSON, GraphML and the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from discovery.algorithms import ALGORITHMS, AlgorithmConfig
from discovery.algorithms.attribution import edge_scores, input_gradients, select
from discovery.arch import graph_shape, read_weights
from discovery.circuit import Circuit, Edge, GraphShape, Node
from discovery.graph import Graph
from discovery.metrics import METRICS, final_logits
from discovery.patching import forward_from, patched_forward
from discovery.problem import Problem
from discovery.prune import prune_edges
from tests.unit.test_arch_parity import batch, tiny

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["llama", "gemma2"])
def setup(request):
    torch.set_num_threads(1)
    model = tiny(request.param)
    w = read_weights(model)
    assert w.n_kv_heads == 2 and w.n_heads == 4
    return model, w, Graph(dataclasses.replace(graph_shape(w), kv_groups=w.n_kv_heads))


def _problem(w, graph, metric: str) -> Problem:
    return Problem.build(w, graph, batch(), metric=metric, ablation="corrupt")


def test_ties_group_the_k_and_v_inputs_of_one_key_value_group(setup):
    _, _, graph = setup
    k0 = graph.in_index[("a1.h0", "k")]
    assert graph.tie_of(k0) == (k0, graph.in_index[("a1.h1", "k")])
    assert graph.tie_of(graph.in_index[("a1.h2", "v")]) == (graph.in_index[("a1.h2", "v")],
                                                            graph.in_index[("a1.h3", "v")])
    assert graph.tie_of(graph.in_index[("a1.h1", "q")]) == (graph.in_index[("a1.h1", "q")],)
    assert graph.edge(0, graph.in_index[("a1.h1", "k")]).name == "embed->a1.kv0<k>"
    assert graph.index_of("a0.h3->a1.kv1<v>") == (graph.up_index["a0.h3"], graph.in_index[("a1.h2", "v")])
    with pytest.raises(KeyError, match="a<L>.kv<G>"):
        graph.index_of("embed->a1.h0<k>")
    assert graph.n_edges == len(graph.shape.edges()) == int(graph.edge_valid().sum())


def test_all_kept_equals_hf_and_none_kept_equals_the_ablated_run(setup):
    model, w, graph = setup
    p = _problem(w, graph, "kl")
    with torch.no_grad():
        full = patched_forward(w, graph, p.batch.clean, p.ablation, graph.tie_mask(graph.valid())).logits
        assert (full - model(p.batch.clean).logits).abs().max().item() <= 1e-4
        empty = patched_forward(w, graph, p.batch.clean, p.ablation, torch.zeros_like(graph.valid()))
        assert (empty.logits - model(p.batch.corrupt).logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("threshold", [0.002, 0.006])
def test_fast_acdc_equals_the_reference_and_keeps_tie_sets_together(setup, threshold):
    _, w, graph = setup
    config = AlgorithmConfig(threshold=threshold)
    fast = ALGORITHMS["acdc"](_problem(w, graph, "kl"), config)
    slow = ALGORITHMS["acdc-reference"](_problem(w, graph, "kl"), config)
    assert torch.equal(fast.mask, slow.mask)
    assert torch.allclose(fast.scores.nan_to_num(0), slow.scores.nan_to_num(0), atol=1e-4)
    kept = fast.mask & graph.edge_valid()
    assert 0 < int(kept.sum()) < graph.n_edges
    grouped = [list(ks) for ks in graph.ties if len(ks) > 1]
    assert grouped
    for ks in grouped:
        assert torch.equal(fast.mask[:, ks], fast.mask[:, ks[:1]].expand(-1, len(ks)))
    # some group edges were kept and some removed: the tied path was exercised both ways
    group_kept = torch.stack([fast.mask[:, ks[0]] & graph.valid()[:, ks[0]] for ks in grouped])
    group_valid = torch.stack([graph.valid()[:, ks[0]] for ks in grouped])
    assert 0 < int(group_kept.sum()) < int(group_valid.sum())


def test_eap_group_edge_score_equals_moving_all_tied_columns(setup):
    _, w, graph = setup
    p = _problem(w, graph, "logit_diff")
    scores = edge_scores(p, input_gradients(p, p.clean[0], 1))
    b = p.batch

    def metric(u: int, ks: list[int], alpha: float) -> float:
        mask = graph.valid().float()
        mask[u, ks] = 1 - alpha
        with torch.no_grad():
            run = forward_from(w, graph, b.clean, p.ablation, mask, start=(0, 0), outputs=None)
        return METRICS["logit_diff"](final_logits(run.logits, b.last), b.answers, b.wrongs, None).mean().item()

    eps = 1e-2
    for name in ["a0.h1->a1.kv0<k>", "embed->a1.kv1<v>", "a0.h2->a1.kv1<k>", "embed->a0.kv0<v>"]:
        u, k = graph.index_of(name)
        ks = list(graph.tie_of(k))
        assert len(ks) == 2
        assert torch.equal(scores[u, ks], scores[u, ks[:1]].expand(2))  # one score per group edge
        fd = (metric(u, ks, eps) - metric(u, ks, -eps)) / (2 * eps)
        assert scores[u, k].item() == pytest.approx(fd, rel=2e-2, abs=2e-4), name


def test_top_n_counts_a_group_edge_once_and_keeps_its_columns_together(setup):
    _, _, graph = setup
    scores = torch.full((graph.n_upstream, graph.n_inputs), float("nan"))
    scores[graph.valid()] = 0.0
    u, k = graph.index_of("a0.h1->a1.kv0<k>")
    q = graph.index_of("a0.h1->a1.h3<q>")
    scores[u, list(graph.tie_of(k))] = 5.0
    scores[q] = 4.0
    keep = select(scores, AlgorithmConfig(top_n=2), graph)
    assert int((keep & graph.edge_valid()).sum()) == 2  # two graph edges, the group one among them
    assert keep[u, list(graph.tie_of(k))].all() and keep[q]
    assert int(keep.sum()) == 3  # and the group edge's second column


@pytest.mark.parametrize("method", ["eap-ig", "eap-ig+acdc"])
def test_attribution_methods_keep_tie_sets_together(setup, method):
    _, w, graph = setup
    result = ALGORITHMS[method](_problem(w, graph, "logit_diff"), AlgorithmConfig(threshold=0.01, top_n=12))
    for ks in graph.ties:
        assert torch.equal(result.mask[:, list(ks)], result.mask[:, ks[:1]].expand(-1, len(ks)))
    most = 3 * 12 if method == "eap-ig+acdc" else 12  # the hybrid verifies 3 * top_n candidates
    assert 0 < int((result.mask & graph.edge_valid()).sum()) <= most


def test_shape_validates_kv_groups_and_prune_keeps_edges_into_groups():
    with pytest.raises(ValueError, match="kv_groups"):
        GraphShape(2, 4, kv_groups=3)
    shape = GraphShape(2, 4, kv_groups=2)
    edges = [Edge.parse(n) for n in ("embed->a1.kv0<k>", "embed->a1.h1<q>", "a1.h1->logits",
                                     "embed->a1.kv1<v>")]
    kept = {e.name for e in prune_edges(edges, shape=shape).edges}
    # kv1 feeds heads 2 and 3, which reach nothing: dangling; kv0 feeds head 1, which does
    assert kept == {"embed->a1.kv0<k>", "embed->a1.h1<q>", "a1.h1->logits"}
    assert Node.parse("a1.kv0") == Node("a1.kv0", "kv_group", 1, 0)
    with pytest.raises(ValueError, match="k or v"):
        Edge.parse("embed->a1.kv0")


@pytest.fixture(scope="module")
def grouped_circuit() -> Circuit:
    from discovery.discover import DiscoveryRequest, discover

    torch.set_num_threads(1)
    return discover(DiscoveryRequest(model="multitask-llama", task="induction", n_prompts=8,
                                     device="cpu", threshold=0.02, kv_inputs="group"))


def test_grouped_circuit_names_groups_and_round_trips(grouped_circuit, tmp_path):
    from discovery.discover import DiscoveryRequest
    from discovery.export import from_graphml, from_mib_json, to_graphml, to_mib_json

    c = grouped_circuit
    assert c.graph is not None and c.graph.kv_groups == 2 and c.provenance.params["kv_inputs"] == "group"
    names = [e.name for e in c.edges]
    assert len(names) == len(set(names))
    assert any(".kv" in e.dst and e.input in "kv" for e in c.edges)
    assert all(e.input == "q" for e in c.edges if ".h" in e.dst)  # heads receive q only
    assert set(c.edge_scores) == set(c.graph.edges())
    assert c.provenance.params["edges_total"] == len(c.graph.edges())
    assert Circuit.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    mib = to_mib_json(c)
    assert mib["cfg"]["kv_groups"] == 2 and "a1.kv0" in mib["nodes"]
    back = from_mib_json(json.loads(json.dumps(mib)), model="m", task="t", method="x")
    assert {e.name for e in back.edges} == set(names) and back.graph == c.graph
    assert from_graphml(to_graphml(c)) == c
    with pytest.raises(ValueError, match="kv_inputs"):
        DiscoveryRequest(model="m", task="t", kv_inputs="heads")


def test_job_spec_names_the_kv_inputs_field():
    from pydantic import ValidationError

    from workers.jobspec import JobSpec

    with pytest.raises(ValidationError) as err:
        JobSpec(model="multitask-llama", task="induction", kv_inputs="per-group")
    assert "kv_inputs" in str(err.value)
    assert JobSpec(model="multitask-llama", task="induction", kv_inputs="group").kv_inputs == "group"


def test_cli_discovers_with_one_kv_input_per_group(tmp_path):
    out = tmp_path / "grouped.json"
    done = subprocess.run([sys.executable, "-m", "api.cli", "discover", "--model", "multitask-llama",
                           "--task", "induction", "--kv-inputs", "group", "--n-prompts", "8",
                           "--threshold", "0.05", "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    circuit = Circuit.from_json(out.read_text())
    assert circuit.graph.kv_groups == 2 and any(".kv" in e.dst for e in circuit.edges)
