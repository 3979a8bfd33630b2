"""Job specs are validated at the edge, torch-free, and routed to a queue by device."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from workers.jobspec import JobSpec

CUSTOM = {"name": "names", "metric": "logit_diff",
          "pairs": [{"clean": "When Mary and John went, John gave it to", "corrupt":
                     "When Anna and Paul went, John gave it to", "answer": "Mary", "wrong": "John"}]}


@pytest.mark.parametrize(("device", "auto", "queue"), [
    ("cpu", "gpu", "cpu"), ("cuda", "cpu", "gpu"), ("auto", "cpu", "cpu"), ("auto", "gpu", "gpu"),
])
def test_jobs_route_by_device(device, auto, queue):
    assert JobSpec(model="multitask", task="ioi", device=device).queue(auto) == queue


def test_inline_custom_task_is_parsed_and_named():
    spec = JobSpec(model="multitask", task=CUSTOM)
    assert spec.task_name == "custom:names" and len(spec.custom_task().pairs) == 1
    assert spec.custom_task().name == "custom:names"
    assert JobSpec(model="multitask", task="ioi").custom_task() is None


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"model": "nope"}, "model", "multitask"),
    ({"task": "nope"}, "task", "ioi"),
    ({"task": {**CUSTOM, "pairs": [{"clean": "x"}]}}, "task", "pairs[0]"),
    ({"method": "nope"}, "method", "eap-ig"),
    ({"metric": "nope"}, "metric", "logit_diff"),
    ({"ablation": "nope"}, "ablation", "corrupt"),
    ({"method": "acdc", "top_n": 5}, "", "top_n"),
    ({"edge_order": "sideways"}, "edge_order", "auto-circuit"),
    ({"edge_order": "random:x"}, "edge_order", "random:<seed>"),
    ({"stability": 21}, "stability", "20"),
])
def test_bad_specs_name_the_field_and_the_choices(change, field, words):
    with pytest.raises(ValidationError) as info:
        JobSpec(**{"model": "multitask", "task": "ioi", **change})
    error = info.value.errors()[0]
    assert field in [str(p) for p in error["loc"]] or not field
    assert words in error["msg"]


def test_validating_a_spec_does_not_load_torch():
    code = ("import sys; from workers.jobspec import JobSpec; JobSpec(model='multitask', task='ioi'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["induction", "ioi", "custom:induction", " induction "])
def test_custom_tasks_live_in_their_own_namespace(name):
    """A custom task named like a built-in one can never pose as it."""
    spec = JobSpec(model="multitask", task={**CUSTOM, "name": name})
    assert spec.task_name == "custom:induction" or spec.task_name == "custom:ioi"
    assert spec.custom_task().name == spec.task_name


BIG_PAIR = {"clean": "a b", "corrupt": "c d", "answer": "x", "wrong": "y"}


@pytest.mark.parametrize(("change", "words"), [
    ({"threshold": float("nan")}, "finite"),
    ({"threshold": float("inf")}, "finite"),
    ({"threshold": float("-inf")}, "finite"),
    ({"threshold": -1.0}, "greater than 0"),
    ({"threshold": 1e300}, "less than or equal"),
    ({"seed": 2**64}, "less than or equal"),
    ({"seed": -1}, "greater than or equal"),
    ({"top_n": 10**12, "method": "eap"}, "less than or equal"),
    ({"model": "m" * 100_000}, "at most 200"),
    ({"task": "t" * 100_000}, "unknown task"),
    ({"task": {**CUSTOM, "name": "n" * 100_000}}, "1-64"),
    ({"task": {**CUSTOM, "name": "bad name!"}}, "1-64"),
    ({"task": {**CUSTOM, "junk": "x" * 800_000}}, "bytes of JSON"),
    ({"task": {**CUSTOM, "junk": "x"}}, "unknown field"),
    ({"task": {**CUSTOM, "description": "x" * 5000}}, "description"),
    ({"task": {**CUSTOM, "pairs": [BIG_PAIR] * 5000}}, "at most 2000"),
    ({"task": {**CUSTOM, "pairs": [{**BIG_PAIR, "clean": "a " * 2000}]}}, "at most 2000"),
    ({"task": {**CUSTOM, "pairs": [{**BIG_PAIR, "answer": ["x"] * 100}]}}, "at most 32"),
])
def test_out_of_range_inputs_are_refused(change, words):
    with pytest.raises(ValidationError) as info:
        JobSpec(**{"model": "multitask", "task": "ioi", **change})
    message = " ".join(e["msg"] for e in info.value.errors())
    assert words in message
    assert len(message) < 2000  # a huge input is never echoed back whole


def test_a_full_size_custom_task_is_accepted():
    spec = JobSpec(model="multitask", task={**CUSTOM, "pairs": [BIG_PAIR] * 2000})
    assert len(spec.custom_task().pairs) == 2000
