"""ACDC, the fast implementation the product uses. Same decisions as the reference
(:mod:`discovery.algorithms.acdc_reference`), found with far fewer, cheaper passes:

* Only the suffix is recomputed. Receivers are visited in reverse topological order, so every node
  before the current receiver keeps the outputs it had in the full circuit; they are computed once.
* Candidates are batched along the batch dimension, speculatively. For a receiver with senders
  e1, e2, ... the batch holds the circuit with e1 removed, with e1 and e2 removed, and so on: ACDC
  removes most edges, so this chain is usually what the sequential algorithm does. Reading the
  chain in order reproduces the sequential decisions exactly; at the first edge that is *kept*
  the rest of the chain is stale, and a new chain starts from the true state.
* No hooks: variants differ only in one input, passed to the patched forward directly.
"""

from __future__ import annotations

import math

import torch

from discovery.algorithms.base import AlgorithmConfig, AlgorithmResult, Progress
from discovery.problem import Problem
from discovery.suffix import refresh_after

#: Bounds on variants per batched pass: chains start short (a kept edge wastes the rest of the
#: chain) and double while every edge in them is removed; memory grows with the upper bound.
MIN_CHAIN, MAX_CHAIN = 4, 64


def _chain(column: torch.Tensor, senders: list[int]) -> torch.Tensor:
    """[len(senders), U]: row j is ``column`` with senders[:j + 1] removed."""
    rows = column.repeat(len(senders), 1)
    for j, u in enumerate(senders):
        rows[j:, u] = False
    return rows


def _refresh_if_complete(problem: Problem, outputs: torch.Tensor, mask: torch.Tensor, k: int) -> None:
    """Once every input of a node is decided (a head's q is its last, in reverse order), bring the
    cache up to date: that node and whatever reads it through kept edges."""
    inp = problem.graph.inputs[k]
    if inp.input in ("q", "mlp"):
        with torch.no_grad():
            refresh_after(problem.suffix, outputs, mask, inp.node)


def run(problem: Problem, config: AlgorithmConfig, progress: Progress | None = None, *,
        start_mask: torch.Tensor | None = None) -> AlgorithmResult:
    """``start_mask``: edges to consider (the others start removed); default every edge."""
    graph = problem.graph
    mask = graph.valid().to(problem.ablation.device) if start_mask is None else start_mask.clone()
    scores = torch.full(mask.shape, math.nan)
    outputs = problem.outputs_of(mask)  # valid for every node before the receiver being visited
    current = problem.run(mask).item()  # the loss of the circuit as it stands
    total, done = int(mask.sum()), 0
    for k in reversed(range(graph.n_inputs)):
        # latest sender first, as the reference; edges already out are not revisited
        pending = [u for u in reversed(range(graph.n_avail[k])) if mask[u, k]]
        chain = MIN_CHAIN
        receiver = problem.receiver(k, mask, outputs) if pending else None
        while pending:
            senders = pending[:chain]
            losses = problem.run_variants(receiver, _chain(mask[:, k], senders)).tolist()
            chain = min(2 * chain, MAX_CHAIN)
            for j, u in enumerate(senders):
                # NaN: the receiver reaches nothing, so removing the edge changes nothing.
                delta = 0.0 if losses[j] != losses[j] else losses[j] - current
                scores[u, k] = delta
                pending.pop(0)
                done += 1
                if delta < config.threshold:
                    mask[u, k] = False
                    current = current + delta
                else:
                    chain = MIN_CHAIN  # u stays; the rest of this chain assumed it gone: recompute
                    break
            if progress:
                progress(done, total)
        _refresh_if_complete(problem, outputs, mask, k)
    return AlgorithmResult(mask.cpu(), scores, {"forward_passes": problem.forward_passes})
