"""What a task is: clean/corrupted prompt pairs with answer and counter-answer tokens, a default
metric, and a dataset hash. No torch here (the API validates tasks without loading it); the
tokenised batch the engine runs on is :mod:`discovery.tasks.tokens`.

Prompts of one pair have equal token length (patching swaps activations position by position).
Pairs of one task may differ in length: batches are right-padded and every pair carries the index
of its last real token, where the answer is predicted (attention is causal, so padding after it
changes nothing before it).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

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
