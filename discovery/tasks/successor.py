"""Successor: ``The day after Monday is`` -> ``Tuesday`` (and months). Ordinal sequences are a
classic case of a shared "successor" mechanism in GPT-2 (Gould et al. 2023). Corruption: another
day (month), so the right answer moves; metric: logit(successor of clean) - logit(successor of
corrupt)."""

from __future__ import annotations

import random

from discovery.tasks.base import PromptPair, TaskSpec
from discovery.zoo.language import MONTHS, NAMES, WEEKDAYS

TEMPLATES = (
    ("{N} said the day after {X} is", WEEKDAYS),
    ("{N} said the month after {X} is", MONTHS),
    ("It was {X} , so {N} knew tomorrow is", WEEKDAYS),
    ("{N} moved the meeting from {X} to", WEEKDAYS),
    ("After {X} , {N} expected", MONTHS),
)


def draw(rng: random.Random) -> PromptPair:
    (template, cycle), name = rng.choice(TEMPLATES), rng.choice(NAMES)
    i, j = rng.sample(range(len(cycle)), 2)
    return PromptPair(
        clean=template.format(X=cycle[i], N=name),
        corrupt=template.format(X=cycle[j], N=name),
        answers=(cycle[(i + 1) % len(cycle)],),
        wrongs=(cycle[(j + 1) % len(cycle)],),
    )


SPEC = TaskSpec(
    name="successor",
    description="successor: the next weekday or month",
    metric="logit_diff",
    draw=draw,
)
