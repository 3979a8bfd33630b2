"""EAP-IG (Hanna et al. 2024): EAP with integrated gradients along the path from the corrupted to
the clean input embeddings (``ig_steps`` points, batched), markedly more faithful than EAP."""

from __future__ import annotations

from discovery.algorithms.attribution import attribute
from discovery.algorithms.base import AlgorithmConfig, AlgorithmResult, Progress
from discovery.problem import Problem


def run(problem: Problem, config: AlgorithmConfig, progress: Progress | None = None) -> AlgorithmResult:
    result = attribute(problem, config, steps=config.ig_steps)
    if progress:
        progress(1, 1)
    return result
