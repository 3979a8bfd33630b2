"""What a discovery job asks for, validated once at the edge (the API) and carried as JSON to the
worker. Imports no torch: the catalog of models, tasks and methods is read without it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from discovery.catalog import ABLATIONS, METHODS, shipped_models
from discovery.tasks import TASKS
from discovery.tasks.base import METRICS, TaskData, TaskValidationError
from discovery.tasks.custom import parse_custom_task

Device = Literal["auto", "cpu", "cuda"]


class JobSpec(BaseModel):
    """One discovery job. ``task`` is a built-in task name or a custom task inline, in the
    custom-task JSON format (``{"name", "metric", "pairs": [...]}``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a shipped model name (GET /v1/models)")
    task: str | dict[str, Any] = Field(description="a built-in task name (GET /v1/tasks) or a custom task")
    method: str = Field("acdc", description=f"one of {', '.join(METHODS)}")
    threshold: float = Field(0.01, gt=0, description="ACDC's tau, or the attribution cut-off (> 0)")
    granularity: Literal["edges", "neurons"] = "edges"
    device: Device = "auto"
    seed: int = Field(0, ge=0)
    n_prompts: int = Field(50, ge=1, le=2000, description="prompt pairs drawn for a built-in task")
    metric: str | None = Field(None, description=f"one of {', '.join(METRICS)}; default per method")
    ablation: str = Field("corrupt", description=f"one of {', '.join(ABLATIONS)}")
    top_n: int | None = Field(None, ge=1, description="attribution methods: keep the n best edges")
    ig_steps: int = Field(5, ge=1, le=200)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        models = shipped_models()
        if value not in models:
            raise ValueError(f"unknown model {value!r}; use one of {', '.join(models)}")
        return value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, str):
            if value not in TASKS:
                raise ValueError(f"unknown task {value!r}; use one of {', '.join(TASKS)} or give a "
                                 "custom task object {name, metric, pairs}")
            return value
        try:
            parse_custom_task(value)
        except TaskValidationError as exc:
            raise ValueError(f"custom task: {exc}") from None
        return value

    @field_validator("method", "metric", "ablation")
    @classmethod
    def _one_of(cls, value: str | None, info: ValidationInfo) -> str | None:
        choices = {"method": METHODS, "metric": METRICS, "ablation": ABLATIONS}[info.field_name]
        if value is not None and value not in choices:
            raise ValueError(f"unknown {info.field_name} {value!r}; use one of {', '.join(choices)}")
        return value

    @model_validator(mode="after")
    def _top_n_for_attribution(self) -> JobSpec:
        if self.top_n is not None and self.method.startswith("acdc"):
            raise ValueError("top_n applies to attribution methods (eap, eap-ig, eap-ig+acdc), not ACDC")
        return self

    @property
    def task_name(self) -> str:
        return self.task if isinstance(self.task, str) else str(self.task.get("name", "custom"))

    def custom_task(self) -> TaskData | None:
        """The inline custom task's pairs, or None for a built-in task."""
        return None if isinstance(self.task, str) else parse_custom_task(self.task)

    def queue(self, auto_queue: str) -> str:
        """The Celery queue this job goes to: by device, ``auto`` to the configured default."""
        return {"cpu": "cpu", "cuda": "gpu"}.get(self.device, auto_queue)
