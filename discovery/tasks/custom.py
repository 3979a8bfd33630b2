"""Custom tasks from JSON:

    {"name": "my-task", "metric": "logit_diff" | "prob_diff" | "kl" | "logprob",
     "pairs": [{"clean": "...", "corrupt": "...", "answer": "Mary" | ["Mary", ...],
                "wrong": "John" | ["John", ...]}]}

:func:`parse_custom_task` checks the structure (errors name the pair index and field);
:func:`discovery.tasks.base.tokenize_task` then checks it against a model's tokenizer (equal token
lengths, known words, one-token answers, context length).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from discovery.tasks.base import METRICS, PromptPair, TaskData, TaskValidationError


def _words(value: Any, where: str, *, required: bool) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if items is None or items == []:
        if required:
            raise TaskValidationError(f"{where}: empty; give a token or a non-empty list of tokens")
        return ()
    if not isinstance(items, list) or not all(isinstance(w, str) and w.strip() for w in items):
        raise TaskValidationError(f"{where}: must be a non-empty string or a list of non-empty strings")
    return tuple(w.strip() for w in items)


def _text(pair: dict, key: str, index: int) -> str:
    value = pair.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TaskValidationError(f"pairs[{index}].{key}: missing or empty; give the prompt text")
    return value


def parse_custom_task(data: Any) -> TaskData:
    """A :class:`TaskData` from the JSON object ``data``."""
    if not isinstance(data, dict):
        raise TaskValidationError("task: must be a JSON object with name, metric and pairs")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TaskValidationError("name: missing or empty; give the task a name")
    metric = data.get("metric")
    if metric not in METRICS:
        raise TaskValidationError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")
    pairs = data.get("pairs")
    if not isinstance(pairs, list) or not pairs:
        raise TaskValidationError("pairs: missing or empty; give a list of {clean, corrupt, answer, wrong}")
    parsed = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict):
            raise TaskValidationError(f"pairs[{i}]: must be an object with clean, corrupt, answer, wrong")
        unknown = set(pair) - {"clean", "corrupt", "answer", "wrong"}
        if unknown:
            raise TaskValidationError(f"pairs[{i}]: unknown field(s) {sorted(unknown)}")
        parsed.append(PromptPair(
            clean=_text(pair, "clean", i),
            corrupt=_text(pair, "corrupt", i),
            answers=_words(pair.get("answer"), f"pairs[{i}].answer", required=True),
            wrongs=_words(pair.get("wrong"), f"pairs[{i}].wrong",
                          required=metric in ("logit_diff", "prob_diff")),
        ))
    return TaskData(name=name.strip(), metric=metric, pairs=tuple(parsed),
                    description=str(data.get("description", "custom task")))


def load_custom_task(path: Path) -> TaskData:
    """Read and parse a custom-task JSON file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TaskValidationError(f"custom task file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise TaskValidationError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_custom_task(data)
