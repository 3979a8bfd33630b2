"""Stability scores (discovery.stability): Jaccard by definition; each re-run's Jaccard equals the one
of a separate discover() under that order or those prompts; the core is what every re-run keeps;
attribution methods have no order; custom tasks resample by bootstrap; bounds are enforced."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from discovery.discover import DiscoveryRequest, discover, task_data
from discovery.models import load_model
from discovery.stability import jaccard, resampled, stability, summarise

N = 10


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model("multitask", device="cpu")


@pytest.fixture(scope="module")
def scored(model):
    request = DiscoveryRequest(model="multitask", task="ioi", n_prompts=N, device="cpu", threshold=0.02)
    circuit = discover(request, model=model)
    calls = []
    score = stability(request, circuit, orders=2, resamples=2, model=model,
                      progress=lambda done, total: calls.append((done, total)))
    return request, circuit, score, calls


def _edges(circuit) -> set[str]:
    return {e.name for e in circuit.edges}


def test_jaccard_and_summary_by_definition():
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0 and jaccard({"a"}, set()) == 0.0
    s = summarise([0.5, 1.0])
    assert (s["jaccard_mean"], s["jaccard_min"], s["jaccard_max"]) == (0.75, 0.5, 1.0)
    assert s["jaccard_std"] == pytest.approx(0.3535534, abs=1e-6)
    assert summarise([])["jaccard_mean"] is None


def test_each_rerun_is_a_separate_discovery(model, scored):
    request, circuit, score, _ = scored
    base = _edges(circuit)
    for i, j in enumerate(score["orders"]["jaccard"]):
        other = discover(replace(request, edge_order=f"random:{i}"), model=model)
        assert j == pytest.approx(jaccard(base, _edges(other)))
    for i, j in enumerate(score["prompts"]["jaccard"]):
        other = discover(replace(request, seed=request.seed + 1 + i), model=model)
        assert other.provenance.dataset_hash != circuit.provenance.dataset_hash  # other prompts
        assert j == pytest.approx(jaccard(base, _edges(other)))
    cross = discover(replace(request, edge_order="auto-circuit"), model=model)
    assert score["auto_circuit"]["jaccard"] == pytest.approx(jaccard(base, _edges(cross)))


def test_core_is_what_every_rerun_keeps(scored):
    _, circuit, score, calls = scored
    base = _edges(circuit)
    assert score["edges"] == len(base) and set(score["edge_share"]) == base
    assert set(score["core"]) == {e for e, s in score["edge_share"].items() if s == 1.0} <= base
    assert score["core_share"] == pytest.approx(len(score["core"]) / len(base))
    assert all(0 <= s <= 1 for s in score["edge_share"].values())
    assert score["orders"]["n"] == score["prompts"]["n"] == 2
    assert calls[-1] == (5, 5) and [d for d, _ in calls] == [1, 2, 3, 4, 5]


def test_attribution_methods_have_no_order_reruns(model):
    request = DiscoveryRequest(model="multitask", task="ioi", method="eap", top_n=20, n_prompts=N, device="cpu")
    score = stability(request, orders=3, resamples=1, model=model)
    assert score["orders"]["n"] == 0 and score["orders"]["jaccard_mean"] is None
    assert score["auto_circuit"] is None and score["prompts"]["n"] == 1


def test_custom_tasks_resample_by_bootstrap(model):
    data = task_data("ioi", model, 8, 0)
    request = DiscoveryRequest(model="multitask", task="ioi", n_prompts=8, device="cpu")
    first, pairs = resampled(request, model, data, 0)
    assert len(pairs.pairs) == 8 and set(pairs.pairs) <= set(data.pairs) and first.seed == 1
    assert resampled(request, model, data, 0)[1] == pairs
    assert resampled(request, model, data, 1)[1] != pairs


@pytest.mark.parametrize(("orders", "resamples"), [(-1, 1), (1, 51)])
def test_bounds(model, orders, resamples):
    request = DiscoveryRequest(model="multitask", task="ioi", n_prompts=4, device="cpu")
    with pytest.raises(ValueError, match="between 0 and 50"):
        stability(request, orders=orders, resamples=resamples, model=model)
