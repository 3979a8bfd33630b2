"""The timeline library (issue 14): circuits per checkpoint of a run, Jaccard to the final circuit,
stabilisation and change-point logic, moved components, induction diagnostics, JSON round trip.

The run is a stand-in for a checkpointed run (``circuits train --checkpoints``, written by other
work): the tiny recipe (warm-up cut to 5 steps so it learns something) trained three times from
scratch with 50, 150 and 300 steps (same seed and data; each one's cosine schedule is its own, so
these are runs of increasing length rather than prefixes of one run), each into
``DIR/checkpoints/step-XXXXXX``, and ``DIR/run.json`` written by hand in the run format, with
train_loss the last training step's loss."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from discovery.timeline import (
    Timeline,
    change_point,
    jaccard,
    moved_components,
    read_run,
    stabilisation_step,
    timeline,
)

STEPS = (50, 150, 300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from discovery.zoo.recipes import RECIPES
    from discovery.zoo.train import train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    checkpoints = []
    for step in STEPS:
        losses: list[float] = []
        path = Path("checkpoints") / f"step-{step:06d}"
        card = train(replace(RECIPES["tiny"], steps=step, warmup=5, eval_prompts=10), out / path,
                     progress=lambda s, total, loss, losses=losses: losses.append(loss))
        checkpoints.append({"step": step, "path": str(path), "train_loss": losses[-1],
                            "eval": card["eval"]})
    (out / "run.json").write_text(json.dumps({"recipe": "tiny", "seed": 0, "steps": STEPS[-1],
                                              "arch": "gpt2", "checkpoints": checkpoints,
                                              "final": "."}))
    return out


@pytest.fixture(scope="module")
def result(run_dir) -> Timeline:
    seen = []
    # The tiny model barely changes its outputs under ablation, so ACDC's KL threshold keeps no
    # edge; EAP's top 8 edges give circuits that differ between checkpoints.
    t = timeline(run_dir, ["induction", "ioi"], method="eap", top_n=8, n_prompts=8,
                 progress=lambda done, total, msg: seen.append((done, total)))
    assert seen[-1] == (len(STEPS) * 2, len(STEPS) * 2)
    return t


def test_one_row_per_step_and_task_with_the_run_numbers(result, run_dir):
    assert sorted((r.step, r.task) for r in result.rows) == sorted(
        (s, t) for s in STEPS for t in ("induction", "ioi"))
    run = read_run(run_dir)
    for checkpoint in run.checkpoints:
        row = result.row(checkpoint.step, "ioi")
        assert row.train_loss == checkpoint.train_loss
        assert row.accuracy == checkpoint.eval["ioi"]["accuracy"]
        circuit = result.circuits[checkpoint.step, "ioi"]
        assert row.n_edges == len(circuit.edges) and row.n_nodes == len(circuit.nodes)
        assert set(row.nodes) == {n.name for n in circuit.nodes}
    # losses fall with training: the stand-in checkpoints are ordered
    assert result.row(STEPS[-1], "ioi").train_loss < result.row(STEPS[0], "ioi").train_loss


def test_jaccard_to_final_is_one_at_the_final_step(result):
    assert any(r.jaccard_edges < 1.0 for r in result.rows)  # the circuits do change over training
    for task in result.tasks:
        final = result.row(STEPS[-1], task)
        assert final.jaccard_edges == 1.0 and final.jaccard_nodes == 1.0
        assert all(0.0 <= r.jaccard_edges <= 1.0 for r in result.rows)
        assert result.stabilisation[task] == stabilisation_step(
            result.series(task, "jaccard_edges"), level=result.level)


def test_default_acdc_timeline(run_dir):
    t = timeline(run_dir, ["ioi"], n_prompts=8)
    assert t.method == "acdc" and [r.step for r in t.rows] == list(STEPS) and not t.induction
    assert t.row(STEPS[-1], "ioi").jaccard_edges == 1.0 and t.pairs == []


def test_induction_diagnostics_score_every_head_in_unit_interval(result):
    assert sorted(result.induction) == list(STEPS)
    for diag in result.induction.values():
        assert sorted(diag["heads"]) == ["a0.h0", "a0.h1", "a1.h0", "a1.h1"]
        for scores in diag["heads"].values():
            assert 0.0 <= scores["previous_token"] <= 1.0 and 0.0 <= scores["induction"] <= 1.0
        assert diag["in_context_loss"] == pytest.approx(diag["late_loss"] - diag["early_loss"])
    assert result.in_context_change_point == change_point(
        [(s, d["in_context_loss"]) for s, d in sorted(result.induction.items())])


def test_induction_diagnostics_see_the_trained_induction_circuit():
    """On the shipped induction-2l (trained past its phase change): a previous-token head in layer
    0, an induction head in layer 1, and a strongly negative in-context loss (measured: a0.h1 0.91,
    a1.h0 0.98, in-context loss -4.6)."""
    from discovery.models import load_model
    from discovery.timeline.induction import induction_diagnostics

    diag = induction_diagnostics(load_model("induction-2l", device="cpu"))
    heads = diag["heads"]
    previous = max(heads, key=lambda h: heads[h]["previous_token"])
    induction = max(heads, key=lambda h: heads[h]["induction"])
    assert previous.startswith("a0.") and heads[previous]["previous_token"] > 0.5
    assert induction.startswith("a1.") and heads[induction]["induction"] > 0.5
    assert diag["in_context_loss"] < -1.0 and diag["late_loss"] < diag["early_loss"]


def test_cookbook_when_did_a_component_join(result):
    task = "induction"
    for component in {n for r in result.rows if r.task == task for n in r.nodes}:
        joined = result.joined(task, component)
        assert component in result.row(joined, task).nodes
        assert all(component not in result.row(s, task).nodes for s in STEPS if s < joined)
    assert result.joined(task, "a9.h9") is None


def test_round_trip_through_json(result):
    data = json.loads(json.dumps(result.to_dict()))
    back = Timeline.from_dict(data)
    assert back.to_dict() == result.to_dict()
    assert back.rows == result.rows and set(back.circuits) == set(result.circuits)
    assert [p["first"] for p in back.pairs] == ["induction"]


def test_stabilisation_step_on_hand_made_series():
    assert stabilisation_step([(0, 0.1), (10, 0.85), (20, 0.9), (30, 1.0)]) == 10
    # dips again: stable only from the return
    assert stabilisation_step([(0, 0.9), (10, 0.5), (20, 0.8), (30, 1.0)]) == 20
    # reaches the final circuit only at the final checkpoint: never stabilised within the run
    assert stabilisation_step([(0, 0.1), (10, 0.5), (20, 0.3), (30, 1.0)]) is None
    assert stabilisation_step([(0, 0.1), (10, 0.5), (20, 0.3), (30, 1.0)], min_points=1) == 30
    assert stabilisation_step([(0, 0.1), (10, 0.7), (20, 0.75)], level=0.7) == 10
    assert stabilisation_step([]) is None
    with pytest.raises(ValueError, match="ascending"):
        stabilisation_step([(10, 1.0), (0, 1.0)])


def test_change_point_is_the_largest_drop():
    assert change_point([(0, 0.0), (10, -0.1), (20, -1.5), (30, -1.6)]) == 20
    assert change_point([(0, 0.0), (10, 0.5)]) is None  # no drop
    assert change_point([(0, 1.0)]) is None


def test_moved_components_and_jaccard_on_hand_made_membership():
    first = {0: {"embed", "a0.h0", "a1.h1", "logits"}, 10: {"embed", "a0.h0", "logits"},
             20: {"embed", "logits"}}
    second = {0: {"embed", "logits"}, 10: {"embed", "a1.h1", "logits"},
              20: {"embed", "a0.h0", "a1.h1", "logits"}}
    assert moved_components(first, second) == {"a0.h0": {"first_at": 0, "moved_at": 20},
                                               "a1.h1": {"first_at": 0, "moved_at": 10}}
    assert moved_components(second, first) == {}  # a1.h1 is in second at 10 but never in first later
    # shared at the same step is not a move
    assert moved_components({0: {"m0"}, 10: {"m0"}}, {0: set(), 10: {"m0"}}) == {}
    # in the second task's circuit all along: it never served the first alone, so it did not move
    assert moved_components({0: {"c"}, 10: {"c"}, 20: set()}, {0: {"c"}, 10: {"c"}, 20: {"c"}}) == {}
    # flickering between the two and back is no move; settling in the second from 20 on is
    assert moved_components({0: {"c"}, 10: set(), 20: {"c"}}, {0: set(), 10: {"c"}, 20: set()}) == {}
    assert moved_components({0: {"c"}, 10: set(), 20: {"c"}, 30: set()},
                            {0: set(), 10: {"c"}, 20: set(), 30: {"c"}}) == {"c": {"first_at": 0, "moved_at": 30}}
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3) and jaccard(set(), set()) == 1.0


def test_read_run_errors_name_the_field_and_the_fix(tmp_path, run_dir):
    with pytest.raises(ValueError, match="--checkpoints"):
        read_run(tmp_path)
    data = json.loads((run_dir / "run.json").read_text())
    bad = [{**data["checkpoints"][0], "path": "nope"}]
    (tmp_path / "run.json").write_text(json.dumps({**data, "checkpoints": bad}))
    with pytest.raises(ValueError, match=r"checkpoints\[0\].path 'nope' is not a model directory"):
        read_run(tmp_path)
    del data["arch"]
    (tmp_path / "run.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="missing field 'arch'"):
        read_run(tmp_path)
    with pytest.raises(ValueError, match="tasks is empty"):
        timeline(run_dir, [])


def test_timeline_of_a_run_from_the_checkpointing_trainer(tmp_path):
    """The same analysis on a run ``train(..., checkpoint_steps=...)`` wrote (discovery.zoo.runs'
    run.json): checkpoints of one run rather than the stand-in's separate runs."""
    from discovery.zoo.recipes import RECIPES
    from discovery.zoo.train import train

    train(replace(RECIPES["tiny"], steps=STEPS[-1], warmup=5, eval_prompts=10), tmp_path,
          checkpoint_steps=list(STEPS))
    t = timeline(tmp_path, ["induction", "ioi"], method="eap", top_n=8, n_prompts=8)
    assert sorted((r.step, r.task) for r in t.rows) == sorted(
        (s, task) for s in STEPS for task in ("induction", "ioi"))
    assert all(t.row(STEPS[-1], task).jaccard_edges == 1.0 for task in t.tasks)
    assert t.row(STEPS[-1], "ioi").train_loss < t.row(STEPS[0], "ioi").train_loss
    assert sorted(t.induction) == list(STEPS)


