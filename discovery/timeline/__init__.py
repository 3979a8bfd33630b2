"""Circuits forming during training (issue 14): per-checkpoint circuits of a run, their overlap
with the final circuit, stabilisation steps, induction diagnostics and task pairs.

The data types and analyses import without torch (the graph store and the API use them);
:func:`timeline` and :func:`checkpoint_circuits`, which discover circuits, load torch on first use."""

from typing import Any

from discovery.timeline.analysis import (
    change_point,
    jaccard,
    moved_components,
    overlap_over_time,
    stabilisation_step,
)
from discovery.timeline.result import Row, Timeline, TimelineParams, assemble, pair_analysis
from discovery.timeline.run import Checkpoint, Run, read_run

_TORCH = ("timeline", "checkpoint_circuits")

__all__ = ["Checkpoint", "Row", "Run", "Timeline", "TimelineParams", "assemble", "change_point",
           "checkpoint_circuits", "jaccard", "moved_components", "overlap_over_time", "pair_analysis",
           "read_run", "stabilisation_step", "timeline"]


def __getattr__(name: str) -> Any:
    if name in _TORCH:  # imported on first use: `from discovery.timeline import Timeline` stays torch-free
        import importlib

        module = importlib.import_module("discovery.timeline.checkpoints")

        return getattr(module, name)
    raise AttributeError(f"module 'discovery.timeline' has no attribute {name!r}")
