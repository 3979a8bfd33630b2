"""Attribute, then verify: rank edges by EAP-IG, keep the best ``candidates`` (default: three times
``top_n``, else every edge above a tenth of the threshold), and let fast ACDC decide among those with
real patching. The other edges start out removed. Fast and faithful (EAP-IG paper's advice)."""

from __future__ import annotations

import math

import torch

from discovery.algorithms import acdc
from discovery.algorithms.attribution import attribute
from discovery.algorithms.base import AlgorithmConfig, AlgorithmResult, Progress
from discovery.problem import Problem


def run(problem: Problem, config: AlgorithmConfig, progress: Progress | None = None) -> AlgorithmResult:
    ranked = attribute(problem, config, steps=config.ig_steps).scores
    graph = problem.graph  # tied inputs (kv groups): each graph edge ranked once, at its first column
    magnitude = ranked.masked_fill(~graph.leaders()[None], math.nan).abs().nan_to_num(-1.0).flatten()
    n = config.candidates or (3 * config.top_n if config.top_n else int((magnitude >= config.threshold / 10).sum()))
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    keep[magnitude.topk(max(1, min(n, int((magnitude >= 0).sum())))).indices] = True
    start = graph.tie_mask(keep.view_as(ranked)) & graph.valid()
    verified = acdc.run(problem, config, progress, start_mask=start.to(problem.ablation.device))
    scores = torch.where(torch.isnan(verified.scores), ranked, verified.scores)
    verified.stats["candidates"] = float(start.sum())
    return AlgorithmResult(verified.mask, scores.masked_fill(~problem.graph.valid(), math.nan),
                           verified.stats)
