"""ACDC, the plain reference (Conmy et al. 2023, arXiv 2304.14997): one full patched forward pass
per edge, in the paper's sequential order. Slow on purpose and simple enough to trust; the tests
hold the fast implementation (:mod:`discovery.algorithms.acdc`) to its output."""

from __future__ import annotations

import math

import torch

from discovery.algorithms.base import AlgorithmConfig, AlgorithmResult, Progress
from discovery.problem import Problem


def run(problem: Problem, config: AlgorithmConfig, progress: Progress | None = None) -> AlgorithmResult:
    graph = problem.graph
    mask = graph.valid().to(problem.ablation.device)
    scores = torch.full(mask.shape, math.nan)
    current = problem.run(mask)
    order = graph.edges_in_order()
    for done, (u, k) in enumerate(order, start=1):
        mask[u, k] = False
        without = problem.run(mask)
        delta = (without - current).item()
        scores[u, k] = delta
        if delta < config.threshold:
            current = without  # removed for good
        else:
            mask[u, k] = True
        if progress:
            progress(done, len(order))
    return AlgorithmResult(mask.cpu(), scores, {"forward_passes": problem.forward_passes})
