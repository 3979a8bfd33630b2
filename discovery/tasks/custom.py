"""Custom tasks from JSON:

    {"name": "my-task", "metric": "logit_diff" | "prob_diff" | "kl" | "logprob",
     "pairs": [{"clean": "...", "corrupt": "...", "answer": "Mary" | ["Mary", ...],
                "wrong": "John" | ["John", ...]}],
     "description": "optional"}

:func:`parse_custom_task` checks the structure and the sizes (errors name the pair index and field);
:func:`discovery.tasks.base.tokenize_task` then checks it against a model's tokenizer (equal token
lengths, known words, one-token answers, context length).

Custom tasks live in their own namespace: the task is named ``custom:<name>`` everywhere after
parsing (provenance, the graph store's Task node, filters), so a custom task called ``induction``
is ``custom:induction`` and can never pose as, or change, the built-in ``induction`` task.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from discovery.tasks.base import METRICS, PromptPair, TaskData, TaskValidationError

#: The prefix that sets custom tasks apart from built-in ones.
CUSTOM_PREFIX = "custom:"
#: A custom task's own name (after the prefix): short, readable, safe in file names and URLs.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Size limits: as many pairs as a built-in task may draw, prompts well past any model's context.
MAX_PAIRS = 2000
MAX_PROMPT_CHARS = 2000
MAX_WORD_CHARS = 100
MAX_WORDS = 32
MAX_DESCRIPTION_CHARS = 1000
FIELDS = frozenset({"name", "metric", "pairs", "description"})
PAIR_FIELDS = frozenset({"clean", "corrupt", "answer", "wrong"})


def _words(value: Any, where: str, *, required: bool) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if items is None or items == []:
        if required:
            raise TaskValidationError(f"{where}: empty; give a token or a non-empty list of tokens")
        return ()
    if not isinstance(items, list) or not all(isinstance(w, str) and w.strip() for w in items):
        raise TaskValidationError(f"{where}: must be a non-empty string or a list of non-empty strings")
    if len(items) > MAX_WORDS:
        raise TaskValidationError(f"{where}: {len(items)} tokens; give at most {MAX_WORDS}")
    if any(len(w) > MAX_WORD_CHARS for w in items):
        raise TaskValidationError(f"{where}: a token longer than {MAX_WORD_CHARS} characters; "
                                  "answers are single tokens")
    return tuple(w.strip() for w in items)


def _text(pair: dict, key: str, index: int) -> str:
    value = pair.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TaskValidationError(f"pairs[{index}].{key}: missing or empty; give the prompt text")
    if len(value) > MAX_PROMPT_CHARS:
        raise TaskValidationError(f"pairs[{index}].{key}: {len(value)} characters; a prompt may have "
                                  f"at most {MAX_PROMPT_CHARS}")
    return value


def custom_name(value: Any) -> str:
    """``custom:<name>`` for the name a custom task gives (with or without the prefix)."""
    if not isinstance(value, str) or not value.strip():
        raise TaskValidationError("name: missing or empty; give the task a name")
    bare = value.strip().removeprefix(CUSTOM_PREFIX)
    if not NAME_PATTERN.fullmatch(bare):
        raise TaskValidationError(
            f"name: {bare[:40]!r}{'...' if len(bare) > 40 else ''} is not a task name; use 1-64 "
            "letters, digits, '_', '.' or '-', starting with a letter or digit")
    return CUSTOM_PREFIX + bare


def is_custom(name: str) -> bool:
    return name.startswith(CUSTOM_PREFIX)


def parse_custom_task(data: Any) -> TaskData:
    """A :class:`TaskData` from the JSON object ``data``."""
    if not isinstance(data, dict):
        raise TaskValidationError("task: must be a JSON object with name, metric and pairs")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise TaskValidationError(f"task: unknown field(s) {[str(u)[:40] for u in unknown[:5]]}; "
                                  f"a custom task has {', '.join(sorted(FIELDS))}")
    name = custom_name(data.get("name"))
    description = data.get("description", "custom task")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise TaskValidationError(f"description: must be text of at most {MAX_DESCRIPTION_CHARS} characters")
    metric = data.get("metric")
    if metric not in METRICS:
        raise TaskValidationError(f"metric: {str(metric)[:40]!r} is not one of {', '.join(METRICS)}")
    pairs = data.get("pairs")
    if not isinstance(pairs, list) or not pairs:
        raise TaskValidationError("pairs: missing or empty; give a list of {clean, corrupt, answer, wrong}")
    if len(pairs) > MAX_PAIRS:
        raise TaskValidationError(f"pairs: {len(pairs)} pairs; a task may have at most {MAX_PAIRS} "
                                  "(the prompt cap of every job); split it into several tasks")
    parsed = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict):
            raise TaskValidationError(f"pairs[{i}]: must be an object with clean, corrupt, answer, wrong")
        unknown = set(pair) - PAIR_FIELDS
        if unknown:
            raise TaskValidationError(f"pairs[{i}]: unknown field(s) {sorted(str(u)[:40] for u in unknown)[:5]}")
        parsed.append(PromptPair(
            clean=_text(pair, "clean", i),
            corrupt=_text(pair, "corrupt", i),
            answers=_words(pair.get("answer"), f"pairs[{i}].answer", required=True),
            wrongs=_words(pair.get("wrong"), f"pairs[{i}].wrong",
                          required=metric in ("logit_diff", "prob_diff")),
        ))
    return TaskData(name=name, metric=metric, pairs=tuple(parsed), description=description)


def load_custom_task(path: Path) -> TaskData:
    """Read and parse a custom-task JSON file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TaskValidationError(f"custom task file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise TaskValidationError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_custom_task(data)
