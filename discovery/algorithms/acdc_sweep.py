"""ACDC at a whole grid of thresholds in one search: the circuit of every threshold, each the one a
separate fast-ACDC run (:mod:`discovery.algorithms.acdc`) at that threshold finds.

Runs at different thresholds make the same decisions until the first edge whose score lies between
two of them; until then they are one search. So the sweep keeps *branches*: a branch is the set of
thresholds whose runs are still in the same state (mask, cached node outputs, current loss). An
edge's score is measured once per branch; where it splits the branch (removed for the larger
thresholds, kept for the smaller) the branch forks, and both halves go on sharing the receiver's
plan and caches (:class:`discovery.suffix.Receiver` stays valid while only the receiver's column
differs, which is exactly how two halves of a fork differ). Branches that reach the same state again
at the end of a receiver merge. Receivers that cannot reach the logits in a branch cost nothing, as
in a single run, and high thresholds prune most of the network early, so their branches are cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from discovery.algorithms.acdc import MIN_CHAIN, _chain, _refresh_if_complete, max_chain
from discovery.algorithms.base import AlgorithmConfig, AlgorithmResult, Progress
from discovery.memory import halving
from discovery.problem import Problem
from discovery.suffix import NodeCache, Receiver


@dataclass
class _Branch:
    """Thresholds (indices into the sorted grid) whose runs are still in one state."""

    members: list[int]
    mask: Tensor  # [U, I] bool
    cache: NodeCache  # node outputs: valid for every node before the receiver being visited
    current: float  # the loss of the circuit as it stands


@dataclass
class _Visit:
    """One branch at one receiver: the senders still to decide and the receiver it reads."""

    branch: _Branch
    receiver: Receiver | None
    pending: list[int]
    chain: int


def check_thresholds(thresholds: Sequence[float]) -> list[float]:
    """The grid, validated: at least one, each > 0 and finite, no repeats (the error names the
    offending value)."""
    grid = [float(t) for t in thresholds]
    if not grid:
        raise ValueError("thresholds: give at least one, e.g. 0.001,0.01,0.1")
    for t in grid:
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"thresholds: each must be > 0 and finite, got {t}")
    if len(set(grid)) != len(grid):
        raise ValueError(f"thresholds: {grid} repeats a value; give each threshold once")
    return grid


def sweep(problem: Problem, thresholds: Sequence[float], config: AlgorithmConfig | None = None,
          progress: Progress | None = None, *, start_mask: Tensor | None = None) -> list[AlgorithmResult]:
    """One :class:`AlgorithmResult` per threshold, in the order given. ``config``'s own threshold
    is ignored; ``start_mask`` as in :func:`discovery.algorithms.acdc.run`. Each result's stats
    hold the sweep's totals (forward passes, branches) and its own branch's share."""
    grid = check_thresholds(thresholds)
    config = config or AlgorithmConfig()
    if config.edge_order != "ours":
        raise ValueError(f"edge_order: a threshold sweep visits edges in our order only, got "
                         f"{config.edge_order!r}; run each threshold separately for another order")
    graph = problem.graph
    mask = graph.valid().to(problem.ablation.device) if start_mask is None else start_mask.clone()
    order = sorted(range(len(grid)), key=lambda i: grid[i])  # members ascend: a split is a cut
    cache = NodeCache(problem.outputs_of(mask), problem.ablation)
    branches = [_Branch(order, mask, cache, problem.run_cached(mask, cache).item())]
    scores = torch.full((len(grid), *mask.shape), math.nan)
    most = max_chain(problem, config)
    leaders = graph.leaders().to(mask.device)
    total, done, forks, merges = int((mask & leaders[None]).sum()), 0, 0, 0
    for tie in reversed(graph.ties):
        k = tie[0]
        visits = [_start(problem, b, k) for b in branches]
        while visits:
            visit = visits.pop()
            new, most = _visit(problem, visit, grid, scores, list(tie), most)
            branches += [f.branch for f in new]
            visits += new
            forks += len(new)
        for b in branches:
            _refresh_if_complete(problem, b.cache, b.mask, tie)
        branches, merged = _merge(branches)
        merges += merged
        done += int((mask[:, k] & leaders[k]).sum()) if start_mask is not None else graph.n_avail[k]
        if progress:
            progress(min(done, total), total)
    stats = {"forward_passes": problem.forward_passes, "branches": 1 + forks, "merges": merges}
    return _results(branches, grid, scores, stats)


def _start(problem: Problem, branch: _Branch, k: int) -> _Visit:
    # latest sender first, as a single run; edges already out are not revisited
    pending = [u for u in reversed(range(problem.graph.n_avail[k])) if branch.mask[u, k]]
    receiver = problem.receiver(k, branch.mask, branch.cache) if pending else None
    return _Visit(branch, receiver, pending, MIN_CHAIN)


def _visit(problem: Problem, visit: _Visit, grid: list[float], scores: Tensor, columns: list[int],
           most: int) -> tuple[list[_Visit], int]:
    """Decide the visit's senders; returns the forks it made (each: the thresholds that kept an
    edge the others removed, to be visited from the next sender on) and the chain bound."""
    b, k = visit.branch, columns[0]
    forks: list[_Visit] = []
    while visit.pending:
        chain = min(visit.chain, most)
        asked = min(chain, len(visit.pending))
        losses = halving(lambda n, rx=visit.receiver, col=b.mask[:, k], todo=visit.pending:
                         problem.run_variants(rx, _chain(col, todo[:n])), asked).tolist()
        if len(losses) < asked:  # halved after an out-of-memory error: stay at that size
            most = len(losses)
        visit.chain = min(2 * chain, most)
        for j, u in enumerate(visit.pending[:len(losses)]):
            # NaN: the receiver reaches nothing, so removing the edge changes nothing.
            delta = 0.0 if losses[j] != losses[j] else losses[j] - b.current
            scores[b.members, u, columns] = delta
            visit.pending.pop(0)
            cut = sum(1 for i in b.members if not delta < grid[i])  # members ascend: the first `cut` keep u
            if cut == len(b.members):
                visit.chain = MIN_CHAIN  # u stays; the rest of this chain assumed it gone: recompute
                break
            if cut:  # the smaller thresholds keep u: they fork off, sharing the receiver
                kept = _Branch(b.members[:cut], b.mask.clone(), b.cache.clone(), b.current)
                forks.append(_Visit(kept, visit.receiver, list(visit.pending), MIN_CHAIN))
                b.members = b.members[cut:]
            b.mask[u, columns] = False  # the chain assumed this: it stays valid
            b.current = b.current + delta
    return forks, most


def _merge(branches: list[_Branch]) -> tuple[list[_Branch], int]:
    """Branches in the same state (mask, loss and cached outputs all equal) become one: from here
    their runs cannot differ."""
    kept: list[_Branch] = []
    merged = 0
    for b in branches:
        same = next((o for o in kept if o.current == b.current and torch.equal(o.mask, b.mask)
                     and torch.equal(o.cache.outputs, b.cache.outputs)), None)
        if same is None:
            kept.append(b)
        else:
            same.members = sorted(same.members + b.members)
            merged += 1
    return kept, merged


def _results(branches: list[_Branch], grid: list[float], scores: Tensor,
             stats: dict[str, float]) -> list[AlgorithmResult]:
    by_member = {i: b for b in branches for i in b.members}
    return [AlgorithmResult(by_member[i].mask.cpu(), scores[i],
                            {**stats, "branch_thresholds": float(len(by_member[i].members))})
            for i in range(len(grid))]
