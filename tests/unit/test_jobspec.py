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
    assert spec.task_name == "names" and len(spec.custom_task().pairs) == 1
    assert JobSpec(model="multitask", task="ioi").custom_task() is None


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"model": "nope"}, "model", "multitask"),
    ({"task": "nope"}, "task", "ioi"),
    ({"task": {**CUSTOM, "pairs": [{"clean": "x"}]}}, "task", "pairs[0]"),
    ({"method": "nope"}, "method", "eap-ig"),
    ({"metric": "nope"}, "metric", "logit_diff"),
    ({"ablation": "nope"}, "ablation", "corrupt"),
    ({"method": "acdc", "top_n": 5}, "", "top_n"),
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
