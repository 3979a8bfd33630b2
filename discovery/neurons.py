"""Neuron-level circuits: inside each MLP a found circuit uses, the smallest set of neurons that
keeps a given share (default 90%) of that MLP's effect on the metric.

Ranking is by attribution, the gradient of the metric with respect to a per-neuron keep-mask at 1,
which is ``(activation - ablated activation) . d metric / d activation`` (EAP at neuron level);
the cut is then found with real patching: a binary search over how many top neurons to keep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from discovery.metrics import METRICS, final_logits
from discovery.mixing import mixer_of
from discovery.patching import forward_from, free_bias, mlp_activations
from discovery.problem import Problem


@dataclass(frozen=True)
class NeuronSet:
    layer: int
    neurons: tuple[int, ...]  # kept, best first
    scores: tuple[float, ...]  # attribution of each kept neuron
    share: float  # share of the MLP's effect the kept neurons preserve
    d_mlp: int


def _mlp_input(problem: Problem, outputs: Tensor, mask: Tensor, layer: int) -> Tensor:
    k = problem.graph.in_index[(f"m{layer}", "mlp")]
    x = mixer_of(problem.weights, problem.graph).inputs(outputs, problem.ablation, mask, [k],
                                                        problem.graph.n_avail[k])[0]
    return x + free_bias(problem.weights, layer, 1)


def _metric(problem: Problem, mask: Tensor, neurons: dict) -> Tensor:
    run = forward_from(problem.weights, problem.graph, problem.batch.clean, problem.ablation, mask,
                       start=(0, 0), outputs=None, neurons=neurons)
    final = final_logits(run.logits, problem.batch.last)
    metric = problem.batch.data.metric if problem.metric == "kl" else problem.metric
    b = problem.batch
    return METRICS[metric](final, b.answers, b.wrongs, problem.reference).mean()


def neuron_circuit(problem: Problem, mask: Tensor, layer: int, *, share: float = 0.9) -> NeuronSet:
    """The neurons of MLP ``layer`` the circuit ``mask`` needs (``share`` of the MLP's effect)."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    w = problem.weights
    with torch.no_grad():
        outputs = problem.outputs_of(mask)
        ablated = mlp_activations(w, layer, _mlp_input(problem, problem.ablation, torch.ones_like(mask), layer))
    d_mlp = ablated.shape[-1]
    keep = torch.ones(d_mlp, requires_grad=True, device=ablated.device)
    with torch.enable_grad():
        _metric(problem, mask, {layer: (keep, ablated)}).backward()
    scores = keep.grad.detach()
    order = scores.abs().argsort(descending=True)

    def value(n: int) -> float:
        kept = torch.zeros(d_mlp, device=ablated.device)
        kept[order[:n]] = 1
        with torch.no_grad():
            return _metric(problem, mask, {layer: (kept, ablated)}).item()

    full, none = value(d_mlp), value(0)
    effect = full - none
    lo, hi = 0, d_mlp  # smallest n with value(n) - none >= share * effect
    while lo < hi:
        mid = (lo + hi) // 2
        if effect == 0 or (value(mid) - none) / effect >= share:
            hi = mid
        else:
            lo = mid + 1
    kept = order[:lo].tolist()
    achieved = 1.0 if effect == 0 else (value(lo) - none) / effect
    del outputs
    return NeuronSet(layer, tuple(kept), tuple(scores[kept].tolist()), achieved, d_mlp)
