"""The pieces of a competition experiment on the shipped ``multitask`` model (4 layers x 4 heads):
the scaled forward, ablation by node, neuron and edge, direct logit attribution, controls."""

from __future__ import annotations

import pytest
import torch

from discovery.circuit import GraphShape
from discovery.discover import task_data
from discovery.experiments.ablate import Passes, conflict_ablation, conflict_runner, task_runner
from discovery.experiments.conflict_batch import tokenize_conflicts
from discovery.experiments.conflicts import builtin_conflicts
from discovery.experiments.controls import control_stats, draw_controls, judge
from discovery.experiments.dla import attribution, component_dla, dla_stats, sign_flips
from discovery.experiments.dose import spearman
from discovery.graph import Graph
from discovery.models import load_model
from discovery.patching import GPT2Weights, forward_from, patched_forward
from discovery.problem import Problem
from discovery.tasks.tokens import tokenize_task

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return load_model("multitask", device="cpu")


@pytest.fixture(scope="module")
def parts(model):
    cfg = model.bridge.cfg
    graph = Graph(GraphShape(cfg.n_layers, cfg.n_heads, mlp=True))
    weights = GPT2Weights.from_hf(model.bridge.original_model)
    return weights, graph


def _runner(model, parts, task="ioi", ablation="corrupt"):
    weights, graph = parts
    data = task_data(task, model, 12, 0)
    batch = tokenize_task(data, model.tokenizer, n_ctx=model.n_ctx)
    problem = Problem.build(weights, graph, batch, metric=data.metric, ablation=ablation)
    return task_runner(problem, Passes()), problem


def _conflicts(model, parts, kind="mean"):
    weights, graph = parts
    prompts = builtin_conflicts("ioi", "induction", 12, seed=0)
    batch = tokenize_conflicts(prompts, model.tokenizer, n_ctx=model.n_ctx, tasks=("ioi", "induction"))
    runner, clean = conflict_runner(weights, graph, batch, ("ioi", "induction"), kind, Passes())
    return runner, clean, batch


def test_scale_one_is_the_plain_forward_and_scale_two_doubles_a_head(model, parts):
    weights, graph = parts
    tokens = tokenize_task(task_data("ioi", model, 4, 0), model.tokenizer, n_ctx=model.n_ctx).clean
    zeros = torch.zeros(graph.n_upstream, *tokens.shape, weights.wte.shape[1])
    valid = graph.valid()
    plain = patched_forward(weights, graph, tokens, zeros, valid)
    ones = forward_from(weights, graph, tokens, zeros, valid, start=(0, 0), outputs=None,
                        scale=torch.ones(graph.n_upstream))
    assert torch.equal(plain.logits, ones.logits)
    assert torch.allclose(plain.logits, model.logits(tokens), atol=1e-4)
    scale = torch.ones(graph.n_upstream)
    scale[graph.up_index["a3.h1"]] = 2.0
    doubled = forward_from(weights, graph, tokens, zeros, valid, start=(0, 0), outputs=None, scale=scale)
    # a3.h1 feeds only m3 and the logits: its direct path to the logits is simply added twice
    assert not torch.allclose(doubled.logits, plain.logits, atol=1e-3)
    assert torch.equal(doubled.outputs[graph.up_index["a2.h0"]], plain.outputs[graph.up_index["a2.h0"]])


def test_ablating_nothing_changes_nothing_and_everything_is_the_empty_circuit(model, parts):
    runner, problem = _runner(model, parts)
    full = runner.full()
    assert torch.allclose(full["metric"].mean(), problem.full_value.cpu(), atol=1e-5)
    assert torch.equal(runner.without_nodes(set())["metric"], full["metric"])
    assert torch.equal(runner.without_edges(set())["metric"], full["metric"])
    assert torch.equal(runner.scaled({"a2.h1"}, 1.0)["metric"], full["metric"])
    everything = [n for n in problem.graph.upstream if n != "embed"]
    assert not torch.allclose(runner.without_nodes(everything)["metric"], full["metric"])
    all_edges = {problem.graph.edge(u, k).name for u, k in problem.graph.valid().nonzero().tolist()}
    assert torch.allclose(runner.without_edges(all_edges)["metric"], runner.empty()["metric"], atol=1e-5)
    assert torch.allclose(runner.only_edges(all_edges)["metric"], full["metric"], atol=1e-5)
    before = runner.passes.forward
    runner.without_nodes({"a2.h1"})
    runner.without_nodes({"a2.h1"})
    assert runner.passes.forward == before + 1  # the repeat came from the cache


def test_ablating_every_neuron_of_an_mlp_equals_ablating_the_mlp_under_corrupt(model, parts):
    runner, _ = _runner(model, parts)
    d_mlp = parts[0].w_in.shape[-1]
    neurons = runner.without_nodes({f"m1.n{i}" for i in range(d_mlp)})["metric"]
    mlp = runner.without_nodes({"m1"})["metric"]
    assert torch.allclose(neurons, mlp, atol=1e-4)
    some = runner.without_nodes({"m1.n0", "m1.n1"})["metric"]
    assert not torch.equal(some, mlp)


