"""What every discovery algorithm shares: its configuration, its result, its signature."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor

from discovery.orders import check_order
from discovery.problem import Problem

#: progress(done, total): edges (or steps) done so far.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class AlgorithmConfig:
    """Knobs shared by the algorithms; each reads the ones it needs."""

    threshold: float = 0.01  # ACDC's tau; for attribution: minimum |score| kept
    top_n: int | None = None  # attribution: keep the n best edges instead of thresholding
    ig_steps: int = 5  # EAP-IG integration steps
    candidates: int | None = None  # hybrid: how many attributed edges ACDC verifies
    #: bytes one batched pass may use (EAP-IG's steps*B rows, ACDC's variants); None: half the
    #: memory available at run time (discovery.memory). Batches are split to fit.
    max_batch_memory: int | None = None
    #: ACDC: the order edges are visited in (discovery.orders: ours, auto-circuit, random:SEED)
    edge_order: str = "ours"

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0 (got {self.threshold}); try 0.01")
        if self.top_n is not None and self.top_n < 1:
            raise ValueError(f"top_n must be >= 1 (got {self.top_n})")
        if self.ig_steps < 1:
            raise ValueError(f"ig_steps must be >= 1 (got {self.ig_steps})")
        check_order(self.edge_order)
        if self.max_batch_memory is not None and self.max_batch_memory < 1:
            raise ValueError(f"max_batch_memory must be >= 1 byte or None (got {self.max_batch_memory}); "
                             "try 2e9 for 2 GB, or leave it unset to use half the available memory")


@dataclass
class AlgorithmResult:
    """Which edges are in the circuit and every edge's score, as ``[U, I]`` tensors."""

    mask: Tensor  # bool
    scores: Tensor  # float; NaN where an edge was not scored
    stats: dict[str, float] = field(default_factory=dict)


class Algorithm(Protocol):
    def __call__(self, problem: Problem, config: AlgorithmConfig,
                 progress: Progress | None = None) -> AlgorithmResult: ...
