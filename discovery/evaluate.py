"""How faithful a circuit is: the task metric with everything outside it ablated.

faithfulness = (m(C) - m(empty)) / (m(full) - m(empty)) (science.md; MIB 2025). Algorithms do not
import this module; :mod:`discovery.discover` calls it after they finish.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from discovery.circuit import Metrics
from discovery.patching import patched_forward
from discovery.problem import Problem


@dataclass(frozen=True)
class Evaluation:
    full: float
    empty: float
    circuit: float
    metric: str

    def as_metrics(self) -> Metrics:
        return Metrics(full=self.full, empty=self.empty, circuit=self.circuit, name=self.metric)

    @property
    def faithfulness(self) -> float | None:
        return self.as_metrics().faithfulness


def metric_of(problem: Problem, mask: Tensor, metric: str) -> float:
    """Mean ``metric`` of the circuit ``mask`` (KL is measured against the full model)."""
    with torch.no_grad():
        logits = patched_forward(problem.weights, problem.graph, problem.batch.clean,
                                 problem.ablation, mask.to(problem.ablation.device)).logits
    return problem.metric_value(logits, metric).item()


def evaluate(problem: Problem, mask: Tensor, metric: str | None = None) -> Evaluation:
    """The task metric (default: the task's own) of the full model, the empty circuit and ``mask``."""
    metric = metric or problem.batch.data.metric
    valid = problem.graph.valid().to(mask.device)
    return Evaluation(
        full=metric_of(problem, valid, metric),
        empty=metric_of(problem, torch.zeros_like(valid), metric),
        circuit=metric_of(problem, mask & valid, metric),
        metric=metric,
    )


def edge_roc_auc(scores: dict[str, float], truth: set[str]) -> float:
    """ROC AUC of ranking edges by |score| against the true edge set (ties count half): the
    probability that a random true edge outranks a random false one (Conmy et al. 2023, sec. 4)."""
    positives = [abs(v) for k, v in scores.items() if k in truth]
    negatives = [abs(v) for k, v in scores.items() if k not in truth]
    if not positives or not negatives:
        raise ValueError("ROC AUC needs both true and false edges among the scored ones")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))
