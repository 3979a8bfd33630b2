"""Custom tasks from JSON: every class of bad input gets a message naming the pair and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from discovery.tasks.base import TaskValidationError
from discovery.tasks.custom import load_custom_task, parse_custom_task
from discovery.tasks.tokens import tokenize_task
from discovery.zoo.corpus import vocabulary
from discovery.zoo.language import build_tokenizer, save_tokenizer

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"clean": "When Mary and John went to the store , John gave a drink to",
        "corrupt": "When Anna and Tom went to the store , Paul gave a drink to",
        "answer": "Mary", "wrong": "John"}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tok")
    save_tokenizer(build_tokenizer(vocabulary()), directory, n_ctx=64)
    return AutoTokenizer.from_pretrained(directory)


def task(*pairs, metric="logit_diff"):
    return {"name": "custom", "metric": metric, "pairs": list(pairs)}


def check(data, tokenizer, n_ctx=64):
    return tokenize_task(parse_custom_task(data), tokenizer, n_ctx=n_ctx)


def test_good_task_with_lists(tokenizer):
    batch = check(task(GOOD, dict(GOOD, answer=["Mary", "Anna"], wrong=["John"])), tokenizer)
    assert batch.answers.shape == (2, 2) and batch.answers[0, 1] == -1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (task(GOOD, metric="accuracy"), r"metric: 'accuracy' is not one of logit_diff"),
        ({"metric": "kl", "pairs": [GOOD]}, r"name: missing"),
        (task(), r"pairs: missing or empty"),
        (task(dict(GOOD, answer=[])), r"pairs\[0\]\.answer: empty"),
        (task(GOOD, dict(GOOD, wrong=[])), r"pairs\[1\]\.wrong: empty"),
        (task(dict(GOOD, clean="")), r"pairs\[0\]\.clean: missing or empty"),
        (task(dict(GOOD, extra=1)), r"pairs\[0\]: unknown field"),
        (task(GOOD, "not an object"), r"pairs\[1\]: must be an object"),
    ],
)
def test_structural_errors_name_the_field(data, message, tokenizer):
    with pytest.raises(TaskValidationError, match=message):
        check(data, tokenizer)


def test_unequal_token_lengths(tokenizer):
    bad = dict(GOOD, corrupt="When Anna and Tom went to the park store , Paul gave a drink to")
    with pytest.raises(TaskValidationError, match=r"pairs\[1\]: clean is 15 tokens but corrupt is 16"):
        check(task(GOOD, bad), tokenizer)


def test_unknown_tokens(tokenizer):
    bad = dict(GOOD, corrupt="When Anna and Zorblax went to the store , Paul gave a drink to")
    with pytest.raises(TaskValidationError, match=r"pairs\[0\]\.corrupt: \['Zorblax'\] unknown"):
        check(task(bad), tokenizer)
    with pytest.raises(TaskValidationError, match=r"pairs\[0\]\.answer: 'Mary Anna' is 2 tokens"):
        check(task(dict(GOOD, answer="Mary Anna")), tokenizer)


def test_prompt_longer_than_context(tokenizer):
    with pytest.raises(TaskValidationError, match=r"pairs\[0\]\.clean: 15 tokens is longer than the model's context of 8"):
        check(task(GOOD), tokenizer, n_ctx=8)


def test_file_errors(tmp_path):
    with pytest.raises(TaskValidationError, match="does not exist"):
        load_custom_task(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TaskValidationError, match="not valid JSON"):
        load_custom_task(tmp_path / "bad.json")


def test_cli_reports_the_field_without_traceback(tmp_path):
    path = tmp_path / "task.json"
    path.write_text(json.dumps(task(dict(GOOD, answer=[]))))
    done = subprocess.run([sys.executable, "-m", "api.cli", "tasks", "show", str(path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1
    assert "pairs[0].answer: empty" in done.stderr and "Traceback" not in done.stderr
