"""TimelineSpec: the run named by a shipped name or a directory, resolved to an absolute path and
checked before anything is queued; tasks, method and metric checked by name."""

from __future__ import annotations

import json
import shutil

import pytest
from pydantic import ValidationError

from discovery.catalog import shipped_runs
from workers.timelinespec import MAX_CHECKPOINTS, TimelineSpec


def _error(**body) -> str:
    with pytest.raises(ValidationError) as info:
        TimelineSpec(**body)
    return str(info.value)


def test_a_shipped_run_by_name_and_a_relative_directory_resolve_to_one_path(monkeypatch):
    shipped = shipped_runs()["induction-2l"]
    spec = TimelineSpec(run="induction-2l", tasks=["induction"])
    assert spec.run == str(shipped.resolve())
    monkeypatch.chdir(shipped.parent)
    assert TimelineSpec(run="./induction-2l", tasks=["induction"]).run == spec.run
    assert spec.params().wants_induction(spec.tasks) and len(spec.read().checkpoints) == 16


def test_errors_name_the_field_and_the_fix(tmp_path):
    assert "neither a shipped run" in _error(run=str(tmp_path), tasks=["induction"])
    for odd in ("0" * 1000, "a\x00b", "~nobody-here/x"):  # too long for the filesystem, a NUL byte
        assert "neither a shipped run" in _error(run=odd, tasks=["induction"])
    assert "tasks[1]: unknown task 'nope'" in _error(run="induction-2l", tasks=["ioi", "nope"])
    assert "each task at most once" in _error(run="induction-2l", tasks=["ioi", "ioi"])
    assert "unknown method 'magic'" in _error(run="induction-2l", tasks=["ioi"], method="magic")
    assert "unknown metric 'loud'" in _error(run="induction-2l", tasks=["ioi"], metric="loud")
    assert "extra" in _error(run="induction-2l", tasks=["ioi"], model="multitask").lower()


def test_a_broken_run_is_refused_with_the_run_json_field(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(shipped_runs()["induction-2l"], run)
    manifest = json.loads((run / "run.json").read_text())
    manifest["checkpoints"][3]["path"] = "checkpoints/gone"
    (run / "run.json").write_text(json.dumps(manifest))
    assert "checkpoints[3].path 'checkpoints/gone' is not a model directory" in _error(
        run=str(run), tasks=["induction"])
    first = manifest["checkpoints"][0]
    manifest["checkpoints"] = [{**first, "step": s} for s in range(1, MAX_CHECKPOINTS + 2)]
    manifest["steps"] = MAX_CHECKPOINTS + 1
    (run / "run.json").write_text(json.dumps(manifest))
    assert f"{MAX_CHECKPOINTS + 1} checkpoints; a timeline takes at most {MAX_CHECKPOINTS}" in _error(
        run=str(run), tasks=["induction"])
