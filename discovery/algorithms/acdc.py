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
* Tied inputs (one k/v input per key-value group): a receiver is a tie set; its variants write
  every tied column at once and the suffix recomputes all the heads that own it.
"""

from __future__ import annotations

import math

import torch

from discovery.algorithms.base import AlgorithmConfig, AlgorithmResult, Progress
from discovery.memory import batch_budget, bytes_per_row, halving, rows_that_fit
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


def max_chain(problem: Problem, config: AlgorithmConfig) -> int:
    """Most variants per batched pass: :data:`MAX_CHAIN`, fewer when ``config.max_batch_memory``
    (default: half the available memory) holds fewer variants of ``B`` prompt rows each."""
    budget = batch_budget(config.max_batch_memory, problem.ablation.device)
    variant = bytes_per_row(problem, backward=False) * len(problem.batch)
    return rows_that_fit(budget, variant, MAX_CHAIN)


def _refresh_if_complete(problem: Problem, outputs: torch.Tensor, mask: torch.Tensor,
                         tie: tuple[int, ...]) -> None:
    """Once every input of a node is decided (a head's q is its last, in reverse order), bring the
    cache up to date: that node and whatever reads it through kept edges. A tie set shared by
    several heads refreshes them all at once: the next receivers recompute one head only, so the
    others must be current."""
    graph = problem.graph
    inp = graph.inputs[tie[0]]
    if inp.input in ("q", "mlp") or len(tie) > 1:
        with torch.no_grad():
            refresh_after(problem.suffix, outputs, mask, [graph.inputs[k].node for k in tie])


def run(problem: Problem, config: AlgorithmConfig, progress: Progress | None = None, *,
        start_mask: torch.Tensor | None = None) -> AlgorithmResult:
    """``start_mask``: edges to consider (the others start removed); default every edge."""
    graph = problem.graph
    mask = graph.valid().to(problem.ablation.device) if start_mask is None else start_mask.clone()
    scores = torch.full(mask.shape, math.nan)
    outputs = problem.outputs_of(mask)  # valid for every node before the receiver being visited
    current = problem.run(mask).item()  # the loss of the circuit as it stands
    total, done = int((mask & graph.leaders().to(mask.device)[None]).sum()), 0
    most = max_chain(problem, config)  # variants per pass; lowered if CUDA runs out of memory
    for tie in reversed(graph.ties):
        k, columns = tie[0], list(tie)
        # latest sender first, as the reference; edges already out are not revisited
        pending = [u for u in reversed(range(graph.n_avail[k])) if mask[u, k]]
        chain = min(MIN_CHAIN, most)
        receiver = problem.receiver(k, mask, outputs) if pending else None
        while pending:
            asked = min(chain, len(pending))
            losses = halving(lambda n, rx=receiver, col=mask[:, k], todo=pending:
                             problem.run_variants(rx, _chain(col, todo[:n])), asked).tolist()
            senders = pending[:len(losses)]
            if len(losses) < asked:  # halved after an out-of-memory error: stay at that size
                most = len(losses)
            chain = min(2 * chain, most)
            for j, u in enumerate(senders):
                # NaN: the receiver reaches nothing, so removing the edge changes nothing.
                delta = 0.0 if losses[j] != losses[j] else losses[j] - current
                scores[u, columns] = delta
                pending.pop(0)
                done += 1
                if delta < config.threshold:
                    mask[u, columns] = False
                    current = current + delta
                else:
                    chain = min(MIN_CHAIN, most)  # u stays; the rest of this chain assumed it gone: recompute
                    break
            if progress:
                progress(done, total)
        _refresh_if_complete(problem, outputs, mask, tie)
    return AlgorithmResult(mask.cpu(), scores, {"forward_passes": problem.forward_passes})
