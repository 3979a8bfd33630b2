"""Induction (Olsson et al. 2022): in ``... A B ... A`` predict ``B``.

A sequence of distinct random words is followed by a prefix of itself; the next word is the one that
followed the last word's first occurrence. Corruption replaces the first occurrence with other
random words, so nothing can be copied. Metric: log-probability of the correct word; the wrong word
is what the corrupted first half would have predicted.

The sequence's length and a random lead-in vary, so the distance back to the answer varies: a head
that copies from a fixed offset cannot solve the task, only induction can.
"""

from __future__ import annotations

import random

from discovery.tasks.base import PromptPair, TaskSpec
from discovery.zoo.language import EVENTS, MONTHS, NAMES, OBJECTS, PLACES, WEEKDAYS

POOL = NAMES + PLACES + OBJECTS + EVENTS + WEEKDAYS + MONTHS
LENGTHS = (5, 9)  # sequence length range
LEAD = (0, 3)  # words of lead-in before the sequence


def draw(rng: random.Random, pool: tuple[str, ...] | list[str] = POOL) -> PromptPair:
    n, lead = rng.randint(*LENGTHS), rng.randint(*LEAD)
    words = rng.sample(list(pool), 2 * n + lead)
    first, other, before = words[:n], words[n:2 * n], words[2 * n:]
    k = rng.randint(1, n - 1)  # how much of the sequence is repeated before the prediction
    return PromptPair(
        clean=" ".join(before + first + first[:k]),
        corrupt=" ".join(before + other + first[:k]),
        answers=(first[k],),
        wrongs=(other[k],),
    )


def sentence(pair: PromptPair, rng: random.Random) -> str:
    """Training text: a fresh lead-in and sequence, repeated whole, so every word of the repeat is
    predictable by induction (random sequences: a test prompt recurs with negligible odds)."""
    n, lead = rng.randint(*LENGTHS), rng.randint(*LEAD)
    words = rng.sample(POOL, n + lead)
    return " ".join(words[:lead] + 2 * words[lead:]) + " ."


SPEC = TaskSpec(
    name="induction",
    description="induction: continue a repeated random sequence",
    metric="logprob",
    draw=draw,
    sentence=sentence,
)
