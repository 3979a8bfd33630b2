"""Threshold sweeps: one search gives every threshold's circuit, each the one a separate run at
that threshold finds (ACDC: :mod:`discovery.algorithms.acdc_sweep`; attribution: one scoring)."""

from __future__ import annotations

import math

import pytest
import torch

from discovery.algorithms import AlgorithmConfig, acdc
from discovery.algorithms.acdc_sweep import check_thresholds, sweep
from discovery.discover import DiscoveryRequest, build_problem, discover, discover_sweep, task_data
from discovery.models import load_model

#: spans the ACDC paper's range: thresholds that keep most edges to ones that keep a handful
GRID = [1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0]


@pytest.fixture(scope="module")
def multitask():
    return load_model("multitask", device="cpu")


@pytest.mark.parametrize(("task", "metric"), [("ioi", "kl"), ("greater_than", "kl"), ("successor", "logit_diff")])
def test_acdc_sweep_equals_separate_runs(multitask, task, metric):
    problem = build_problem(multitask, task_data(task, multitask, 16, 0), metric=metric, ablation="corrupt")
    order = [GRID[i] for i in (4, 0, 8, 2, 6, 1, 7, 3, 5)]  # any order in, results in that order
    swept = sweep(problem, order)
    sizes = set()
    for threshold, result in zip(order, swept, strict=True):
        alone = acdc.run(problem, AlgorithmConfig(threshold=threshold))
        assert torch.equal(result.mask, alone.mask), f"threshold {threshold}"
        scored = ~torch.isnan(alone.scores)
        assert torch.equal(scored, ~torch.isnan(result.scores))
        assert torch.allclose(result.scores[scored], alone.scores[scored], atol=1e-5)
        sizes.add(int(alone.mask.sum()))
    assert len(sizes) >= 4, "the grid should give circuits of different sizes"
    assert swept[0].stats["branches"] > 1  # the branches did fork: the test exercises the forks


def test_sweep_with_start_mask_equals_runs_from_it(multitask):
    problem = build_problem(multitask, task_data("ioi", multitask, 12, 0), metric="kl", ablation="corrupt")
    start = problem.graph.valid().clone()
    start[::3] = False  # every third sender starts removed
    swept = sweep(problem, [0.003, 0.03], start_mask=start)
    for threshold, result in zip([0.003, 0.03], swept, strict=True):
        assert torch.equal(result.mask, acdc.run(problem, AlgorithmConfig(threshold=threshold),
                                                 start_mask=start).mask)


@pytest.mark.parametrize("method", ["acdc", "eap"])
def test_discover_sweep_circuits_equal_discover(multitask, method):
    request = DiscoveryRequest(model="multitask", task="ioi", method=method, n_prompts=12, device="cpu")
    grid = [0.3, 0.003, 0.03]
    for threshold, circuit in zip(grid, discover_sweep(request, grid, model=multitask), strict=True):
        alone = discover(DiscoveryRequest(**{**request.__dict__, "threshold": threshold}), model=multitask)
        assert {e.name for e in circuit.edges} == {e.name for e in alone.edges}, threshold
        assert circuit.provenance.threshold == threshold
        assert math.isclose(circuit.metrics.faithfulness, alone.metrics.faithfulness, abs_tol=1e-5)


def test_discover_sweep_in_another_order_runs_each_threshold(multitask):
    """The shared ACDC search visits edges in our order only; another order still sweeps, a run per
    threshold, each equal to discover() in that order."""
    request = DiscoveryRequest(model="multitask", task="ioi", n_prompts=8, device="cpu", edge_order="random:2")
    grid = [0.1, 0.01]
    for threshold, circuit in zip(grid, discover_sweep(request, grid, model=multitask), strict=True):
        alone = discover(DiscoveryRequest(**{**request.__dict__, "threshold": threshold}), model=multitask)
        assert {e.name for e in circuit.edges} == {e.name for e in alone.edges}, threshold
        assert circuit.provenance.params["edge_order"] == "random:2"


@pytest.mark.parametrize(("grid", "message"), [
    ([], "at least one"), ([0.01, -1.0], "> 0"), ([0.01, float("nan")], "> 0"),
    ([0.01, 0.01], "repeats"),
])
def test_bad_grids_are_named(grid, message):
    with pytest.raises(ValueError, match=message):
        check_thresholds(grid)


def test_top_n_cannot_be_swept(multitask):
    request = DiscoveryRequest(model="multitask", task="ioi", method="eap", top_n=10, n_prompts=4, device="cpu")
    with pytest.raises(ValueError, match="top_n"):
        discover_sweep(request, [0.01, 0.1], model=multitask)
