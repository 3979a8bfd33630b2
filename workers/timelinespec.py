"""What a timeline job asks for, validated once at the edge (the API, the CLI) and carried as JSON
to the workers; and the spec of one checkpoint's share of it, which the timeline job hands to the
workers as a job of its own (:mod:`workers.fanout`). Imports no torch: the run is checked through
its ``run.json`` (:func:`discovery.timeline.read_run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from discovery.catalog import METHODS, shipped_runs
from discovery.tasks import TASKS
from discovery.tasks.base import METRICS
from discovery.timeline import Run, TimelineParams, read_run
from workers.jobspec import MAX_SEED, MAX_THRESHOLD, Device, _echo, one_of, small_enough

#: At most this many tasks per timeline, and checkpoints per run (each costs a discovery per task).
MAX_TASKS = 8
MAX_CHECKPOINTS = 64


class TimelineSpec(BaseModel):
    """A formation timeline: each of ``tasks``' circuits discovered at every checkpoint of the run
    ``run`` with the same method and prompts, then analysed (:mod:`discovery.timeline`)."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(max_length=1000, description="a shipped run's name (GET /v1/timelines/runs) or the "
                                                  "path of a run directory (`circuits train --checkpoints N`)")
    tasks: list[str] = Field(description=f"1 to {MAX_TASKS} distinct built-in task names (GET /v1/tasks)")
    method: str = Field("acdc", max_length=40, description=f"discovery method, one of {', '.join(METHODS)}")
    threshold: float = Field(0.01, gt=0, le=MAX_THRESHOLD, allow_inf_nan=False)
    top_n: int | None = Field(None, ge=1, le=100_000, description="keep the n best edges (EAP methods)")
    metric: str | None = Field(None, max_length=40, description=f"one of {', '.join(METRICS)}")
    n_prompts: int = Field(50, ge=2, le=500)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    level: float = Field(0.8, gt=0, le=1, description="edge Jaccard to the final circuit counted as stable")
    induction: bool | None = Field(None, description="head scores and in-context loss per checkpoint "
                                                     "(default: when induction is among the tasks)")
    device: Device = "auto"

    @model_validator(mode="before")
    @classmethod
    def _small_enough(cls, data: Any) -> Any:
        return small_enough(data, "timeline spec")

    @field_validator("run")
    @classmethod
    def _readable_run(cls, value: str) -> str:
        """A shipped run's name or a run directory, resolved to an absolute path (the workers
        read the same filesystem); its run.json and checkpoints are checked here."""
        try:
            path = shipped_runs().get(value) or Path(value).expanduser()
            readable = (path / "run.json").is_file()
        except (OSError, ValueError, RuntimeError):  # too long a name, a NUL byte, ~unknown-user
            readable = False
        if not readable:
            names = ", ".join(shipped_runs()) or "none shipped"
            raise ValueError(f"{_echo(value)} is neither a shipped run ({names}) nor a directory with a "
                             "run.json; train one with `circuits train --recipe R --out DIR --checkpoints N`")
        run = read_run(path)  # ValueError naming the run.json field and the fix
        if len(run.checkpoints) > MAX_CHECKPOINTS:
            raise ValueError(f"the run has {len(run.checkpoints)} checkpoints; a timeline takes at most "
                             f"{MAX_CHECKPOINTS}: train with fewer (--checkpoints N)")
        return str(path.resolve())

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: list[str]) -> list[str]:
        if not 1 <= len(value) <= MAX_TASKS:
            raise ValueError(f"give 1 to {MAX_TASKS} tasks, got {len(value)}")
        for i, task in enumerate(value):
            if task not in TASKS:
                raise ValueError(f"tasks[{i}]: unknown task {_echo(task)}; use one of {', '.join(TASKS)}")
        if len(set(value)) != len(value):
            raise ValueError("tasks: each task at most once")
        return value

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return one_of(value, METHODS, "method")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return one_of(value, METRICS, "metric")

    def params(self) -> TimelineParams:
        return TimelineParams(method=self.method, threshold=self.threshold, top_n=self.top_n,
                              metric=self.metric, n_prompts=self.n_prompts, seed=self.seed,
                              level=self.level, induction=self.induction)

    def read(self) -> Run:
        return read_run(self.run)

    def queue(self, auto_queue: str) -> str:
        return {"cpu": "cpu", "cuda": "gpu"}.get(self.device, auto_queue)


class CheckpointSpec(BaseModel):
    """One checkpoint's share of timeline job ``parent``: its circuits of every task (and the
    induction diagnostics), returned to the parent through the job record, stored by the parent."""

    model_config = ConfigDict(extra="forbid")

    parent: str = Field(max_length=100)
    step: int = Field(ge=0)
    path: str = Field(max_length=1000, description="the checkpoint's model directory")
    timeline: TimelineSpec

    def queue(self, auto_queue: str) -> str:
        return self.timeline.queue(auto_queue)
