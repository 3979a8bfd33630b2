"""EAP, edge attribution patching (Syed et al. 2023): every edge's score from one forward and one
backward pass at the clean prompts."""

from __future__ import annotations

from discovery.algorithms.attribution import attribute
from discovery.algorithms.base import AlgorithmConfig, AlgorithmResult, Progress
from discovery.problem import Problem


def run(problem: Problem, config: AlgorithmConfig, progress: Progress | None = None) -> AlgorithmResult:
    result = attribute(problem, config, steps=1)
    if progress:
        progress(1, 1)
    return result
