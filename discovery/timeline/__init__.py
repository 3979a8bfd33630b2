"""Circuits forming during training (issue 14, library): per-checkpoint circuits of a run, their
overlap with the final circuit, stabilisation steps, induction diagnostics and task pairs."""

from discovery.timeline.analysis import (
    change_point,
    jaccard,
    moved_components,
    overlap_over_time,
    stabilisation_step,
)
from discovery.timeline.run import Checkpoint, Run, read_run
from discovery.timeline.timeline import Row, Timeline, pair_analysis, timeline

__all__ = ["Checkpoint", "Row", "Run", "Timeline", "change_point", "jaccard", "moved_components",
           "overlap_over_time", "pair_analysis", "read_run", "stabilisation_step", "timeline"]
