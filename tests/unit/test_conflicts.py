"""Conflict prompts: the built-in generators say what each task's own generator would say, their
prompts tokenize on the shipped multitask model and fit its context, custom sets are validated
with errors that name the field, and the batch and its summary are what the engine needs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from discovery.experiments.conflict_batch import answer_logits, summarize, tokenize_conflicts
from discovery.experiments.conflicts import (
    GENERATORS,
    ConflictPrompt,
    ConflictValidationError,
    builtin_conflicts,
    check_tokenizes,
    conflicts_hash,
    conflicts_to_json,
    has_generator,
    options_for_model,
    parse_conflicts,
)
from discovery.tasks import ioi, successor
from discovery.tasks.base import in_split
from discovery.zoo.language import MONTHS, NAMES, WEEKDAYS

ROOT = Path(__file__).resolve().parents[2]
MULTITASK = ROOT / "models" / "multitask"
N_CTX = json.loads((MULTITASK / "config.json").read_text())["n_positions"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MULTITASK)


def _template_regex(template: str, slots: dict[str, str]) -> re.Pattern:
    pattern = re.escape(template)
    for slot, group in slots.items():
        pattern = pattern.replace(re.escape("{" + slot + "}"), group)  # each slot occurs once
    return re.compile(pattern + "$")


def _split_copies(prompt: str) -> tuple[str, str]:
    """``base X . base`` -> (base, X)."""
    words = prompt.split(" ")
    n = (len(words) - 2) // 2
    base = " ".join(words[:n])
    assert words[n + 1] == "." and " ".join(words[n + 2:]) == base, prompt
    return base, words[n]


def _ioi_names(base: str) -> dict[str, str] | None:
    for template in ioi.TEMPLATES:
        rx = _template_regex(template, {"A": r"(?P<A>\w+)", "B": r"(?P<B>\w+)", "S": r"(?P<S>\w+)",
                                        "PLACE": r"(?P<PLACE>\w+)", "OBJECT": r"(?P<OBJECT>\w+)"})
        match = rx.match(base)
        if match:
            return match.groupdict()
    return None


def test_ioi_induction_answers_are_ioi_io_and_the_copied_subject():
    prompts = builtin_conflicts("ioi", "induction", 100, seed=0)
    orders = set()
    for p in prompts:
        base, completion = _split_copies(p.prompt)
        names = _ioi_names(base)
        assert names is not None, f"not an IOI prompt: {base}"
        s = names["S"]
        assert s in (names["A"], names["B"]) and names["A"] != names["B"]
        io = names["B"] if names["A"] == s else names["A"]
        assert p.answers == {"ioi": io, "induction": s}  # IOI's IO; what follows 'to' in copy one
        assert completion == s and base.split().count("to") == 1 and base.endswith(" to")
        assert in_split(base, "test")  # never a training sentence
        orders.add(names["A"] == io)
    assert orders == {True, False}  # ABBA and BABA, as the IOI task


def test_successor_induction_answers_are_the_true_successor_and_the_counterfactual():
    prompts = builtin_conflicts("successor", "induction", 100, seed=0)
    for p in prompts:
        base, counterfactual = _split_copies(p.prompt)
        for template, cycle in successor.TEMPLATES:
            match = _template_regex(template, {"X": r"(?P<X>\w+)", "N": r"(?P<N>\w+)"}).match(base)
            if match and match["X"] in cycle:
                break
        else:
            raise AssertionError(f"not a successor prompt: {base}")
        x = cycle.index(match["X"])
        assert p.answers["successor"] == cycle[(x + 1) % len(cycle)]
        assert p.answers["induction"] == counterfactual
        assert counterfactual in cycle and counterfactual not in (match["X"], p.answers["successor"])
        assert in_split(base, "test")
    assert {c for p in prompts for c in (WEEKDAYS, MONTHS) if p.answers["successor"] in c} == {WEEKDAYS, MONTHS}


def test_generators_are_deterministic_distinct_and_work_in_either_order():
    for a, b in GENERATORS:
        first = builtin_conflicts(a, b, 60, seed=3)
        assert first == builtin_conflicts(a, b, 60, seed=3)
        assert first != builtin_conflicts(a, b, 60, seed=4)
        assert len({p.prompt for p in first}) == 60
        flipped = builtin_conflicts(b, a, 60, seed=3)
        assert [p.prompt for p in flipped] == [p.prompt for p in first]
        assert list(flipped[0].answers) == [b, a] and list(first[0].answers) == [a, b]
        assert all(len(set(p.answers.values())) == 2 for p in first)
        assert has_generator(a, b) and has_generator(b, a)
    assert not has_generator("ioi", "greater_than")
    with pytest.raises(ValueError, match="no built-in conflict prompts for ioi x greater_than"):
        builtin_conflicts("ioi", "greater_than", 5)
    with pytest.raises(ValueError, match="n_conflicts"):
        builtin_conflicts("ioi", "induction", 0)


def test_options_narrow_the_names():
    names = ["John", "Mary", "Tom"]
    prompts = builtin_conflicts("ioi", "induction", 20, options={"names": names})
    assert {w for p in prompts for w in p.answers.values()} <= set(names)
    with pytest.raises(ValueError, match="unknown option"):
        builtin_conflicts("ioi", "induction", 5, options={"pool": names})
    gt = json.loads((ROOT / "models" / "induction-gt" / "config.json").read_text())
    options = options_for_model(gt["circuit_atlas"]["tasks"])
    assert options and set(options["names"]) <= set(NAMES) and len(options["names"]) >= 2
    assert options_for_model({}) is None


def test_builtin_prompts_tokenize_on_multitask_and_fit(tokenizer):
    for a, b in GENERATORS:
        prompts = builtin_conflicts(a, b, 300, seed=1)
        check_tokenizes(prompts, MULTITASK / "tokenizer.json", N_CTX)  # raises on any problem
        batch = tokenize_conflicts(prompts, tokenizer, n_ctx=N_CTX, tasks=(a, b))
        assert batch.tokens.shape[0] == len(batch) == 300 and batch.tokens.shape[1] <= N_CTX
        assert (batch.tokens[:, 0] == tokenizer.bos_token_id).all()
        for i in (0, 7, 299):
            ids = tokenizer(prompts[i].prompt, add_special_tokens=False)["input_ids"]
            assert batch.tokens[i, 1:int(batch.last[i]) + 1].tolist() == ids
            for task in (a, b):
                assert batch.answer[task][i] == tokenizer.convert_tokens_to_ids(prompts[i].answers[task])
        assert batch.tasks == (a, b)


def _raw(n: int = 2) -> list[dict]:
    return [{"prompt": f"When Mary and John went to the store , John gave a drink to {i}",
             "answers": {"ioi": "Mary", "induction": "John"}} for i in range(n)]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: [], "conflicts: empty; give at least one prompt"),
    (lambda r: {"prompt": "x"}, "conflicts: must be a list"),
    (lambda r: r + ["text"], r"conflicts\[2\]: must be an object"),
    (lambda r: [r[0], {**r[1], "wrong": "x"}], r"conflicts\[1\]: unknown field\(s\) \['wrong'\]"),
    (lambda r: [r[0], {"answers": r[1]["answers"]}], r"conflicts\[1\].prompt: missing or empty"),
    (lambda r: [{**r[0], "prompt": "a " * 1001}], r"conflicts\[0\].prompt: 2002 characters"),
    (lambda r: [{"prompt": "x"}], r"conflicts\[0\].answers: missing"),
    (lambda r: [r[0], {"prompt": "x", "answers": {"ioi": "Mary"}}],
     r"conflicts\[1\].answers.induction: missing; give induction's answer token"),
    (lambda r: [{"prompt": "x", "answers": {"ioi": "Mary", "induction": "J", "pronoun": "he"}}],
     r"conflicts\[0\].answers: unknown task\(s\) \['pronoun'\]"),
    (lambda r: r + r + [{"prompt": "x", "answers": {"ioi": " ", "induction": "John"}}],
     r"conflicts\[4\].answers.ioi: must be a non-empty string"),
    (lambda r: [{"prompt": "x", "answers": {"ioi": "Mary", "induction": " Mary"}}],
     r"conflicts\[0\].answers: ioi and induction both answer 'Mary'; .*different answers"),
    (lambda r: r * 1001, "conflicts: 2002 prompts; give at most 2000"),
])
def test_parse_errors_name_the_field(mutate, message):
    with pytest.raises(ConflictValidationError, match=message):
        parse_conflicts(mutate(_raw()), ("ioi", "induction"))


def test_parse_round_trip_hash_and_where():
    prompts = parse_conflicts(_raw(3), ("induction", "ioi"))
    assert list(prompts[0].answers) == ["induction", "ioi"]
    again = parse_conflicts(conflicts_to_json(prompts), ("induction", "ioi"))
    assert again == prompts and conflicts_hash(again) == conflicts_hash(prompts)
    assert conflicts_hash(prompts) != conflicts_hash(prompts[::-1])
    assert re.fullmatch(r"[0-9a-f]{64}", conflicts_hash(prompts))
    with pytest.raises(ConflictValidationError, match=r"^conflicts\.ioi\|induction\[0\]\.answers\.ioi"):
        parse_conflicts([{"prompt": "x", "answers": {"induction": "A"}}], ("ioi", "induction"),
                        where="conflicts.ioi|induction")


BAD_FOR_TOKENIZER = [
    (ConflictPrompt("When Mary and Zorblax went to the store , Mary gave a drink to",
                    {"ioi": "Zorblax", "induction": "Mary"}),
     r"conflicts\[1\].prompt: \['Zorblax'\] unknown to the model's tokenizer"),
    (ConflictPrompt("In the year 1732 the war began , in", {"ioi": "1732", "induction": "Mary"}),
     r"conflicts\[1\].answers.ioi: '1732' is 2 tokens for this tokenizer; .*exactly one token"),
    (ConflictPrompt("Mary and John went to", {"ioi": "Mary", "induction": "Glorp"}),
     r"conflicts\[1\].answers.induction: 'Glorp' unknown to the model's tokenizer"),
    (ConflictPrompt(" ".join(["Mary"] * 48), {"ioi": "Mary", "induction": "John"}),
     r"conflicts\[1\].prompt: 48 tokens; with BOS it must fit the model's context of 48"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_FOR_TOKENIZER)
def test_check_tokenizes_and_tokenize_conflicts_reject(bad, message, tokenizer):
    good = builtin_conflicts("ioi", "induction", 1)[0]
    with pytest.raises(ConflictValidationError, match=message):
        check_tokenizes([good, bad], MULTITASK / "tokenizer.json", N_CTX)
    with pytest.raises(ConflictValidationError, match=message):
        tokenize_conflicts([good, bad], tokenizer, n_ctx=N_CTX, tasks=("ioi", "induction"))
    check_tokenizes([good, ConflictPrompt(" ".join(["Mary"] * 47), good.answers)],
                    MULTITASK / "tokenizer.json", N_CTX)  # 47 + BOS fits exactly


def test_tokenize_conflicts_pads_right_and_checks_the_pair(tokenizer):
    short = ConflictPrompt("Mary and John went to", {"ioi": "Mary", "induction": "John"})
    long_ = builtin_conflicts("ioi", "induction", 1)[0]
    batch = tokenize_conflicts([short, long_], tokenizer, n_ctx=N_CTX, tasks=("ioi", "induction"))
    assert batch.last.tolist() == [5, batch.tokens.shape[1] - 1]
    assert (batch.tokens[0, 6:] == tokenizer.pad_token_id).all()
    with pytest.raises(ConflictValidationError, match=r"conflicts\[0\].answers: tasks"):
        tokenize_conflicts([short], tokenizer, n_ctx=N_CTX, tasks=("ioi", "successor"))
    with pytest.raises(ConflictValidationError, match="conflicts: empty"):
        tokenize_conflicts([], tokenizer, n_ctx=N_CTX, tasks=("ioi", "induction"))


def test_summary_counts_wins_top1_and_the_logit_difference(tokenizer):
    prompts = [ConflictPrompt("Mary and John went to", {"ioi": "Mary", "induction": "John"})] * 4
    batch = tokenize_conflicts(prompts, tokenizer, n_ctx=N_CTX, tasks=("ioi", "induction"))
    mary, john, tom = (tokenizer.convert_tokens_to_ids(w) for w in ("Mary", "John", "Tom"))
    logits = torch.zeros(4, batch.tokens.shape[1], len(tokenizer))
    for i, (lm, lj, lt) in enumerate([(3, 1, 0), (2, 0, 0), (0, 1, 0), (1, 1, 5)]):
        logits[i, batch.last[i], [mary, john, tom]] = torch.tensor([lm, lj, lt], dtype=torch.float)
    assert answer_logits(logits, batch)["ioi"].tolist() == [3, 2, 0, 1]
    summary = summarize(logits, batch, source="custom")
    assert summary.pair == "ioi|induction" and summary.n_prompts == 4
    assert summary.win_rate == {"ioi": 0.5, "induction": 0.25}  # the tie counts for neither
    assert summary.top1_rate == {"ioi": 0.5, "induction": 0.25, "other": 0.25}
    assert summary.logit_diff_mean == pytest.approx(0.75)


def test_conflicts_module_is_torch_free():
    code = ("import sys, discovery.experiments.conflicts as c; "
            "c.builtin_conflicts('ioi', 'induction', 3); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
