"""Every architecture of tests/unit/test_arch_parity.py on CUDA: the same tiny random-weight models
(2-3 layers, d_model 64, fp32, seeded), moved to the GPU before their weights are read, so the
patched forward, the suffix engine and attribution all run there. Skipped cleanly without CUDA.

Parity is fp32 with TF32 matmuls off (Ampere and later use TF32 for fp32 matmuls when allowed,
which is ~1e-3 off, not 1e-4); each test that compares numbers turns it off and restores it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from discovery.algorithms import ALGORITHMS, AlgorithmConfig
from discovery.arch import graph_shape, read_weights
from discovery.graph import Graph
from discovery.patching import patched_forward
from discovery.problem import Problem
from tests.unit.test_arch_parity import CONFIGS, batch, tiny

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CUDA = "cuda"


@pytest.fixture(autouse=True)
def no_tf32() -> Iterator[None]:
    """fp32 matmuls and convolutions in full fp32 for the test, restored afterwards."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.fixture(scope="module", params=list(CONFIGS))
def name(request) -> str:
    return request.param


def on(name: str, device: str):
    """The tiny ``name`` model (same seed and weights as the CPU tests) on ``device``."""
    return tiny(name).to(device)


def problem_on(model, device: str, metric: str) -> Problem:
    """Problem of the shared random batch; weights read from ``model`` where it lives (read_weights
    keeps each tensor on the model's device), batch moved there too."""
    w = read_weights(model)
    return Problem.build(w, Graph(graph_shape(w)), batch().to(device), metric=metric, ablation="corrupt")


def test_weights_and_problem_live_on_cuda(name):
    p = problem_on(on(name, CUDA), CUDA, "kl")
    assert p.weights.w_o.is_cuda and p.ablation.is_cuda and p.clean.is_cuda and p.reference.is_cuda


def test_every_edge_kept_equals_hf_logits_on_cuda(name):
    model = on(name, CUDA)
    w = read_weights(model)
    graph = Graph(graph_shape(w))
    tokens = batch().clean.to(CUDA)
    with torch.no_grad():
        zeros = torch.zeros(graph.n_upstream, *tokens.shape, 64, device=CUDA)  # [U, B, P, D]
        ours = patched_forward(w, graph, tokens, zeros, graph.valid().to(CUDA)).logits
        theirs = model(tokens).logits
    assert ours.is_cuda
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert theirs.std() > 0.05


def test_no_edge_kept_equals_ablated_run_on_cuda(name):
    model = on(name, CUDA)
    p = problem_on(model, CUDA, "kl")
    with torch.no_grad():
        run = patched_forward(p.weights, p.graph, p.batch.clean, p.ablation,
                              torch.zeros_like(p.graph.valid()).to(CUDA))
        corrupt = model(p.batch.corrupt).logits
    assert (run.logits - corrupt).abs().max().item() <= 1e-4
    assert torch.allclose(run.outputs[1:], p.ablation[1:], atol=1e-5)


def test_fast_acdc_equals_reference_on_cuda(name):
    config = AlgorithmConfig(threshold=0.002)
    model = on(name, CUDA)
    fast = ALGORITHMS["acdc"](problem_on(model, CUDA, "kl"), config)
    slow = ALGORITHMS["acdc-reference"](problem_on(model, CUDA, "kl"), config)
    assert torch.equal(fast.mask.cpu(), slow.mask.cpu())
    assert 0 < int(fast.mask.sum()) < int(problem_on(model, CUDA, "kl").graph.valid().sum())


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_attribution_on_cuda_equals_cpu(name, method):
    """The same scores on both devices (fp32, no TF32): the GPU path computes the same thing."""
    config = AlgorithmConfig(threshold=1e-3, ig_steps=5)
    cpu = ALGORITHMS[method](problem_on(on(name, "cpu"), "cpu", "logit_diff"), config).scores
    gpu = ALGORITHMS[method](problem_on(on(name, CUDA), CUDA, "logit_diff"), config).scores.cpu()
    finite = ~cpu.isnan()
    assert torch.equal(finite, ~gpu.isnan())
    assert cpu[finite].abs().max() > 0
    assert torch.allclose(gpu[finite], cpu[finite], rtol=1e-3, atol=5e-5)


@pytest.mark.parametrize("method", ["acdc", "eap-ig"])
def test_bf16_discovery_on_cuda(method):
    """One whole discovery in bf16 on a shipped model: weights read in bf16 on the GPU, metrics in
    fp32 (discovery.problem), and a circuit with edges and a faithfulness comes back."""
    from discovery.discover import DiscoveryRequest, discover

    circuit = discover(DiscoveryRequest(model="multitask", task="ioi", method=method, threshold=0.01,
                                        device=CUDA, dtype="bfloat16", n_prompts=24))
    assert circuit.provenance.device.startswith("cuda")
    assert circuit.edges and circuit.metrics.faithfulness is not None
