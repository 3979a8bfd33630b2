"""The task suite: one module per built-in task, registered by name in :data:`TASKS`, plus the
loader for custom tasks from JSON (:mod:`discovery.tasks.custom`). Importing it does not load
torch; :mod:`discovery.tasks.tokens` turns a task into tensors."""

from __future__ import annotations

from discovery.tasks import greater_than, induction, ioi, pronoun, successor
from discovery.tasks.base import PromptPair, TaskData, TaskSpec, TaskValidationError

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (ioi.SPEC, greater_than.SPEC, induction.SPEC, successor.SPEC, pronoun.SPEC)
}


def get_task(name: str) -> TaskSpec:
    """The built-in task called ``name``; the error lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} "
                         "(or pass a custom task JSON file)") from None


__all__ = ["TASKS", "PromptPair", "TaskData", "TaskSpec", "TaskValidationError", "get_task"]
