"""What a study asks for, validated once at the edge (the API, the CLI) and carried as JSON to the
workers; and the spec of one piece of it (one task x method), which the study job hands to the
workers as a job of its own (:mod:`workers.fanout`). Imports no torch.

A study names a model, its tasks (or ``"all"``: every task the model's card evaluates), methods and
the chosen point (a threshold, or one per method); every (task, method) is a piece: its circuit at
the chosen threshold (and at each threshold of the optional grid), and the faithfulness curve of
the chosen circuit (MIB's CPR and CMD) on held-out prompts."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from discovery.catalog import ABLATIONS, METHODS, model_summary
from discovery.curves import MIB_FRACTIONS, check_fractions
from discovery.tasks import TASKS
from workers.jobspec import (
    MAX_SEED,
    MAX_THRESHOLD,
    Device,
    EdgeOrder,
    Stability,
    _echo,
    known_model,
    one_of,
    small_enough,
)

#: At most this many pieces (tasks x methods), grid thresholds, and circuits (pieces x points).
MAX_PIECES = 64
MAX_THRESHOLDS = 32
MAX_CIRCUITS = 400
#: At most this many points on the curve's ladder (each is one patched run of the model).
MAX_FRACTIONS = 64
DEFAULT_THRESHOLD = 0.01


def model_tasks(model: str) -> list[str]:
    """The built-in tasks ``model`` was trained on: those its card evaluates, in TASKS order."""
    evaluated = model_summary(model).get("eval") or {}
    return [t for t in TASKS if t in evaluated]


def _positive(value: float, where: str) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 < value <= MAX_THRESHOLD):
        raise ValueError(f"{where}: {value!r} must be a finite number in (0, {MAX_THRESHOLD:g}]")
    return float(value)


def _chosen_of(threshold: float | dict[str, float], method: str) -> float:
    if isinstance(threshold, dict):
        return float(threshold.get(method, DEFAULT_THRESHOLD))
    return float(threshold)


class StudySpec(BaseModel):
    """A study: every method of ``methods`` on every task of ``tasks`` of ``model``, with the same
    prompts, compared at the chosen ``threshold`` (:mod:`discovery.study`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=200, description="a shipped model name (GET /v1/models)")
    tasks: list[str] | str = Field("all", validate_default=True,
                                   description='built-in task names, or "all": every task the model was '
                                               "trained on (its card's eval)")
    methods: list[str] = Field(description=f"distinct methods, a subset of {', '.join(METHODS)}")
    threshold: float | dict[str, float] = Field(
        DEFAULT_THRESHOLD, description="the chosen point: one threshold, or {method: threshold} "
                                       f"(methods left out use {DEFAULT_THRESHOLD})")
    thresholds: list[float] | None = Field(None, description=f"an extra grid of up to {MAX_THRESHOLDS} "
                                                             "thresholds: each point's circuit is stored too")
    fractions: list[float] = Field(list(MIB_FRACTIONS), max_length=MAX_FRACTIONS,
                                   description="the curve's ladder of edge shares, ascending in (0, 1]")
    n_prompts: int = Field(50, ge=2, le=500, description="prompt pairs for the search and for the curve")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="the search's prompts; the curve's use seed + 1")
    ablation: str = Field("corrupt", max_length=40, description=f"one of {', '.join(ABLATIONS)}")
    device: Device = "auto"
    edge_order: EdgeOrder = "ours"
    stability: Stability = 0

    @model_validator(mode="before")
    @classmethod
    def _small_enough(cls, data: Any) -> Any:
        return small_enough(data, "study spec")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return known_model(value)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: list[str] | str, info: ValidationInfo) -> list[str]:
        """The task list; "all" becomes the model's tasks (its card's eval)."""
        if value == "all" or value == ["all"]:
            if "model" not in info.data:
                return []  # the model's own error says what is wrong
            tasks = model_tasks(info.data["model"])
            if not tasks:
                raise ValueError(f"model {info.data['model']}'s card evaluates no built-in task; "
                                 f"name them ({', '.join(TASKS)})")
            return tasks
        if isinstance(value, str):
            raise ValueError(f'give a list of task names or "all", got {_echo(value)}')
        if not value:
            raise ValueError(f'give at least one of {", ".join(TASKS)}, or "all"')
        for i, task in enumerate(value):
            if task not in TASKS:
                raise ValueError(f"unknown task {_echo(task)} at tasks[{i}]; use one of "
                                 f'{", ".join(TASKS)} or "all"')
        if len(set(value)) != len(value):
            raise ValueError("each task at most once")
        return list(value)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not value:
            raise ValueError(f"give at least one of {', '.join(METHODS)}")
        for i, method in enumerate(value):
            one_of(method, METHODS, f"method at methods[{i}]")
        if len(set(value)) != len(value):
            raise ValueError("each method at most once")
        pieces = len(info.data.get("tasks") or ()) * len(value)
        if pieces > MAX_PIECES:
            raise ValueError(f"{len(info.data['tasks'])} tasks x {len(value)} methods = {pieces} pieces; "
                             f"a study takes at most {MAX_PIECES}: name fewer")
        return value

    @field_validator("threshold")
    @classmethod
    def _chosen(cls, value: float | dict[str, float], info: ValidationInfo) -> float | dict[str, float]:
        if not isinstance(value, dict):
            return _positive(value, "threshold")
        methods = info.data.get("methods") or []
        for method, t in value.items():
            if method not in methods:
                raise ValueError(f"{_echo(method)} is not among methods ({', '.join(methods)}); "
                                 "give a threshold per method of the study")
            _positive(t, f"threshold[{method!r}]")
        return value

    @field_validator("thresholds")
    @classmethod
    def _grid(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if value is None:
            return None
        if not 1 <= len(value) <= MAX_THRESHOLDS:
            raise ValueError(f"give 1 to {MAX_THRESHOLDS} thresholds, got {len(value)}")
        grid = [_positive(t, f"thresholds[{i}]") for i, t in enumerate(value)]
        if len(set(grid)) != len(grid):
            raise ValueError("each threshold at most once")
        chosen = info.data.get("threshold", DEFAULT_THRESHOLD)
        n = sum(1 + len(set(grid) - {_chosen_of(chosen, m)}) for m in info.data.get("methods") or ())
        circuits = n * len(info.data.get("tasks") or ())
        if circuits > MAX_CIRCUITS:
            raise ValueError(f"the study would store {circuits} circuits (pieces x points); at most "
                             f"{MAX_CIRCUITS}: give fewer thresholds, tasks or methods")
        return grid

    @field_validator("fractions")
    @classmethod
    def _ladder(cls, value: list[float]) -> list[float]:
        return list(check_fractions(value))  # ValueError naming the first bad point

    @field_validator("ablation")
    @classmethod
    def _known_ablation(cls, value: str) -> str:
        return one_of(value, ABLATIONS, "ablation")

    @property
    def n_pieces(self) -> int:
        return len(self.tasks) * len(self.methods)

    def chosen(self, method: str) -> float:
        """The chosen point of ``method``: its threshold."""
        return _chosen_of(self.threshold, method)

    def points(self, method: str) -> list[float]:
        """Every threshold ``method``'s pieces discover at: the chosen one first, then the grid's
        others in the order given."""
        chosen = self.chosen(method)
        return [chosen] + [t for t in (self.thresholds or []) if t != chosen]

    def queue(self, auto_queue: str) -> str:
        return {"cpu": "cpu", "cuda": "gpu"}.get(self.device, auto_queue)


def study_circuit_id(study_id: str, task: str, method: str, threshold: float | None = None) -> str:
    """The id of a study's circuit: ``{study}.{task}.{method}`` at the chosen point,
    ``{study}.{task}.{method}.t{threshold}`` at a grid point; the same however often it runs."""
    base = f"{study_id}.{task}.{method}"
    return base if threshold is None else f"{base}.t{float(threshold)!r}"


def piece_name(task: str, method: str) -> str:
    """A piece's name within its study (its job id is ``{study}.{name}``, as its circuit's)."""
    return f"{task}.{method}"


def study_circuit_ids(spec: StudySpec, study_id: str) -> list[str]:
    """Every circuit id the study stores: per piece the chosen point's, then its grid points'."""
    ids = []
    for task in spec.tasks:
        for method in spec.methods:
            ids.append(study_circuit_id(study_id, task, method))
            ids += [study_circuit_id(study_id, task, method, t) for t in spec.points(method)[1:]]
    return ids


class PieceSpec(BaseModel):
    """One piece of study job ``parent``: ``method`` on ``task``, its circuits and curve returned to
    the parent through the job record, stored by the parent."""

    model_config = ConfigDict(extra="forbid")

    parent: str = Field(max_length=100)
    task: str = Field(max_length=100)
    method: str = Field(max_length=40)
    study: StudySpec

    def queue(self, auto_queue: str) -> str:
        return self.study.queue(auto_queue)
