"""The exact prompt pairs of a discovery run, written so another tool can re-score a circuit.

An export holds the pairs as custom-task JSON (``task``: give it to ``circuits discover --task``
after ``jq .task``), the facts of their tokenisation (BOS or not, the token ids of every prompt,
the answer ids, the tokenizer's hash), the dataset hash the circuit's provenance records and, when
the circuit's method visited edges in an order, that order. :func:`dataset_of` rebuilds the
:class:`TaskData` from an export, so its ``dataset_hash`` can be checked against a circuit's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from discovery.tasks.base import PromptPair, TaskData, TaskValidationError
from discovery.tasks.custom import CUSTOM_PREFIX
from discovery.tasks.tokens import TokenizedTask, token_rows, tokenizer_sha256

#: The export's layout version; a reader refuses others.
FORMAT = "circuit-atlas/task-export/1"
#: How :attr:`TaskData.dataset_hash` is computed, for tools that check it themselves.
HASH_RECIPE = ('sha256 of json.dumps({"name": NAME, "metric": METRIC, "pairs": [[clean, corrupt, '
               '[answers], [wrongs]], ...]}, sort_keys=True, separators=(",", ":")), UTF-8')


def export_task(batch: TokenizedTask, tokenizer, *, model: str, n_prompts: int | None = None,
                seed: int | None = None, edge_order: dict[str, Any] | None = None) -> dict[str, Any]:
    """The export of the tokenised pairs ``batch`` (as JSON-ready data)."""
    data = batch.data
    pairs = [{"clean": p.clean, "corrupt": p.corrupt, "answer": list(p.answers),
              "wrong": list(p.wrongs)} for p in data.pairs]
    out: dict[str, Any] = {
        "format": FORMAT,
        "task": {"name": data.name.removeprefix(CUSTOM_PREFIX), "metric": data.metric,
                 "description": data.description, "pairs": pairs},
        "source": {"task": data.name, "model": model, "n_prompts": n_prompts, "seed": seed,
                   "split": None if data.name.startswith(CUSTOM_PREFIX) else "test"},
        "dataset_hash": data.dataset_hash,
        "dataset_hash_recipe": HASH_RECIPE + f' with NAME = {data.name!r}',
        "tokenization": {
            "prepend_bos": batch.prepend_bos,
            "bos_token_id": tokenizer.bos_token_id if batch.prepend_bos else None,
            "add_special_tokens": False,
            "prompt_format": "each prompt exactly as written, tokenised whole; answers and wrong "
                             "answers as single tokens of the word as written (no added space)",
            "answer_position": "the last token of each prompt (prompts are right-padded in a batch)",
            "tokenizer_sha256": tokenizer_sha256(tokenizer),
            "tokens": token_rows(batch),
        },
    }
    if edge_order is not None:
        out["edge_order"] = edge_order
    return out


def dataset_of(export: dict[str, Any]) -> TaskData:
    """The :class:`TaskData` an export holds, under the task name the run used (so its
    ``dataset_hash`` is the circuit's)."""
    if not isinstance(export, dict) or export.get("format") != FORMAT:
        raise TaskValidationError(f"not a task export: expected \"format\": {FORMAT!r}; write one "
                                  "with `circuits tasks export`")
    task = export["task"]
    pairs = tuple(PromptPair(p["clean"], p["corrupt"], tuple(p["answer"]), tuple(p["wrong"]))
                  for p in task["pairs"])
    return TaskData(export["source"]["task"], task["metric"], pairs, task.get("description", ""))


def read_export(path: Path) -> dict[str, Any]:
    """An export file's contents; errors name the file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TaskValidationError(f"task export {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise TaskValidationError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
