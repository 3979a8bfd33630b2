"""Conflict prompts: win rates, and each component's direct contribution to logit(a) - logit(b).

Direct logit attribution: the final residual at the last position is the sum of every node's
output plus the attention output biases that belong to no node. With the final LayerNorm's scale
frozen from the clean run, ``logit(a) - logit(b)`` is linear in that sum:

    diff = sum_c ((o_c - mean(o_c)) / sigma) . (g * (W_U[:, a] - W_U[:, b])) + bias terms

where the bias terms are the free attention biases through the same map, the LayerNorm's shift
through the unembedding, and the unembedding's own bias. A neuron's contribution is its activation
times its row of W_out (the MLP's output bias stays with the MLP).
Shapes: ``B`` prompts, ``P`` positions, ``D`` d_model, ``U`` upstream nodes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from discovery.circuit import Node
from discovery.experiments.ablate import Measure
from discovery.experiments.result import ConflictSummary
from discovery.graph import Graph
from discovery.patching import GPT2Weights, free_bias, mlp_activations

N_FLIPS = 2000


@dataclass
class Attribution:
    """Per-prompt direct contributions: ``nodes[u]`` ``[U, B]`` for every upstream node (embed
    included) and ``bias`` ``[B]`` (everything that belongs to no node)."""

    nodes: Tensor
    bias: Tensor
    direction: Tensor  # [B, D] g * (W_U[:, a] - W_U[:, b]) / sigma: the frozen linear map
    clean: Tensor  # [U, B, P, D]
    last: Tensor  # [B]

    @property
    def total(self) -> Tensor:
        """[B] the sum of every term: the model's own logit difference."""
        return self.nodes.sum(0) + self.bias


def attribution(w: GPT2Weights, clean: Tensor, last: Tensor, ans_a: Tensor, ans_b: Tensor) -> Attribution:
    """Direct contributions of every node to logit(ans_a) - logit(ans_b) at ``last``."""
    rows = torch.arange(clean.shape[1], device=clean.device)
    at_last = clean[:, rows, last].double()  # [U, B, D]
    bias_o = free_bias(w, w.n_layers, 2).double()  # [D]
    resid = at_last.sum(0) + bias_o  # [B, D]
    sigma = (resid.var(-1, unbiased=False) + w.eps).sqrt()  # [B]
    w_u = w.w_u.double()
    du = (w_u[:, ans_a] - w_u[:, ans_b]).T  # [B, D]
    direction = w.lnf_w.double() * du / sigma[:, None]  # [B, D]

    def through(x: Tensor) -> Tensor:  # [..., B, D] -> [..., B]
        return ((x - x.mean(-1, keepdim=True)) * direction).sum(-1)

    bias = through(bias_o.expand_as(resid)) + (du * w.lnf_b.double()).sum(-1)
    if w.b_u is not None:
        bias = bias + w.b_u.double()[ans_a] - w.b_u.double()[ans_b]
    return Attribution(through(at_last), bias, direction, clean, last)


def component_dla(w: GPT2Weights, graph: Graph, att: Attribution, names: list[str]) -> dict[str, Tensor]:
    """Per component (head, MLP or neuron) its ``[B]`` direct contributions."""
    out: dict[str, Tensor] = {}
    rows = torch.arange(att.clean.shape[1], device=att.clean.device)
    activations: dict[int, Tensor] = {}
    for name in names:
        node = Node.parse(name)
        if node.kind != "neuron":
            out[name] = att.nodes[graph.up_index[name]]
            continue
        layer = node.layer
        if layer not in activations:  # the MLP's clean activations at the last position
            k = graph.in_index[(f"m{layer}", "mlp")]
            x = att.clean[:graph.n_avail[k]].sum(0) + free_bias(w, layer, 1)
            activations[layer] = mlp_activations(w, layer, x)[rows, att.last].double()  # [B, d_mlp]
        vec = activations[layer][:, node.neuron, None] * w.w_out[layer, node.neuron].double()  # [B, D]
        out[name] = ((vec - vec.mean(-1, keepdim=True)) * att.direction).sum(-1)
    return out


def _generator(seed: str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(hashlib.sha256(seed.encode()).hexdigest()[:15], 16))
    return g


def sign_flips(n_prompts: int, seed: str, n: int = N_FLIPS) -> Tensor:
    """[n, B] random +-1 signs (seeded; on the CPU, so the same on every machine)."""
    return torch.randint(0, 2, (n, n_prompts), generator=_generator(seed)).double() * 2 - 1


def dla_stats(values: Tensor, flips: Tensor) -> tuple[float, float | None, float | None]:
    """Mean, t = mean / (std / sqrt(n)) (None without spread) and the two-sided sign-flip p,
    (1 + #{|mean of flipped| >= |mean|}) / (1 + n_flips) (None for fewer than two prompts)."""
    x = values.double().cpu()
    mean = float(x.mean())
    if x.numel() < 2:
        return mean, None, None
    std = float(x.std())
    t = None if std == 0 else mean / (std / math.sqrt(x.numel()))
    flipped = (flips * x).mean(1).abs()
    k = int((flipped >= abs(mean) - 1e-12 * max(1.0, abs(mean))).sum())
    return mean, t, (1 + k) / (1 + flips.shape[0])


def win_rates(measure: Measure, a: str, b: str) -> dict[str, float]:
    diff = measure["diff"]
    return {a: float((diff > 0).double().mean()), b: float((diff < 0).double().mean())}


def wins_of(measure: Measure, task: str, a: str) -> Tensor:
    """[B] 1 where ``task``'s answer has the higher logit."""
    diff = measure["diff"]
    return ((diff > 0) if task == a else (diff < 0)).double()


def conflict_summary(pair: str, source: str, measure: Measure, a: str, b: str,
                     ablation: str) -> ConflictSummary:
    """Win rates, top-1 rates (``other``: neither answer on top) and the logit difference."""
    diff = measure["diff"].double()
    top = {a: float(measure["top_a"].mean()), b: float(measure["top_b"].mean())}
    top["other"] = max(0.0, 1.0 - top[a] - top[b])
    std = float(diff.std()) if diff.numel() > 1 else 0.0
    return ConflictSummary(pair=pair, source=source, n_prompts=int(diff.numel()),
                           win_rate=win_rates(measure, a, b), top1_rate=top,
                           logit_diff_mean=float(diff.mean()),
                           logit_diff_std=std if math.isfinite(std) else 0.0, ablation=ablation)
