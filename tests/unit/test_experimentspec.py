"""The experiment job spec: every bad input is refused naming its field, without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from workers.experimentspec import DEFAULT_ALPHAS, ExperimentSpec

BASE = {"model": "multitask", "tasks": ["ioi", "induction"]}
CUSTOM = {"name": "names", "metric": "logit_diff",
          "pairs": [{"clean": "When Mary and John went to the store , John gave a drink to",
                     "corrupt": "When Anna and Paul went to the store , Tom gave a drink to",
                     "answer": "Mary", "wrong": "John"}]}


def refusal(**changes) -> str:
    with pytest.raises(ValidationError) as caught:
        ExperimentSpec(**{**BASE, **changes})
    return str(caught.value)


def test_defaults_and_task_names():
    spec = ExperimentSpec(**BASE)
    assert spec.alphas == sorted(DEFAULT_ALPHAS) and spec.n_controls == 20 and spec.circuits is None
    custom = ExperimentSpec(model="multitask", tasks=[CUSTOM, "induction"],
                            conflicts={"custom:names|induction": [
                                {"prompt": "Mary and John . John gave it to",
                                 "answers": {"custom:names": "Mary", "induction": "John"}}]})
    assert custom.task_names == ["custom:names", "induction"]
    assert list(custom.custom_tasks()) == ["custom:names"]


@pytest.mark.parametrize("changes, words", [
    ({"tasks": ["ioi"]}, "at least two"),
    ({"tasks": ["ioi", "ioi"]}, "repeat"),
    ({"tasks": ["ioi", "nope"]}, "tasks[1]: unknown task"),
    ({"alphas": [0, 2]}, "must include 1"),
    ({"alphas": [float(i) for i in range(13)]}, "at most 12"),
    ({"alphas": [1, 1e9]}, "out of range"),
    ({"n_controls": 5}, "n_controls"),
    ({"circuits": ["x"]}, "one circuit per task"),
    ({"circuits": ["x", "x"]}, "circuits repeat"),
    ({"ablation": "nope"}, "unknown ablation"),
    ({"conflicts": {"ioi|induction": []}}, "empty"),
    ({"conflicts": {"ioi|pronoun": []}}, "not a pair"),
    ({"tasks": ["ioi", "pronoun"]}, "no built-in conflict prompts for ioi x pronoun"),
    ({"conflicts": {"ioi|induction": [{"prompt": "When Zorg and Mary went to",
                                       "answers": {"ioi": "Mary", "induction": "John"}}]}}, "Zorg"),
])
def test_bad_specs_name_the_field(changes, words):
    assert words in refusal(**changes)


def test_the_spec_loads_no_torch():
    code = ("import sys; from workers.experimentspec import ExperimentSpec; "
            "ExperimentSpec(model='multitask', tasks=['ioi', 'induction']); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
