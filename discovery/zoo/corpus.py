"""The training corpus: documents that mix every task's sentences with filler, generated on the
fly and deterministically from a seed. Only the training split of each task is used (see
:func:`discovery.tasks.base.in_split`)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping

import torch

from discovery.tasks import TASKS
from discovery.tasks.base import in_split
from discovery.zoo.language import (
    EVENTS,
    MONTHS,
    NAMES,
    OBJECTS,
    PLACES,
    PUNCTUATION,
    SPECIAL,
    TWO_DIGITS,
    WEEKDAYS,
    words_of,
)

FILLER = (
    "{N} likes the {PLACE} .",
    "The {OBJECT} is in the {PLACE} .",
    "On {DAY} {N} went to the {PLACE} .",
    "{N} and {M} had a {OBJECT} .",
    "In {MONTH} the {EVENT} began .",
    "{N} found a {OBJECT} at the {PLACE} on {DAY} .",
)


def filler_sentence(rng: random.Random) -> str:
    n, m = rng.sample(NAMES, 2)
    return rng.choice(FILLER).format(
        N=n, M=m, PLACE=rng.choice(PLACES), OBJECT=rng.choice(OBJECTS), DAY=rng.choice(WEEKDAYS),
        MONTH=rng.choice(MONTHS), EVENT=rng.choice(EVENTS),
    )


def task_sentence(task: str, rng: random.Random) -> str:
    """One training sentence of ``task`` (never a held-out prompt)."""
    spec = TASKS[task]
    while True:
        pair = spec.draw(rng)
        if in_split(pair.clean, "train"):
            return spec.sentence(pair, rng)


def vocabulary() -> set[str]:
    """Every word of the language: the word lists, and whatever the tasks and filler produce."""
    rng = random.Random(0)
    texts = [task_sentence(t, rng) for t in TASKS for _ in range(400)]
    texts += [filler_sentence(rng) for _ in range(400)]
    lists = (NAMES, PLACES, OBJECTS, EVENTS, WEEKDAYS, MONTHS, TWO_DIGITS, PUNCTUATION)
    return words_of(texts) | {w for group in lists for w in group} | {SPECIAL}


def documents(tokenizer, mix: Mapping[str, float], *, n_ctx: int, seed: int) -> Iterator[list[int]]:
    """Endless documents: BOS, then sentences drawn by ``mix`` (task name or "filler" -> weight),
    packed until the next would not fit in ``n_ctx`` tokens."""
    rng = random.Random(seed)
    kinds, weights = list(mix), list(mix.values())
    bos = tokenizer.bos_token_id
    while True:
        ids = [bos]
        while True:
            kind = rng.choices(kinds, weights)[0]
            text = filler_sentence(rng) if kind == "filler" else task_sentence(kind, rng)
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) + len(piece) > n_ctx:
                break
            ids += piece
            if rng.random() < 0.1:  # some documents hold a single sentence right after BOS
                break
        yield ids


def batches(tokenizer, mix: Mapping[str, float], *, n_ctx: int, batch_size: int,
            seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(tokens [batch, n_ctx], loss_mask [batch, n_ctx])``, right-padded with BOS/pad."""
    docs = documents(tokenizer, mix, n_ctx=n_ctx, seed=seed)
    pad = tokenizer.pad_token_id
    while True:
        rows = [next(docs) for _ in range(batch_size)]
        tokens = torch.full((batch_size, n_ctx), pad, dtype=torch.long)
        mask = torch.zeros((batch_size, n_ctx), dtype=torch.bool)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = True
        yield tokens, mask
