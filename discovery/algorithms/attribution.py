"""Edge attribution by gradients, shared by EAP and EAP-IG.

The effect of ablating edge u->i is estimated to first order as
``(ablation[u] - clean[u]) . dL/dx_i``, summed over prompts, positions and d_model, where x_i is
input i of the full model (Syed et al. 2023). EAP-IG (Hanna et al. 2024) averages the gradient over
inputs interpolated between the corrupted and the clean prompt, which is markedly more faithful.

Tied inputs (one k/v input per key-value group): the edge u -> group input feeds every tied
column at once, so its score is the sum of the per-column scores (the gradient at a shared input
is the sum of the gradients at its copies: exact), written in each tied column; selection counts
the group edge once and keeps or drops its columns together.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from discovery.algorithms.base import AlgorithmConfig, AlgorithmResult
from discovery.graph import Graph
from discovery.memory import batch_budget, bytes_per_row, halving, rows_that_fit
from discovery.metrics import METRICS
from discovery.mixing import mixer_of
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


def input_gradients(problem: Problem, embed_mix: Tensor, steps: int, *,
                    max_rows: int | None = None) -> Tensor:
    """Mean gradient of the task metric at every input ``[I, B, P, D]`` (fp32), the model run on
    the ``steps`` embeddings ``embed_mix`` ``[steps * B, P, D]`` (all edges kept).

    The task metric, not KL: KL to the full model has zero gradient at the full model itself.
    ``max_rows``: at most that many of the ``steps * B`` rows per forward+backward (None: all).
    Each row's gradient depends on that row alone, so chunks give the unsplit result up to float
    rounding; a chunk that runs out of CUDA memory is halved and the pass retried."""
    b, n = len(problem.batch), embed_mix.shape[0]

    def chunked(rows: int) -> Tensor:
        if rows >= n:  # one chunk: the steps are blocks of B rows, in order
            g = _row_gradients(problem, embed_mix, torch.arange(n, device=embed_mix.device) % b)
            g = g if steps == 1 else g.unflatten(g.dim() - 3, (steps, b)).sum(g.dim() - 3)
            return g if steps == 1 else g / steps
        total = None
        for a in range(0, n, rows):
            prompts = torch.arange(a, min(a + rows, n), device=embed_mix.device) % b
            g = _row_gradients(problem, embed_mix[a:a + rows], prompts)  # [(G,) I, R, P, D]
            if total is None:
                total = torch.zeros(*g.shape[:-3], b, *g.shape[-2:], device=g.device)
            total.index_add_(g.dim() - 3, prompts, g)
        return total / steps  # average over steps

    grads = halving(chunked, min(max_rows or n, n))
    problem.forward_passes += steps
    return grads


def _row_gradients(problem: Problem, embed_rows: Tensor, prompts: Tensor) -> Tensor:
    """Gradient of the summed task metric at every input ``[I, R, P, D]`` (fp32) for ``R`` rows:
    embeddings ``embed_rows`` ``[R, P, D]`` of the prompts ``prompts`` ``[R]`` (batch indices). The
    metric is taken in fp32 on the last-position logits, so a bf16 run accumulates in fp32.

    Post-norm models: ``[1 + L, I, R, P, D]``, row 0 the gradient at each input (what ``embed``
    and the MLPs send through), row ``1 + l`` the gradient inside attention layer l's post-norm as
    that input sees it (what layer l's heads send through: the norm's Jacobian at this run)."""
    graph, keys = problem.graph, _stage_keys(problem)
    shape, device, dtype = (len(prompts), *problem.clean.shape[2:]), embed_rows.device, embed_rows.dtype

    def zeros(n: int) -> Tensor:
        return torch.zeros(n, *shape, requires_grad=True, device=device, dtype=dtype)

    deltas = {key: zeros(len(ks)) for key, ks in keys.items()}
    mix = mixer_of(problem.weights, graph)
    pre = {} if mix.linear else {
        key: {g.layer: zeros(len(ks)) for g in mix.groups(graph.n_avail[ks[0]]) if g.layer is not None}
        for key, ks in keys.items()}
    batch = problem.batch
    # The batch itself when the rows are its prompts in order (EAP): no copy of the ablation.
    whole = len(prompts) == len(batch) and bool((prompts == torch.arange(len(batch), device=device)).all())
    tokens = batch.clean if whole else batch.clean[prompts]
    ablation = problem.ablation if whole else problem.ablation[:, prompts]
    with torch.enable_grad():
        run = forward_from(problem.weights, graph, tokens, ablation, graph.valid().to(device),
                           start=(0, 0), outputs=embed_rows[None], deltas=deltas, pre_deltas=pre or None)
        final = run.logits[torch.arange(len(prompts), device=device), batch.last[prompts]].float()
        value = METRICS[gradient_metric(problem)](final, batch.answers[prompts], batch.wrongs[prompts],
                                                  None).sum()
        value.backward()
    if mix.linear and [k for ks in keys.values() for k in ks] == list(range(graph.n_inputs)):
        # each stage's inputs are consecutive: one concatenation, in input order
        return torch.cat([deltas[key].grad.float() for key in keys])
    grads = torch.zeros(1 if mix.linear else 1 + graph.shape.n_layers, graph.n_inputs, *shape,
                        device=device)
    for key, ks in keys.items():
        grads[0, ks] = deltas[key].grad.float()
        for layer, d in pre.get(key, {}).items():
            grads[1 + layer, ks] = d.grad.float()
    return grads[0] if mix.linear else grads


def edge_scores(problem: Problem, grads: Tensor) -> Tensor:
    """[U, I] estimated change of the metric when each edge is ablated (NaN where no edge), from
    :func:`input_gradients`' ``grads`` (post-norm models: each sender's row of them)."""
    diff = problem.ablation.float() - problem.clean.float()  # [U, B, P, D], fp32 as grads
    if grads.dim() == 4:  # one matrix product [U, BPD] x [BPD, I] (no permuted copies)
        scores = diff.flatten(1) @ grads.flatten(1).T / len(problem.batch)
    else:  # post-norm: a head's edges go through its layer's norm, the rest straight in
        graph = problem.graph
        scores = torch.zeros(graph.n_upstream, graph.n_inputs, device=diff.device)
        for g in mixer_of(problem.weights, graph).groups(graph.n_upstream):
            rows = list(g.rows)
            row = 0 if g.layer is None else 1 + g.layer
            scores[rows] = torch.einsum("ubpd,ibpd->ui", diff[rows], grads[row]) / len(problem.batch)
    return tie_sums(problem.graph, scores.cpu()).masked_fill(~problem.graph.valid(), math.nan)


def tie_sums(graph: Graph, scores: Tensor) -> Tensor:
    """``scores`` ``[U, I]`` with each tie set's columns replaced by their sum (in every column)."""
    if not graph.tied:
        return scores
    out = scores.clone()
    for ks in graph.ties:
        if len(ks) > 1:
            out[:, list(ks)] = scores[:, list(ks)].sum(1, keepdim=True)
    return out


def select(scores: Tensor, config: AlgorithmConfig, graph: Graph | None = None) -> Tensor:
    """Edges kept: the ``top_n`` largest |score|, or every |score| >= threshold. With a ``graph``
    that ties inputs, each graph edge is ranked once (at its tie set's first column) and the
    mask keeps or removes all of its tied columns together."""
    if graph is not None and graph.tied:
        lead = scores.masked_fill(~graph.leaders()[None], math.nan)
        return graph.tie_mask(select(lead, config))
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
        alphas = torch.ones(1, device=clean_embed.device, dtype=clean_embed.dtype)  # EAP: the clean point itself
    mix = torch.cat([corrupt_embed + a * (clean_embed - corrupt_embed) for a in alphas])
    budget = batch_budget(config.max_batch_memory, clean_embed.device)
    rows = rows_that_fit(budget, bytes_per_row(problem, backward=True), mix.shape[0])
    grads = input_gradients(problem, mix, steps, max_rows=rows)
    scores = edge_scores(problem, grads)
    return AlgorithmResult(select(scores, config, problem.graph), scores, {"forward_passes": problem.forward_passes})
