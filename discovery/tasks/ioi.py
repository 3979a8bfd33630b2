"""Indirect object identification (Wang et al. 2022, arXiv 2211.00593).

``When Mary and John went to the store , John gave a drink to`` -> ``Mary``. The subject S is named
twice, the indirect object IO once; the model must name IO. Both orders of the first two names
(ABBA: IO first, BABA: S first). Corruption "ABC": all three name positions get fresh names, so
nothing is repeated. Metric: logit difference logit(IO) - logit(S).
"""

from __future__ import annotations

import random

from discovery.tasks.base import PromptPair, TaskSpec
from discovery.zoo.language import NAMES, OBJECTS, PLACES

TEMPLATES = (
    "When {A} and {B} went to the {PLACE} , {S} gave a {OBJECT} to",
    "After {A} and {B} went to the {PLACE} , {S} gave a {OBJECT} to",
    "Then , {A} and {B} had a long argument . Afterwards {S} said to",
    "When {A} and {B} got a {OBJECT} at the {PLACE} , {S} decided to give it to",
    "While {A} and {B} were working at the {PLACE} , {S} gave a {OBJECT} to",
    "Friends {A} and {B} found a {OBJECT} at the {PLACE} . {S} gave it to",
    "{A} and {B} were thinking about going to the {PLACE} . {S} wanted to give a {OBJECT} to",
    "Then , {A} and {B} went to the {PLACE} . {S} handed a {OBJECT} to",
    "When {A} and {B} arrived at the {PLACE} , {S} sent a {OBJECT} to",
    "Afterwards {A} and {B} went to the {PLACE} . {S} threw a {OBJECT} to",
    "Since {A} and {B} spent a day at the {PLACE} , {S} offered a {OBJECT} to",
    "The {PLACE} was busy when {A} and {B} came in . {S} showed the {OBJECT} to",
)


def _fill(template: str, a: str, b: str, s: str, place: str, obj: str) -> str:
    return template.format(A=a, B=b, S=s, PLACE=place, OBJECT=obj)


def draw(rng: random.Random) -> PromptPair:
    template = rng.choice(TEMPLATES)
    io, s, x, y, z = rng.sample(NAMES, 5)
    place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
    a, b = (io, s) if rng.random() < 0.5 else (s, io)  # ABBA or BABA
    return PromptPair(
        clean=_fill(template, a, b, s, place, obj),
        corrupt=_fill(template, x, y, z, place, obj),
        answers=(io,),
        wrongs=(s,),
    )


SPEC = TaskSpec(
    name="ioi",
    description="indirect object identification: name the person who was mentioned once",
    metric="logit_diff",
    draw=draw,
)
