"""What a discovery job asks for, validated once at the edge (the API) and carried as JSON to the
worker. Imports no torch: the catalog of models, tasks and methods is read without it."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from discovery.catalog import ABLATIONS, METHODS, shipped_models, unsupported_architecture
from discovery.orders import check_order
from discovery.tasks import TASKS
from discovery.tasks.base import METRICS, TaskData, TaskValidationError
from discovery.tasks.custom import custom_name, parse_custom_task

Device = Literal["auto", "cpu", "cuda"]

#: Seeds seed Python's, numpy's and torch's generators: numpy takes at most 32 bits.
MAX_SEED = 2**32 - 1
#: Largest threshold accepted: tau and attribution cut-offs are metric differences, far below this.
MAX_THRESHOLD = 1e6
#: Largest job spec, as compact JSON: room for a custom task of 2000 pairs of long prompts.
MAX_SPEC_BYTES = 512_000
#: Most stability re-runs of each kind one job may ask for (each is a full search).
MAX_STABILITY = 20
#: Longest model or task name echoed back in an error message.
_ECHO = 60


def small_enough(data: Any, what: str) -> Any:
    """``data`` unchanged, or a ValueError when its compact JSON passes :data:`MAX_SPEC_BYTES`."""
    size = len(json.dumps(data, separators=(",", ":"), default=str)) if isinstance(data, dict) else 0
    if size > MAX_SPEC_BYTES:
        raise ValueError(f"the {what} is {size} bytes of JSON; at most {MAX_SPEC_BYTES} are "
                         "accepted (a custom task of up to 2000 short pairs fits)")
    return data


def one_of(value: str | None, allowed: tuple[str, ...] | list[str], what: str) -> str | None:
    """``value`` when it is one of ``allowed`` (or None); else the error naming the choices."""
    if value is not None and value not in allowed:
        raise ValueError(f"unknown {what} {_echo(value)}; use one of {', '.join(allowed)}")
    return value


def _echo(value: str) -> str:
    """``value`` for an error message, cut short: a 100,000-character name is not repeated."""
    return repr(value[:_ECHO] + ("..." if len(value) > _ECHO else ""))


def known_model(value: str) -> str:
    """``value`` when it names a shipped model of a supported architecture; else ValueError
    naming the models there are (shared by every spec that names a model)."""
    models = shipped_models()
    if value not in models:
        raise ValueError(f"unknown model {_echo(value)}; use one of {', '.join(models)}")
    why = unsupported_architecture(json.loads((models[value] / "config.json").read_text()))
    if why:
        raise ValueError(f"model {value}: {why}")
    return value


#: ACDC's edge order (discovery.orders), shared by every spec that runs a search.
EdgeOrder = Annotated[str, Field(max_length=40, description="ACDC's edge order: ours, auto-circuit "
                                 "(as auto_circuit visits them) or random:<seed>"), AfterValidator(check_order)]
#: Stability re-runs of each kind (discovery.stability): 0 for none.
Stability = Annotated[int, Field(ge=0, le=MAX_STABILITY, description="also score the circuit's stability: "
                                 "this many re-runs under random edge orders and as many on other prompts "
                                 f"(0: none; at most {MAX_STABILITY}, each a full search)")]


class JobSpec(BaseModel):
    """One discovery job. ``task`` is a built-in task name or a custom task inline, in the
    custom-task JSON format (``{"name", "metric", "pairs": [...]}``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=200, description="a shipped model name (GET /v1/models)")
    task: str | dict[str, Any] = Field(description="a built-in task name (GET /v1/tasks) or a custom "
                                       "task {name, metric, pairs, description?} (at most 2000 pairs)")
    method: str = Field("acdc", max_length=40, description=f"one of {', '.join(METHODS)}")
    threshold: float = Field(0.01, gt=0, le=MAX_THRESHOLD, allow_inf_nan=False,
                             description="ACDC's tau, or the attribution cut-off (finite, > 0)")
    granularity: Literal["edges", "neurons"] = "edges"
    device: Device = "auto"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    n_prompts: int = Field(50, ge=1, le=2000, description="prompt pairs drawn for a built-in task")
    metric: str | None = Field(None, max_length=40,
                               description=f"one of {', '.join(METRICS)}; default per method")
    ablation: str = Field("corrupt", max_length=40, description=f"one of {', '.join(ABLATIONS)}")
    top_n: int | None = Field(None, ge=1, le=10_000_000,
                              description="attribution methods: keep the n best edges")
    ig_steps: int = Field(5, ge=1, le=200)
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="what the weights and passes run in; metrics accumulate in fp32")
    kv_inputs: Literal["head", "group"] = Field(
        "head", description="grouped-query attention: k/v inputs per query head (MIB-compatible) "
        "or one per key-value group (nodes a<L>.kv<G>; the identity grouping without GQA)")
    max_batch_memory: int | None = Field(
        None, ge=1_000_000, description="bytes one batched pass may use (EAP-IG's steps x prompts, "
        "ACDC's variants are split to fit); default: half the worker's available memory")
    edge_order: EdgeOrder = "ours"
    stability: Stability = 0

    @model_validator(mode="before")
    @classmethod
    def _small_enough(cls, data: Any) -> Any:
        return small_enough(data, "job spec")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return known_model(value)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, str):
            if value not in TASKS:
                raise ValueError(f"unknown task {_echo(value)}; use one of {', '.join(TASKS)} or give a "
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
            raise ValueError(f"unknown {info.field_name} {_echo(value)}; use one of {', '.join(choices)}")
        return value

    @model_validator(mode="after")
    def _top_n_for_attribution(self) -> JobSpec:
        if self.top_n is not None and self.method.startswith("acdc"):
            raise ValueError("top_n applies to attribution methods (eap, eap-ig, eap-ig+acdc), not ACDC")
        return self

    @property
    def task_name(self) -> str:
        """The built-in task's name, or ``custom:<name>`` for a custom task (its own namespace)."""
        return self.task if isinstance(self.task, str) else custom_name(self.task.get("name"))

    def custom_task(self) -> TaskData | None:
        """The inline custom task's pairs, or None for a built-in task."""
        return None if isinstance(self.task, str) else parse_custom_task(self.task)

    def queue(self, auto_queue: str) -> str:
        """The Celery queue this job goes to: by device, ``auto`` to the configured default."""
        return {"cpu": "cpu", "cuda": "gpu"}.get(self.device, auto_queue)
