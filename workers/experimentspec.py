"""What a competition-experiment job asks for, validated once at the edge (the API, the CLI) and
carried as JSON to the worker. Imports no torch: conflict prompts are checked against the model's
``tokenizer.json`` with the ``tokenizers`` library.

What the API checks beyond this model (it needs the graph store): that given circuit ids exist, are
of ``model`` and are circuits of the tasks named (``api.routers.experiments``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from discovery.catalog import ABLATIONS, METHODS, shipped_models
from discovery.experiments.result import pair_key
from discovery.tasks import TASKS
from discovery.tasks.base import METRICS, TaskData, TaskValidationError
from discovery.tasks.custom import custom_name, parse_custom_task
from workers.jobspec import MAX_SEED, MAX_THRESHOLD, Device, _echo, one_of, small_enough

#: At most this many tasks in one experiment (pairs grow as n^2, controls with them).
MAX_TASKS = 6
#: At most this many alphas in a dose-response grid (each costs a pass per task and pair).
MAX_ALPHAS = 12
MAX_ALPHA = 100.0
DEFAULT_ALPHAS = (0.0, 0.5, 1.0, 1.5, 2.0, 4.0)


class ExperimentSpec(BaseModel):
    """One competition experiment over ``tasks`` (built-in names or custom task objects) of one
    model, on circuits given by id (``circuits``, in the order of ``tasks``) or discovered by the
    job (``method``, ``threshold``, ``metric``, ``ig_steps``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=200, description="a shipped model name (GET /v1/models)")
    tasks: list[str | dict[str, Any]] = Field(
        description=f"2 to {MAX_TASKS} distinct tasks: built-in names (GET /v1/tasks) or custom task "
                    "objects {name, metric, pairs}")
    circuits: list[str] | None = Field(
        None, description="stored circuit ids, one per task in the same order; omitted: the job "
                          "discovers the circuits (and stores them)")
    ablation: str = Field("corrupt", max_length=40, description=f"one of {', '.join(ABLATIONS)}")
    n_prompts: int = Field(50, ge=2, le=500, description="prompt pairs drawn per built-in task")
    n_controls: int = Field(20, ge=20, le=500, description="random component sets per ablation (>= 20)")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    alphas: list[float] = Field(list(DEFAULT_ALPHAS),
                                description=f"dose-response scales: 2 to {MAX_ALPHAS} distinct finite "
                                            f"values in [0, {MAX_ALPHA:g}], including 1 (the model as is)")
    n_conflicts: int = Field(50, ge=2, le=2000, description="conflict prompts per pair (built-in generators)")
    conflicts: dict[str, list[Any]] | None = Field(
        None, description='custom conflict prompts per pair "a|b": [{"prompt", "answers": {a: token, '
                          "b: token}}]; pairs without them use the built-in generators")
    method: str = Field("acdc", max_length=40, description=f"discovery method, one of {', '.join(METHODS)}")
    threshold: float = Field(0.01, gt=0, le=MAX_THRESHOLD, allow_inf_nan=False)
    metric: str | None = Field(None, max_length=40, description=f"discovery metric, one of {', '.join(METRICS)}")
    ig_steps: int = Field(5, ge=1, le=200)
    device: Device = "auto"

    @model_validator(mode="before")
    @classmethod
    def _small_enough(cls, data: Any) -> Any:
        return small_enough(data, "experiment spec")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in shipped_models():
            raise ValueError(f"unknown model {_echo(value)}; use one of {', '.join(shipped_models())}")
        archs = json.loads((shipped_models()[value] / "config.json").read_text()).get("architectures") or []
        if archs and "GPT2LMHeadModel" not in archs:  # direct attribution reads GPT-2's final LayerNorm
            raise ValueError(f"model {value} is {', '.join(archs)}; competition experiments support "
                             "GPT-2-architecture models for now (discover its circuits with POST /v1/jobs)")
        return value

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, value: list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
        if len(value) < 2:
            raise ValueError(f"{len(value)} task given; an experiment sets at least two tasks' circuits "
                             "against each other: give two or more, e.g. [\"ioi\", \"induction\"]")
        if len(value) > MAX_TASKS:
            raise ValueError(f"{len(value)} tasks; at most {MAX_TASKS} per experiment")
        names = []
        for i, task in enumerate(value):
            if isinstance(task, str):
                if task not in TASKS:
                    raise ValueError(f"tasks[{i}]: unknown task {_echo(task)}; use one of "
                                     f"{', '.join(TASKS)} or a custom task object")
                names.append(task)
            else:
                try:
                    names.append(parse_custom_task(task).name)
                except TaskValidationError as exc:
                    raise ValueError(f"tasks[{i}]: custom task: {exc}") from None
        if len(set(names)) < len(names):
            raise ValueError(f"tasks repeat ({', '.join(names)}); give each task once")
        return value

    @field_validator("ablation")
    @classmethod
    def _ablation(cls, value: str) -> str:
        return one_of(value, ABLATIONS, "ablation")

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        return one_of(value, METHODS, "method")

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str | None) -> str | None:
        return one_of(value, METRICS, "metric")

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, value: list[float]) -> list[float]:
        if len(value) > MAX_ALPHAS:
            raise ValueError(f"{len(value)} alphas; give at most {MAX_ALPHAS} (e.g. 0,0.5,1,1.5,2,4)")
        if len(value) < 2:
            raise ValueError("give at least two alphas, one of them 1 (e.g. 0,0.5,1,1.5,2,4)")
        bad = [a for a in value if not (math.isfinite(a) and 0 <= a <= MAX_ALPHA)]
        if bad:
            raise ValueError(f"alpha {bad[0]!r} is out of range; each must be finite, in [0, {MAX_ALPHA:g}]")
        if len(set(value)) < len(value):
            raise ValueError("alphas repeat; give each value once")
        if 1.0 not in value:
            raise ValueError("the alphas must include 1 (the unscaled model), the point every change "
                             "is measured from")
        return sorted(value)

    @field_validator("circuits")
    @classmethod
    def _circuit_ids(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for i, cid in enumerate(value):
            if not isinstance(cid, str) or not cid.strip() or len(cid) > 100:
                raise ValueError(f"circuits[{i}]: give a stored circuit id (GET /v1/circuits)")
        if len(set(value)) < len(value):
            raise ValueError("circuits repeat; give one circuit per task")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        if self.circuits is not None and len(self.circuits) != len(self.tasks):
            raise ValueError(f"circuits: {len(self.circuits)} ids for {len(self.tasks)} tasks; give one "
                             "circuit per task, in the order of tasks (or none to discover them)")
        self._check_conflicts()
        return self

    def _check_conflicts(self) -> None:
        from discovery.experiments.conflicts import check_tokenizes, has_generator, parse_conflicts

        names, given = self.task_names, dict(self.conflicts or {})
        pairs = [pair_key(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        for key in given:
            if key not in pairs:
                raise ValueError(f"conflicts: {_echo(key)} is not a pair of this experiment's tasks; "
                                 f"use one of {', '.join(pairs)}")
        directory = shipped_models()[self.model]
        n_ctx = json.loads((directory / "config.json").read_text()).get("n_positions", 1024)
        for key in pairs:
            a, b = key.split("|")
            if key in given:
                prompts = parse_conflicts(given[key], (a, b), where=f"conflicts.{key}")
                check_tokenizes(prompts, directory / "tokenizer.json", n_ctx, where=f"conflicts.{key}")
            elif not has_generator(a, b):
                raise ValueError(f"conflicts: no built-in conflict prompts for {a} x {b}; give custom "
                                 f'ones as conflicts["{key}"] = [{{"prompt", "answers": {{"{a}": ..., '
                                 f'"{b}": ...}}}}]')

    @property
    def task_names(self) -> list[str]:
        """Built-in names, and ``custom:<name>`` for custom tasks (their own namespace)."""
        return [t if isinstance(t, str) else custom_name(t.get("name")) for t in self.tasks]

    def custom_tasks(self) -> dict[str, TaskData]:
        """The inline custom tasks' pairs by task name."""
        return {custom_name(t.get("name")): parse_custom_task(t) for t in self.tasks if isinstance(t, dict)}

    def queue(self, auto_queue: str) -> str:
        return {"cpu": "cpu", "cuda": "gpu"}.get(self.device, auto_queue)