def test_empty_circuits_neither_overlap_nor_stabilise():
    """Before a task's circuit exists (ACDC keeps no edge), two empty circuits are not 'fully
    shared' (overlap None, not Jaccard 1.0), and an empty final circuit is nothing to stabilise
    to (None, though every empty step 'matches' it)."""
    from discovery.circuit import Circuit, Edge, Metrics, Node, Provenance
    from discovery.timeline import TimelineParams, assemble, overlap_over_time
    from discovery.timeline.run import Checkpoint, Run

    assert overlap_over_time({0: set(), 10: {"a0.h0"}, 20: {"a0.h0"}},
                             {0: set(), 10: set(), 20: {"a0.h0", "a1.h1"}}) == [(0, None), (10, 0.0), (20, 0.5)]

    def circuit(step: int, task: str, heads: tuple[str, ...]) -> Circuit:
        edges = tuple(Edge.parse(f"{h}->logits", 0.5) for h in heads)
        nodes = tuple(Node.parse(n) for n in sorted({"logits", *heads})) if heads else ()
        return Circuit(id=f"{task}-{step}", nodes=nodes, edges=edges,
                       metrics=Metrics(full=1.0, empty=0.0, circuit=0.5, name="kl"),
                       provenance=Provenance(model=f"m@{step}", task=task, method="acdc", threshold=0.01,
                                             params={}, seed=0, versions={}, created_at="2026-01-01"))

    run = Run(dir=Path("/runs/r"), recipe="tiny", seed=0, steps=30, arch="gpt2",
              checkpoints=tuple(Checkpoint(step=s, path=Path(f"/runs/r/{s}")) for s in (10, 20, 30)))
    members = {"ioi": {10: (), 20: (), 30: ()}, "induction": {10: (), 20: ("a1.h1",), 30: ("a1.h1",)}}
    circuits = {(s, t): circuit(s, t, members[t][s]) for t in members for s in (10, 20, 30)}
    result = assemble(run, ["ioi", "induction"], TimelineParams(), circuits)
    assert result.series("ioi", "jaccard_edges") == [(10, 1.0), (20, 1.0), (30, 1.0)]
    assert result.stabilisation == {"ioi": None, "induction": 20}
    assert result.pairs[0]["overlap"] == [[10, None], [20, 0.0], [30, 0.0]]
