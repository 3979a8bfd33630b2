"""Gendered pronoun (Mathwin et al. 2023): ``John went to the park because`` -> ``he``. Like IOI it
needs the subject's name moved to the last position. Corruption: a name of the other gender;
metric: logit(right pronoun) - logit(other pronoun)."""

from __future__ import annotations

import random

from discovery.tasks.base import PromptPair, TaskSpec
from discovery.zoo.language import NAMES_FEMALE, NAMES_MALE, OBJECTS, PLACES

TEMPLATES = (
    "{N} went to the {PLACE} because",
    "{N} gave a {OBJECT} to the teacher because",
    "Yesterday {N} was at the {PLACE} and then",
    "When {N} found the {OBJECT} ,",
    "{N} looked for a {OBJECT} at the {PLACE} , and then",
)


def draw(rng: random.Random) -> PromptPair:
    template, place, obj = rng.choice(TEMPLATES), rng.choice(PLACES), rng.choice(OBJECTS)
    male, female = rng.choice(NAMES_MALE), rng.choice(NAMES_FEMALE)
    (name, other), (right, wrong) = (
        ((male, female), ("he", "she")) if rng.random() < 0.5 else ((female, male), ("she", "he"))
    )
    return PromptPair(
        clean=template.format(N=name, PLACE=place, OBJECT=obj),
        corrupt=template.format(N=other, PLACE=place, OBJECT=obj),
        answers=(right,),
        wrongs=(wrong,),
    )


def sentence(pair: PromptPair, rng: random.Random) -> str:
    return f"{pair.clean} {pair.answers[0]} {rng.choice(('was happy', 'was tired', 'smiled'))} ."


SPEC = TaskSpec(
    name="pronoun",
    description="gendered pronoun: refer to the subject with he or she",
    metric="logit_diff",
    draw=draw,
    sentence=sentence,
)
