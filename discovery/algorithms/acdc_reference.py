"""ACDC, the plain reference (Conmy et al. 2023, arXiv 2304.14997): one full patched forward pass
per edge, in the paper's sequential order. Slow on purpose and simple enough to trust; the tests
hold the fast implementation (:mod:`discovery.algorithms.acdc`) to its output.

In a graph with tied inputs (one k/v input per key-value group, :class:`discovery.graph.Graph`)
an edge into a tie set is one decision: it is removed from, or kept in, every tied column."""

from __future__ import annotations

import math

import torch

from discovery.algorithms.base import AlgorithmConfig, AlgorithmResult, Progress
from discovery.orders import edge_order
from discovery.problem import Problem


def run(problem: Problem, config: AlgorithmConfig, progress: Progress | None = None) -> AlgorithmResult:
    graph = problem.graph
    mask = graph.valid().to(problem.ablation.device)
    scores = torch.full(mask.shape, math.nan)
    current = problem.run(mask)
    order = edge_order(graph, config.edge_order)  # discovery.orders
    for done, (u, k) in enumerate(order, start=1):
        tie = list(graph.tie_of(k))
        mask[u, tie] = False
        without = problem.run(mask)
        delta = (without - current).item()
        scores[u, tie] = delta
        if delta < config.threshold:
            current = without  # removed for good
        else:
            mask[u, tie] = True
        if progress:
            progress(done, len(order))
    return AlgorithmResult(mask.cpu(), scores, {"forward_passes": problem.forward_passes})
