"""The computational graph and the patched forward pass."""

from __future__ import annotations

import pytest
import torch

from discovery.circuit import Edge, GraphShape
from discovery.discover import build_problem, task_data
from discovery.graph import Graph
from discovery.models import load_model
from discovery.patching import GPT2Weights, clean_outputs, patched_forward


def test_gpt2_small_shape_has_32491_edges():
    shape = GraphShape(12, 12, mlp=True)
    graph = Graph(shape)
    assert len(shape.edges()) == graph.n_edges == int(graph.valid().sum()) == 32491
    assert graph.n_upstream == 1 + 12 * 13 and graph.n_inputs == 12 * (3 * 12 + 1) + 1


@pytest.mark.parametrize("shape", [GraphShape(2, 2, mlp=False), GraphShape(4, 4), GraphShape(3, 5)])
def test_edge_names_and_indices_agree(shape):
    graph = Graph(shape)
    names = shape.edges()
    assert sorted(graph.edge(u, k).name for u, k in graph.valid().nonzero().tolist()) == sorted(names)
    for name in names:
        assert graph.edge(*graph.index_of(name)).name == name
        Edge.parse(name)
    order = graph.edges_in_order()
    assert graph.inputs[order[0][1]].node == "logits" and graph.inputs[order[-1][1]].layer == 0


@pytest.fixture(scope="module")
def multitask():
    return load_model("multitask", device="cpu")


@pytest.mark.parametrize("task", ["ioi", "greater_than"])
def test_patched_forward_matches_the_bridge(multitask, task):
    data = task_data(task, multitask, 20, 0)
    problem = build_problem(multitask, data, metric="kl", ablation="corrupt")
    batch = problem.batch
    with torch.no_grad():
        bridge_clean, bridge_corrupt = multitask.logits(batch.clean), multitask.logits(batch.corrupt)
        every = problem.graph.valid()
        kept = patched_forward(problem.weights, problem.graph, batch.clean, problem.ablation, every)
        none = patched_forward(problem.weights, problem.graph, batch.clean, problem.ablation, ~every)
    assert torch.allclose(kept.logits, bridge_clean, atol=1e-4)  # every edge kept: the model
    assert torch.allclose(none.logits, bridge_corrupt, atol=1e-4)  # none kept: the corrupted run
    assert not torch.allclose(bridge_clean, bridge_corrupt, atol=1e-2)


def test_node_outputs_add_up_to_the_residual(multitask):
    weights = GPT2Weights.from_hf(multitask.bridge.original_model)
    graph = Graph(GraphShape(4, 4))
    tokens = torch.tensor([[0, 5, 9, 17, 3, 8]])
    with torch.no_grad():
        run = clean_outputs(weights, graph, tokens)
        before_ln_f = _pre_final(multitask, tokens)
    resid = run.outputs.sum(0) + weights.b_o.sum(0)  # embed + heads + MLPs + attention biases
    assert torch.allclose(resid, before_ln_f, atol=1e-4)


def _pre_final(model, tokens):
    """The residual stream entering the final LayerNorm, read with a hook on the HF model."""
    captured = {}
    handle = model.bridge.original_model.transformer.ln_f.register_forward_hook(
        lambda mod, inp, out: captured.setdefault("x", inp[0]))
    try:
        model.bridge.original_model(tokens)
    finally:
        handle.remove()
    return captured["x"]
