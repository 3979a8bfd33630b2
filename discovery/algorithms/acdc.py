"""ACDC, the fast implementation the product uses. Same decisions as the reference
(:mod:`discovery.algorithms.acdc_reference`), found with far fewer, cheaper passes:

* Only the suffix is recomputed. Receivers are visited in reverse topological order (by default;
  any :mod:`discovery.orders` order works), so every node before the current receiver keeps the
  outputs it had in the full circuit; they are computed once, and a node is recomputed (with what
  reads it) only once its inputs changed and a visit to another node needs it current.
* Candidates are batched along the batch dimension, speculatively. For a receiver with senders
  e1, e2, ... the batch holds the circuit with e1 removed, with e1 and e2 removed, and so on: ACDC
  removes most edges, so this chain is usually what the sequential algorithm does. Reading the
  chain in order reproduces the sequential decisions exactly; at the first edge that is *kept*
  the rest of the chain is stale, and a new chain starts from the true state.
* One receiver per node: the consecutive visits to one node's inputs (a head's v, k and q; a tie
  set's heads) share its plan and caches, and a chain runs on across them, so a head of the
  first layer (one sender per input) costs one pass, not three.
* No hooks: variants differ only in their receiver inputs, passed to the suffix pass directly.
* Tied inputs (one k/v input per key-value group): a receiver is a tie set; its variants write
  every tied column at once and the suffix recomputes all the heads that own it.
"""

from __future__ import annotations

import math

import torch

from discovery.algorithms.base import AlgorithmConfig, AlgorithmResult, Progress
from discovery.memory import batch_budget, bytes_per_row, halving, rows_that_fit
from discovery.orders import edge_order
from discovery.problem import Problem
from discovery.suffix import NodeCache, refresh_after

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


def _refresh_if_complete(problem: Problem, cache: NodeCache, mask: torch.Tensor,
                         tie: tuple[int, ...]) -> None:
    """Once every input of a node is decided (a head's q is its last, in reverse order), bring the
    cache up to date: that node and whatever reads it through kept edges. A tie set shared by
    several heads refreshes them all at once: the next receivers recompute one head only, so the
    others must be current."""
    graph = problem.graph
    inp = graph.inputs[tie[0]]
    if inp.input in ("q", "mlp") or len(tie) > 1:
        with torch.no_grad():
            refresh_after(problem.suffix, cache, mask, [graph.inputs[k].node for k in tie])


def _visits(order: list[tuple[int, int]]) -> list[tuple[int, list[int]]]:
    """``order``'s edges grouped into visits: each run of consecutive edges into one receiver
    (a tie set's first input) becomes ``(receiver, senders in order)``."""
    visits: list[tuple[int, list[int]]] = []
    for u, k in order:
        if visits and visits[-1][0] == k:
            visits[-1][1].append(u)
        else:
            visits.append((k, [u]))
    return visits


def _refresh(problem: Problem, cache: NodeCache, mask: torch.Tensor, stale: set[int]) -> None:
    """Recompute the cached outputs of the ``stale`` nodes and whatever reads them."""
    with torch.no_grad():
        refresh_after(problem.suffix, cache, mask, [problem.graph.upstream[u] for u in sorted(stale)])


def _by_owner(graph, visits: list[tuple[int, list[int]]]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Consecutive visits whose receivers have the same owners (a head's v, k and q, a tie set's
    heads) as one: ``(ks, pairs)``, the receiver inputs and the edges in visiting order as
    (index into ``ks``, sender). One receiver plan serves them all, so a chain of variants runs
    across them."""
    groups: list[tuple[list[int], list[tuple[int, int]]]] = []
    owners_of = lambda k: tuple(sorted(graph.owner[i] for i in graph.tie_of(k)))  # noqa: E731
    for k, senders in visits:
        if not (groups and owners_of(groups[-1][0][0]) == owners_of(k) and graph.owner[k] >= 0):
            groups.append(([], []))
        ks, pairs = groups[-1]
        if k not in ks:  # other orders may come back to an input after another one
            ks.append(k)
        pairs += [(ks.index(k), u) for u in senders]
    return groups


def _pair_chain(mask: torch.Tensor, ks: list[int], pairs: list[tuple[int, int]]) -> torch.Tensor:
    """``[len(pairs), U, len(ks)]``: row j is the receiver columns ``mask[:, ks]`` with the edges
    ``pairs[:j + 1]`` (slot, sender) removed."""
    rows = mask[:, ks].repeat(len(pairs), 1, 1)
    for j, (s, u) in enumerate(pairs):
        rows[j:, u, s] = False
    return rows


def run(problem: Problem, config: AlgorithmConfig, progress: Progress | None = None, *,
        start_mask: torch.Tensor | None = None) -> AlgorithmResult:
    """``start_mask``: edges to consider (the others start removed); default every edge. Edges are
    visited in ``config.edge_order`` (:mod:`discovery.orders`)."""
    graph = problem.graph
    mask = graph.valid().to(problem.ablation.device) if start_mask is None else start_mask.clone()
    scores = torch.full(mask.shape, math.nan)
    cache = NodeCache(problem.outputs_of(mask), problem.ablation)  # valid outside ``stale``
    current = problem.run_cached(mask, cache).item()  # the loss of the circuit as it stands
    groups = _by_owner(graph, _visits(edge_order(graph, config.edge_order)))
    total = sum(1 for ks, pairs in groups for s, u in pairs if mask[u, ks[s]])
    done = 0
    most = max_chain(problem, config)  # variants per pass; lowered if CUDA runs out of memory
    # Nodes whose inputs changed since their output was cached. A visit recomputes its own
    # receiver's owners (and what they reach), so their staleness may wait; any other stale
    # node is refreshed first. In our order that is once per node, after its last input.
    stale: set[int] = set()
    for ks, pairs in groups:
        tie = graph.tie_of(ks[0])
        owners = {graph.owner[i] for i in tie} - {-1}
        pending = [(s, u) for s, u in pairs if mask[u, ks[s]]]  # edges already out are not revisited
        if not pending:
            continue
        if stale - owners:
            _refresh(problem, cache, mask, stale)
            stale = set()
        chain = min(MIN_CHAIN, most)
        receiver = problem.receiver(ks, mask, cache)
        while pending:
            asked = min(chain, len(pending))
            losses = halving(lambda n, rx=receiver, ks=ks, todo=pending:
                             problem.run_variants(rx, _pair_chain(mask, ks, todo[:n])), asked).tolist()
            if len(losses) < asked:  # halved after an out-of-memory error: stay at that size
                most = len(losses)
            chain = min(2 * chain, most)
            for j, (s, u) in enumerate(pending[:len(losses)]):
                # NaN: the receiver reaches nothing, so removing the edge changes nothing.
                delta = 0.0 if losses[j] != losses[j] else losses[j] - current
                columns = list(graph.tie_of(ks[s]))
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
        stale |= owners
        if len(tie) > 1:  # a tie set's owners: the next receivers recompute one head only
            _refresh(problem, cache, mask, stale)
            stale = set()
    return AlgorithmResult(mask.cpu(), scores, {"forward_passes": problem.forward_passes})
