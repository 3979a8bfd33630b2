"""Induction (Olsson et al. 2022): in ``... A B ... A`` predict ``B``.

A sequence of distinct random words is followed by a prefix of itself; the next word is the one that
followed the last word's first occurrence. Corruption replaces the first occurrence with other
random words, so nothing can be copied. Metric: log-probability of the correct word; the wrong word
is what the corrupted first half would have predicted.
"""

from __future__ import annotations

import random

from discovery.tasks.base import PromptPair, TaskSpec
from discovery.zoo.language import EVENTS, MONTHS, NAMES, OBJECTS, PLACES, WEEKDAYS

POOL = NAMES + PLACES + OBJECTS + EVENTS + WEEKDAYS + MONTHS
LENGTH = 8


def draw(rng: random.Random, pool: tuple[str, ...] | list[str] = POOL) -> PromptPair:
    words = rng.sample(list(pool), 2 * LENGTH)
    first, other = words[:LENGTH], words[LENGTH:]
    k = rng.randint(2, LENGTH - 1)  # how much of the sequence is repeated before the prediction
    return PromptPair(
        clean=" ".join(first + first[:k]),
        corrupt=" ".join(other + first[:k]),
        answers=(first[k],),
        wrongs=(other[k],),
    )


def sentence(pair: PromptPair, rng: random.Random) -> str:
    """Training text: the whole sequence repeated, so every position of the repeat is predictable."""
    first = pair.clean.split()[:LENGTH]
    return " ".join(first + first) + " ."


SPEC = TaskSpec(
    name="induction",
    description="induction: continue a repeated random sequence",
    metric="logprob",
    draw=draw,
    sentence=sentence,
)
