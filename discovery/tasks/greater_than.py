"""Greater-than (Hanna, Liu, Variengien 2023, arXiv 2305.00586).

``The war lasted from the year 1732 to the year 17`` -> a two-digit token greater than ``32``.
Years are split into two-digit tokens as GPT-2 splits them. Corruption: start year ``XX01``.
Metric: probability difference, sum of p(y) over y > YY minus the sum over y <= YY.
"""

from __future__ import annotations

import random

from discovery.tasks.base import PromptPair, TaskSpec
from discovery.zoo.language import EVENTS, TWO_DIGITS

CENTURIES = tuple(range(11, 18))
TEMPLATE = "The {NOUN} lasted from the year {XX}{YY} to the year {XX}"


def draw(rng: random.Random) -> PromptPair:
    noun, xx, yy = rng.choice(EVENTS), rng.choice(CENTURIES), rng.randint(2, 98)
    clean = TEMPLATE.format(NOUN=noun, XX=xx, YY=f"{yy:02d}")
    return PromptPair(
        clean=clean,
        corrupt=TEMPLATE.format(NOUN=noun, XX=xx, YY="01"),
        answers=TWO_DIGITS[yy + 1:],
        wrongs=TWO_DIGITS[: yy + 1],
    )


SPEC = TaskSpec(
    name="greater_than",
    description="greater-than: the end year is later than the start year",
    metric="prob_diff",
    draw=draw,
)
