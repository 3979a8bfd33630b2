"""``/v1/tasks``: the built-in tasks (name, default metric, description), without torch."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.security import ReadCaller
from discovery.tasks import TASKS

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


class TaskPublic(BaseModel):
    """A built-in task; ``metric`` is its default metric (logit_diff, prob_diff, logprob, kl)."""

    name: str
    metric: str
    description: str


@router.get("", response_model=list[TaskPublic])
def list_(caller: ReadCaller) -> list[TaskPublic]:
    """Every built-in task, usable in jobs by name."""
    return [TaskPublic(name=t.name, metric=t.metric, description=t.description) for t in TASKS.values()]
