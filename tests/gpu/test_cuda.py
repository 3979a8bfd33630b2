"""The CUDA path: skipped cleanly where there is no CUDA (CI never has one)."""

from __future__ import annotations

import pytest
import torch

from discovery.algorithms import ALGORITHMS, AlgorithmConfig
from discovery.discover import DiscoveryRequest, build_problem, discover, task_data
from discovery.models import load_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_patched_forward_on_cuda_matches_cpu():
    cpu, gpu = load_model("multitask", device="cpu"), load_model("multitask", device="cuda")
    data = task_data("ioi", cpu, 20, 0)
    a = build_problem(cpu, data, metric="kl", ablation="corrupt")
    b = build_problem(gpu, data, metric="kl", ablation="corrupt")
    assert b.ablation.is_cuda
    assert torch.allclose(a.reference, b.reference.cpu(), atol=1e-3)


def test_fast_acdc_on_cuda_equals_reference():
    model = load_model("multitask", device="cuda")
    data = task_data("ioi", model, 24, 0)
    config = AlgorithmConfig(threshold=0.01)
    fast = ALGORITHMS["acdc"](build_problem(model, data, metric="kl", ablation="corrupt"), config)
    slow = ALGORITHMS["acdc-reference"](build_problem(model, data, metric="kl", ablation="corrupt"), config)
    assert torch.equal(fast.mask, slow.mask)


@pytest.mark.parametrize("method", ["acdc", "eap-ig"])
def test_discover_on_cuda(method):
    circuit = discover(DiscoveryRequest(model="induction-2l", task="induction", method=method,
                                        threshold=0.1, device="cuda", n_prompts=30))
    assert circuit.provenance.device.startswith("cuda")
    assert circuit.edges and circuit.metrics.faithfulness is not None
