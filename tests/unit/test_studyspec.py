"""StudySpec: tasks by name or "all" (the model's card), methods from the catalog, the chosen point
(one threshold or one per method), the grid, the curve's ladder, and the caps on pieces and
circuits, each error naming its field; PieceSpec and the study's deterministic circuit ids."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from discovery.curves import MIB_FRACTIONS
from discovery.tasks import TASKS
from workers import studyspec
from workers.studyspec import PieceSpec, StudySpec, model_tasks, study_circuit_id, study_circuit_ids

BASE = {"model": "multitask", "methods": ["acdc", "eap", "eap-ig"]}


def _error(**changes) -> tuple[str, str]:
    """(the field the first error names, its message)."""
    with pytest.raises(ValidationError) as info:
        StudySpec(**{**BASE, **changes})
    first = info.value.errors()[0]
    return first["loc"][-1], first["msg"]


def test_all_is_every_task_the_model_was_trained_on():
    spec = StudySpec(**BASE)
    assert spec.tasks == list(TASKS) == model_tasks("multitask")  # the card evaluates all five
    assert model_tasks("induction-2l") == ["induction"]
    assert StudySpec(**BASE, tasks="all").tasks == StudySpec(**BASE, tasks=["all"]).tasks
    assert spec.n_pieces == 15
    assert spec.fractions == list(MIB_FRACTIONS) and spec.chosen("eap") == 0.01


def test_the_chosen_point_and_the_grid():
    spec = StudySpec(**BASE, tasks=["ioi"], threshold={"eap": 0.02}, thresholds=[0.01, 0.05])
    assert spec.points("acdc") == [0.01, 0.05]  # the chosen point first, never twice
    assert spec.points("eap") == [0.02, 0.01, 0.05]
    assert study_circuit_ids(spec, "S") == ["S.ioi.acdc", "S.ioi.acdc.t0.05", "S.ioi.eap", "S.ioi.eap.t0.01",
                                            "S.ioi.eap.t0.05", "S.ioi.eap-ig", "S.ioi.eap-ig.t0.05"]
    assert study_circuit_id("S", "ioi", "eap", 1e-05) == "S.ioi.eap.t1e-05"


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"model": "nomodel"}, "model", "unknown model 'nomodel'"),
    ({"tasks": ["ioi", "nope"]}, "tasks", "unknown task 'nope' at tasks[1]"),
    ({"tasks": ["ioi", "ioi"]}, "tasks", "each task at most once"),
    ({"tasks": []}, "tasks", "at least one"),
    ({"tasks": "some"}, "tasks", 'or "all"'),
    ({"methods": ["acdc", "magic"]}, "methods", "unknown method at methods[1] 'magic'"),
    ({"methods": []}, "methods", "at least one"),
    ({"methods": ["eap", "eap"]}, "methods", "each method at most once"),
    ({"threshold": -1}, "threshold", "finite number"),
    ({"threshold": {"acdc-reference": 0.1}}, "threshold", "not among methods"),
    ({"thresholds": [0.1] * 33}, "thresholds", "give 1 to 32"),
    ({"thresholds": [0.1, 0.1]}, "thresholds", "each threshold at most once"),
    ({"thresholds": [0.1, float("inf")]}, "thresholds", "thresholds[1]"),
    ({"methods": list(studyspec.METHODS), "thresholds": [0.001 * i for i in range(1, 20)]}, "thresholds",
     "would store 475 circuits"),
    ({"fractions": [0.5, 0.1]}, "fractions", "must be larger"),
    ({"fractions": [i / 100 for i in range(1, 101)]}, "fractions", "at most 64"),
    ({"n_prompts": 1}, "n_prompts", "greater than or equal"),
    ({"ablation": "loud"}, "ablation", "unknown ablation"),
    ({"metric": "kl"}, "metric", "Extra inputs"),
    ({"edge_order": "backwards"}, "edge_order", "random:<seed>"),
    ({"stability": 21}, "stability", "less than or equal to 20"),
])
def test_errors_name_the_field_and_the_fix(changes, field, words):
    where, message = _error(**changes)
    assert where == field and words in message, (where, message)


def test_too_many_pieces_is_refused_naming_methods(monkeypatch):
    monkeypatch.setattr(studyspec, "MAX_PIECES", 10)  # 5 built-in tasks x 5 methods cannot pass 64
    where, message = _error()
    assert where == "methods" and "5 tasks x 3 methods = 15 pieces" in message and "at most 10" in message


def test_a_piece_round_trips_through_json():
    piece = PieceSpec(parent="S", task="ioi", method="eap", study=StudySpec(**BASE, threshold={"eap": 0.02}))
    again = PieceSpec.model_validate_json(piece.model_dump_json())
    assert again == piece and again.study.chosen("eap") == 0.02 and again.queue("gpu") == "gpu"
    assert StudySpec(**BASE, device="cpu").queue("gpu") == "cpu"
