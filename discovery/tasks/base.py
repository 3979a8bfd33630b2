"""What a task is: clean/corrupted prompt pairs with answer and counter-answer tokens, a default
metric, and a dataset hash; and the tokenised batch the engine runs on.

Prompts of one pair have equal token length (patching swaps activations position by position).
Pairs of one task may differ in length: batches are right-padded and every pair carries the index
of its last real token, where the answer is predicted (attention is causal, so padding after it
changes nothing before it).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

MetricName = Literal["logit_diff", "prob_diff", "kl", "logprob"]
METRICS: tuple[str, ...] = ("logit_diff", "prob_diff", "kl", "logprob")
Split = Literal["train", "test", "all"]


class TaskValidationError(ValueError):
    """A task's data is unusable; the message names the pair index and the field."""


@dataclass(frozen=True)
class PromptPair:
    """One clean prompt, its corruption, and the tokens that count as right and wrong answers."""

    clean: str
    corrupt: str
    answers: tuple[str, ...]
    wrongs: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskData:
    """A named list of prompt pairs with the metric that judges them."""

    name: str
    metric: MetricName
    pairs: tuple[PromptPair, ...]
    description: str = ""

    @property
    def dataset_hash(self) -> str:
        """sha256 of the task's canonical JSON (name, metric, pairs): identifies the exact data."""
        payload = json.dumps(
            {"name": self.name, "metric": self.metric,
             "pairs": [[p.clean, p.corrupt, list(p.answers), list(p.wrongs)] for p in self.pairs]},
            sort_keys=True, separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()


def in_split(text: str, split: Split) -> bool:
    """Deterministic held-out split: a tenth of all possible prompts is reserved for testing,
    chosen by the prompt's hash, so training never sees a test prompt."""
    if split == "all":
        return True
    held_out = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 10 == 0
    return held_out if split == "test" else not held_out


Generator = Callable[..., PromptPair]  # (rng, **task options) -> one pair


@dataclass(frozen=True)
class TaskSpec:
    """A built-in task: how to draw one pair, and how a pair reads as training text."""

    name: str
    description: str
    metric: MetricName
    draw: Generator
    # The training sentence for a pair: the clean prompt followed by one right answer.
    sentence: Callable[[PromptPair, random.Random], str] = field(
        default=lambda pair, rng: f"{pair.clean} {rng.choice(pair.answers)} ."
    )

    def generate(self, n: int, *, seed: int = 0, split: Split = "test",
                 options: dict | None = None) -> TaskData:
        """``n`` distinct pairs from ``split``, deterministic given ``seed``. ``options`` go to the
        task's ``draw`` (a model with a small vocabulary narrows the induction word pool)."""
        rng, pairs, seen = random.Random(f"{self.name}/{seed}"), [], set()
        attempts = 0
        while len(pairs) < n:
            attempts += 1
            if attempts > 200 * n + 1000:
                raise RuntimeError(f"task {self.name}: cannot draw {n} distinct {split} pairs")
            pair = self.draw(rng, **(options or {}))
            if (pair.clean, pair.corrupt) in seen or not in_split(pair.clean, split):
                continue
            seen.add((pair.clean, pair.corrupt))
            pairs.append(pair)
        return TaskData(self.name, self.metric, tuple(pairs), self.description)


@dataclass
class TokenizedTask:
    """A task as tensors. ``answers``/``wrongs`` are padded with -1 (not a token)."""

    data: TaskData
    clean: torch.Tensor  # [batch, pos] token ids, right-padded
    corrupt: torch.Tensor  # [batch, pos]
    last: torch.Tensor  # [batch] position of the last real token (where the answer is predicted)
    answers: torch.Tensor  # [batch, n_answers] token ids, -1 = none
    wrongs: torch.Tensor  # [batch, n_wrongs] token ids, -1 = none

    def to(self, device: torch.device | str) -> TokenizedTask:
        return TokenizedTask(self.data, self.clean.to(device), self.corrupt.to(device),
                             self.last.to(device), self.answers.to(device), self.wrongs.to(device))

    def __len__(self) -> int:
        return self.clean.shape[0]


def _ids(tokenizer, text: str, *, bos: bool) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if bos else []) + list(ids)


def _single_tokens(tokenizer, words: Sequence[str], index: int, field_name: str) -> list[int]:
    ids = []
    for word in words:
        toks = _ids(tokenizer, word, bos=False)
        if len(toks) != 1:
            raise TaskValidationError(
                f"pairs[{index}].{field_name}: {word!r} is {len(toks)} tokens for this tokenizer; "
                "each answer must be exactly one token"
            )
        ids.append(toks[0])
    return ids


def _check_known(tokenizer, text: str, index: int, field_name: str) -> None:
    """Words the tokenizer maps to its unknown token (our word-level tokenizers do that)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return
    bad = [w for w in text.split() if w != tokenizer.unk_token and unk in _ids(tokenizer, w, bos=False)]
    if bad:
        raise TaskValidationError(
            f"pairs[{index}].{field_name}: {bad} unknown to the model's tokenizer; use only words "
            "of its vocabulary (`circuits tasks show TASK` prints examples)"
        )


def tokenize_task(data: TaskData, tokenizer, *, n_ctx: int, prepend_bos: bool = True) -> TokenizedTask:
    """Tokenise and validate ``data``; errors name the pair index and the field."""
    if not data.pairs:
        raise TaskValidationError("pairs: the task has no pairs; give at least one")
    rows = []
    for i, pair in enumerate(data.pairs):
        clean = _ids(tokenizer, pair.clean, bos=prepend_bos)
        corrupt = _ids(tokenizer, pair.corrupt, bos=prepend_bos)
        _check_known(tokenizer, pair.clean, i, "clean")
        _check_known(tokenizer, pair.corrupt, i, "corrupt")
        if len(clean) != len(corrupt):
            raise TaskValidationError(
                f"pairs[{i}]: clean is {len(clean)} tokens but corrupt is {len(corrupt)}; "
                "a pair's prompts must have equal token length"
            )
        if len(clean) > n_ctx:
            raise TaskValidationError(
                f"pairs[{i}].clean: {len(clean)} tokens is longer than the model's context of {n_ctx}"
            )
        if not pair.answers:
            raise TaskValidationError(f"pairs[{i}].answer: empty; give at least one answer token")
        if data.metric in ("logit_diff", "prob_diff") and not pair.wrongs:
            raise TaskValidationError(
                f"pairs[{i}].wrong: empty; metric {data.metric} needs at least one wrong token"
            )
        answers = _single_tokens(tokenizer, pair.answers, i, "answer")
        wrongs = _single_tokens(tokenizer, pair.wrongs, i, "wrong")
        rows.append((clean, corrupt, answers, wrongs))
    width = max(len(r[0]) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def matrix(column: int, fill: int, size: int) -> torch.Tensor:
        return torch.tensor([r[column] + [fill] * (size - len(r[column])) for r in rows])

    return TokenizedTask(
        data=data,
        clean=matrix(0, pad, width),
        corrupt=matrix(1, pad, width),
        last=torch.tensor([len(r[0]) - 1 for r in rows]),
        answers=matrix(2, -1, max(len(r[2]) for r in rows)),
        wrongs=matrix(3, -1, max(1, max(len(r[3]) for r in rows))),
    )