def test_dla_terms_sum_to_the_models_logit_difference(model, parts):
    runner, clean, batch = _conflicts(model, parts)
    weights, graph = parts
    att = attribution(weights, clean, runner.last, batch.answer["ioi"], batch.answer["induction"])
    diff = runner.full()["diff"].double()
    assert torch.allclose(att.total, diff, atol=1e-3)
    # neurons of an MLP plus its output bias through the same map add up to the MLP's term
    d_mlp = weights.w_in.shape[-1]
    names = [f"m2.n{i}" for i in range(d_mlp)]
    per = component_dla(weights, graph, att, names + ["m2"])
    bias = weights.b_out[2].double()
    bias_term = ((bias - bias.mean()) * att.direction).sum(-1)
    assert torch.allclose(sum(per[n] for n in names) + bias_term, per["m2"], atol=1e-4)


def test_conflict_mean_ablation_counts_only_real_positions(model, parts):
    runner, clean, batch = _conflicts(model, parts)
    mean = conflict_ablation(clean, batch.last, "mean")
    p = int(batch.last.min())  # a position every prompt has
    assert torch.allclose(mean[:, 0, p], clean[:, :, p].mean(1), atol=1e-5)
    q = int(batch.last.max())
    reach = batch.last >= q  # only the longest prompts have position q: padding does not count
    assert reach.sum() < len(batch.last)
    assert torch.allclose(mean[:, 0, q], clean[:, reach, q].mean(1), atol=1e-5)
    assert torch.equal(conflict_ablation(clean, batch.last, "zero"), torch.zeros_like(clean))


def test_sign_flip_p_and_t():
    flips = sign_flips(30, "s")
    assert torch.equal(flips, sign_flips(30, "s"))
    mean, t, p = dla_stats(torch.ones(30), flips)
    assert mean == 1 and t is None and p == pytest.approx(1 / 2001)
    noise = torch.tensor([(-1.0) ** i for i in range(30)])
    _, t, p = dla_stats(noise, flips)
    assert abs(t) < 1e-6 and p == 1.0


def test_controls_enumerate_small_populations_and_sample_large_ones():
    universe = {"attention": [f"a0.h{i}" for i in range(6)], "mlp": ["m0", "m1"]}
    in_circuits = {"a0.h0", "a0.h1", "m0"}.__contains__
    members = frozenset({"a0.h0", "m0"})
    draw = draw_controls(members, {"attention": 1, "mlp": 1}, universe, in_circuits, 20, "x")
    # outside circuits: 4 heads x 1 MLP = 4 sets < 20 -> outside set: 5 heads x 1 MLP = 5 sets, all
    assert draw.pool == "outside set" and draw.exhaustive and draw.population == 5
    assert len(set(draw.sets)) == 5 and all(s.isdisjoint(members) for s in draw.sets)
    big = {"edge": [f"e{i}" for i in range(40)]}
    d1 = draw_controls(frozenset({"e0", "e1"}), {"edge": 2}, big, {"e0", "e1"}.__contains__, 20, "y")
    d2 = draw_controls(frozenset({"e0", "e1"}), {"edge": 2}, big, {"e0", "e1"}.__contains__, 20, "y")
    assert d1 == d2 and d1.pool == "outside circuits" and not d1.exhaustive and len(d1.sets) == 20
    assert all(not s & {"e0", "e1"} for s in d1.sets)


def test_verdicts_empty_set_and_too_few_controls_are_inconclusive():
    universe = {"mlp": ["m0", "m1", "m2"]}
    empty = draw_controls(frozenset(), {}, universe, lambda _: False, 20, "z")
    v = judge("c", size=0, observed=0.0, se=0.0, draw=empty, stats=None, alpha_level=0.05, kind="nodes")
    assert v.state == "inconclusive" and "empty" in v.detail
    few = draw_controls(frozenset({"m0"}), {"mlp": 1}, universe, lambda _: True, 20, "z")
    stats = control_stats(few, [0.0, 0.1], 5.0)
    assert stats.p_value == pytest.approx(1 / 3)
    v = judge("c", size=1, observed=5.0, se=0.0, draw=few, stats=stats, alpha_level=0.05, kind="mlp")
    assert v.state == "inconclusive" and "1/3" in v.detail
    none = draw_controls(frozenset({"m0", "m1", "m2"}), {"mlp": 3}, universe, lambda _: True, 20, "z")
    assert none.sets == () and none.population == 0


def test_spearman_exact_permutation_p():
    rho, p = spearman([0, 1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0, 5.0], "s")
    assert rho == pytest.approx(1.0) and p == pytest.approx(1 / 120)
    rho, p = spearman([0, 1, 2, 3], [4.0, 3.0, 2.0, 1.0], "s")
    assert rho == pytest.approx(-1.0) and p == 1.0
    rho, p = spearman([0, 1, 2], [1.0, 1.0, 1.0], "s")
    assert rho is None and p is None
