"""How faithful a circuit is: the task metric, and the metric the search optimised, with
everything outside the circuit ablated.

faithfulness = (m(C) - m(empty)) / (m(full) - m(empty)) (science.md; MIB 2025), under each metric
(:class:`discovery.circuit.Metrics` says what each means). Algorithms do not import this module;
:mod:`discovery.discover` calls it after they finish.
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
    """The full model, the empty circuit and the circuit under the task metric, and under the
    search metric (the same three runs, measured twice)."""

    full: float
    empty: float
    circuit: float
    metric: str
    search_metric: str | None = None
    search_full: float | None = None
    search_empty: float | None = None
    search_circuit: float | None = None

    def as_metrics(self) -> Metrics:
        return Metrics(full=self.full, empty=self.empty, circuit=self.circuit, name=self.metric,
                       search_metric=self.search_metric, search_full=self.search_full,
                       search_empty=self.search_empty, search_circuit=self.search_circuit)

    @property
    def faithfulness(self) -> float | None:
        return self.as_metrics().faithfulness


def metrics_of(problem: Problem, mask: Tensor, metrics: tuple[str, ...]) -> list[float]:
    """Mean of each of ``metrics`` for the circuit ``mask``, from one patched forward pass (KL is
    measured against the full model)."""
    with torch.no_grad():
        logits = patched_forward(problem.weights, problem.graph, problem.batch.clean,
                                 problem.ablation, mask.to(problem.ablation.device)).logits
        return [problem.metric_value(logits, m).item() for m in metrics]


def metric_of(problem: Problem, mask: Tensor, metric: str) -> float:
    """Mean ``metric`` of the circuit ``mask`` (KL is measured against the full model)."""
    return metrics_of(problem, mask, (metric,))[0]


def evaluate(problem: Problem, mask: Tensor, metric: str | None = None) -> Evaluation:
    """The task metric (default: the task's own) and the problem's search metric
    (``problem.metric``) of the full model, the empty circuit and ``mask``."""
    metric = metric or problem.batch.data.metric
    both = (metric, problem.metric)
    valid = problem.graph.valid().to(mask.device)
    full, empty, circuit = (metrics_of(problem, m, both)
                            for m in (valid, torch.zeros_like(valid), mask & valid))
    return Evaluation(full=full[0], empty=empty[0], circuit=circuit[0], metric=metric,
                      search_metric=problem.metric, search_full=full[1], search_empty=empty[1],
                      search_circuit=circuit[1])


def edge_roc_auc(scores: dict[str, float], truth: set[str]) -> float:
    """ROC AUC of ranking edges by |score| against the true edge set (ties count half): the
    probability that a random true edge outranks a random false one (Conmy et al. 2023, sec. 4)."""
    positives = [abs(v) for k, v in scores.items() if k in truth]
    negatives = [abs(v) for k, v in scores.items() if k not in truth]
    if not positives or not negatives:
        raise ValueError("ROC AUC needs both true and false edges among the scored ones")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))
