"""The task suite: pairs of equal token length, answers that are single tokens, a held-out split
the corpus never draws from, deterministic datasets, and the corpus's tokenizer."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from discovery.tasks import TASKS, get_task
from discovery.tasks.base import in_split
from discovery.tasks.tokens import tokenize_task
from discovery.zoo.corpus import task_sentence, vocabulary
from discovery.zoo.language import build_tokenizer, save_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tok")
    save_tokenizer(build_tokenizer(vocabulary()), directory, n_ctx=64)
    return AutoTokenizer.from_pretrained(directory)  # loads offline from tokenizer.json


def test_tokenizer_splits_years_like_gpt2(tokenizer):
    ids = tokenizer("from the year 1732 to", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["from", "the", "year", "17", "32", "to"]
    assert tokenizer.bos_token == tokenizer.pad_token == "<|endoftext|>"


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_tokenizes_in_equal_length_pairs(name, tokenizer):
    data = get_task(name).generate(50, seed=3)
    batch = tokenize_task(data, tokenizer, n_ctx=64)  # raises on unequal lengths / unknown words
    assert len(batch) == 50
    assert (batch.clean[:, 0] == tokenizer.bos_token_id).all()
    assert (batch.answers[:, 0] >= 0).all()
    assert not (batch.clean == batch.corrupt).all(dim=1).any()  # every corruption changes something


@pytest.mark.parametrize("name", list(TASKS))
def test_datasets_are_deterministic_and_hashed(name):
    a, b = get_task(name).generate(20, seed=1), get_task(name).generate(20, seed=1)
    assert a == b and a.dataset_hash == b.dataset_hash
    assert get_task(name).generate(20, seed=2).dataset_hash != a.dataset_hash


def test_test_split_is_never_in_the_corpus():
    rng = random.Random(0)
    for name in TASKS:
        test = {p.clean for p in get_task(name).generate(100, seed=0, split="test").pairs}
        assert all(in_split(c, "test") for c in test)
        sentences = [task_sentence(name, rng) for _ in range(300)]
        assert not any(s.startswith(c + " ") for s in sentences for c in test)


def test_ioi_has_both_orders_and_abc_corruption():
    pairs = get_task("ioi").generate(200, seed=0).pairs
    orders = set()
    for p in pairs:
        io, s = p.answers[0], p.wrongs[0]
        words = p.clean.split()
        assert words.count(s) == 2 and words.count(io) == 1
        orders.add(words.index(io) < words.index(s))
        corrupt_names = set(p.corrupt.split()) - set(p.clean.split())
        assert len(corrupt_names) == 3 and io not in p.corrupt.split()
    assert orders == {True, False}  # ABBA and BABA
    templates = {" ".join(w for w in p.clean.split() if w[0].islower() or w in ",.") for p in pairs}
    assert len(templates) >= 10


def test_greater_than_answers_are_later_years():
    for p in get_task("greater_than").generate(100, seed=0).pairs:
        yy = int(p.clean.split()[-5][2:])  # "... the year 1732 to the year 17"
        assert {int(a) for a in p.answers} == set(range(yy + 1, 100))
        assert p.corrupt.split()[-5].endswith("01")


def test_unknown_task_named():
    with pytest.raises(ValueError, match="unknown task 'nope'.*ioi"):
        get_task("nope")
