"""Discovery algorithms: the fast ACDC equals the reference; attribution finds the ground truth;
found circuits are faithful."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from discovery.algorithms import ALGORITHMS, AlgorithmConfig, get_algorithm
from discovery.discover import DiscoveryRequest, build_problem, discover, task_data
from discovery.evaluate import edge_roc_auc, evaluate
from discovery.models import load_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models():
    return {name: load_model(name, device="cpu") for name in ("multitask", "induction-2l", "induction-gt")}


@pytest.mark.parametrize(("model", "task", "metric", "n"), [
    ("multitask", "ioi", "kl", 24),
    ("multitask", "greater_than", "prob_diff", 24),
    ("induction-2l", "induction", "kl", 24),
    ("induction-gt", "induction", "kl", 24),
])
def test_fast_acdc_equals_reference(models, model, task, metric, n):
    data = task_data(task, models[model], n, 0)
    config = AlgorithmConfig(threshold=0.01)
    fast = ALGORITHMS["acdc"](build_problem(models[model], data, metric=metric, ablation="corrupt"), config)
    slow = ALGORITHMS["acdc-reference"](build_problem(models[model], data, metric=metric, ablation="corrupt"),
                                        config)
    assert torch.equal(fast.mask, slow.mask)
    assert 0 < int(fast.mask.sum()) < fast.mask.numel()
    assert torch.allclose(fast.scores.nan_to_num(0), slow.scores.nan_to_num(0), atol=1e-4)


def test_ground_truth_recovered_by_acdc():
    truth = set(json.loads((ROOT / "models/induction-gt/true_edges.json").read_text())["edges"])
    circuit = discover(DiscoveryRequest(model="induction-gt", task="induction", method="acdc",
                                        ablation="zero", n_prompts=30, device="cpu"))
    assert edge_roc_auc(circuit.edge_scores, truth) >= 0.9
    assert truth <= {e.name for e in circuit.edges}
    assert circuit.metrics.faithfulness == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(("method", "most"), [("eap", 40), ("eap-ig", 40), ("eap-ig+acdc", 120)])
def test_attribution_methods_score_every_edge(models, method, most):
    """Top 40 by attribution; the hybrid lets ACDC choose among 3 x 40 candidates."""
    data = task_data("ioi", models["multitask"], 16, 0)
    problem = build_problem(models["multitask"], data, metric="logit_diff", ablation="corrupt")
    result = get_algorithm(method)(problem, AlgorithmConfig(threshold=0.05, top_n=40))
    valid = problem.graph.valid()
    assert not torch.isnan(result.scores[valid]).any()
    assert torch.isnan(result.scores[~valid]).all()
    assert 0 < int(result.mask.sum()) <= most
    faithful = evaluate(problem, result.mask).faithfulness
    assert faithful is not None and faithful > 0.5  # forty edges of the best kind carry IOI


def test_unknown_method_and_bad_threshold():
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        get_algorithm("magic")
    with pytest.raises(ValueError, match="threshold must be > 0"):
        AlgorithmConfig(threshold=0)
