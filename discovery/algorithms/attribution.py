"""Edge attribution by gradients, shared by EAP and EAP-IG.

The effect of ablating edge u->i is estimated to first order as
``(ablation[u] - clean[u]) . dL/dx_i``, summed over prompts, positions and d_model, where x_i is
input i of the full model (Syed et al. 2023). EAP-IG (Hanna et al. 2024) averages the gradient over
inputs interpolated between the corrupted and the clean prompt, which is markedly more faithful.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from discovery.algorithms.base import AlgorithmConfig, AlgorithmResult
from discovery.metrics import METRICS
from discovery.patching import embed, forward_from
from discovery.problem import Problem


def _stage_keys(problem: Problem) -> dict[tuple[int, int], list[int]]:
    graph, keys = problem.graph, {}
    for k, inp in enumerate(graph.inputs):
        keys.setdefault((inp.layer, inp.stage), []).append(k)
    return keys


def gradient_metric(problem: Problem) -> str:
    """The metric whose gradient ranks edges: the problem's, or the task's when that is KL, or the
    answers' log-probability when the task itself is judged by KL (a custom task may be): KL to the
    full model has zero gradient, and no graph, at the full model."""
    for name in (problem.metric, problem.batch.data.metric):
        if name != "kl":
            return name
    return "logprob"


def input_gradients(problem: Problem, embed_mix: Tensor, steps: int) -> Tensor:
    """Mean gradient of the task metric at every input ``[I, B, P, D]``, the model run on the
    ``steps`` embeddings ``embed_mix`` ``[steps * B, P, D]`` (all edges kept).

    The task metric, not KL: KL to the full model has zero gradient at the full model itself."""
    graph, b = problem.graph, len(problem.batch)
    keys = _stage_keys(problem)
    shape = (steps * b, *problem.clean.shape[2:])
    deltas = {key: torch.zeros(len(ks), *shape, requires_grad=True, device=embed_mix.device,
                               dtype=embed_mix.dtype) for key, ks in keys.items()}
    outputs = torch.zeros(graph.n_upstream, *shape, device=embed_mix.device, dtype=embed_mix.dtype)
    outputs[0] = embed_mix
    every = graph.valid().to(embed_mix.device)
    tokens = problem.batch.clean.repeat(steps, 1)
    with torch.enable_grad():
        run = forward_from(problem.weights, graph, tokens, problem.ablation.repeat(1, steps, 1, 1),
                           every, start=(0, 0), outputs=outputs, deltas=deltas)
        task_metric = gradient_metric(problem)
        final = run.logits[torch.arange(steps * b, device=run.logits.device),
                           problem.batch.last.repeat(steps)]
        value = METRICS[task_metric](final, problem.batch.answers.repeat(steps, 1),
                                     problem.batch.wrongs.repeat(steps, 1), None).sum()
        value.backward()
    problem.forward_passes += steps
    grads = torch.zeros(graph.n_inputs, *problem.clean.shape[1:], device=embed_mix.device)
    for key, ks in keys.items():
        g = deltas[key].grad.view(len(ks), steps, b, *shape[1:]).mean(1)  # average over steps
        grads[ks] = g
    return grads


def edge_scores(problem: Problem, grads: Tensor) -> Tensor:
    """[U, I] estimated change of the metric when each edge is ablated (NaN where no edge)."""
    diff = problem.ablation - problem.clean  # [U, B, P, D]
    scores = torch.einsum("ubpd,ibpd->ui", diff, grads) / len(problem.batch)
    return scores.cpu().masked_fill(~problem.graph.valid(), math.nan)


def select(scores: Tensor, config: AlgorithmConfig) -> Tensor:
    """Edges kept: the ``top_n`` largest |score|, or every |score| >= threshold."""
    magnitude = scores.abs().nan_to_num(-1.0)
    if config.top_n is not None:
        flat = magnitude.flatten()
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[flat.topk(min(config.top_n, int((flat >= 0).sum()))).indices] = True
        return keep.view_as(scores)
    return magnitude >= config.threshold


def attribute(problem: Problem, config: AlgorithmConfig, steps: int) -> AlgorithmResult:
    """Score every edge with gradients at ``steps`` points between corrupted and clean inputs."""
    # The path runs from the ablated embedding (corrupted, mean or zero: whatever removed edges
    # carry) to the clean one, so the gradients match the differences they multiply.
    clean_embed, corrupt_embed = embed(problem.weights, problem.batch.clean), problem.ablation[0]
    alphas = torch.arange(1, steps + 1, device=clean_embed.device, dtype=clean_embed.dtype) / steps
    if steps == 1:
        alphas = torch.ones(1, device=clean_embed.device)  # EAP: the clean point itself
    mix = torch.cat([corrupt_embed + a * (clean_embed - corrupt_embed) for a in alphas])
    grads = input_gradients(problem, mix, steps)
    scores = edge_scores(problem, grads)
    return AlgorithmResult(select(scores, config), scores, {"forward_passes": problem.forward_passes})
