"""compete() end to end on the shipped ``multitask`` model (4 layers x 4 heads, CPU): every table,
the controls that can and cannot reach significance, determinism, and bad input."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
import torch

from discovery.experiments.conflicts import ConflictPrompt
from discovery.experiments.result import Experiment
from discovery.experiments.run import ExperimentRequest, compete
from discovery.models import load_model

torch.set_num_threads(1)
SMALL = {"n_prompts": 16, "n_conflicts": 16, "alphas": (0.0, 1.0, 2.0, 4.0), "device": "cpu"}
PAIR = "ioi|induction"


@pytest.fixture(scope="module")
def model():
    return load_model("multitask", device="cpu")


@pytest.fixture(scope="module")
def runs(model):
    """The same request run twice (circuits discovered by the experiment), with its stages and
    progress calls recorded."""
    out = []
    for _ in range(2):
        stages, calls = [], []
        result = compete(ExperimentRequest(model="multitask", tasks=("ioi", "induction"), **SMALL),
                         model=model, experiment_id="exp-test", stage=stages.append,
                         progress=lambda d, t, calls=calls: calls.append((d, t)))
        out.append((result, stages, calls))
    return out


def _stable(e: Experiment) -> dict:
    data = e.to_dict()
    data["provenance"] = {k: v for k, v in data["provenance"].items() if k not in ("created_at", "timings")}
    return data


@pytest.mark.slow
def test_same_seed_gives_identical_results_and_json_round_trips(runs):
    (first, stages, calls), (second, _, _) = runs
    e = first.experiment
    assert _stable(e) == _stable(second.experiment)
    assert Experiment.from_json(e.to_json()) == e
    assert stages == ["discovering", "discovering ioi (1/2)", "discovering induction (2/2)",
                      "ablation matrix", "controls", "conflicts", "dose-response"]
    assert set(e.provenance.timings) == {f"{s}_s" for s in stages if "(" not in s}  # steps untimed
    expected = {t: str(uuid.uuid5(uuid.NAMESPACE_URL, f"exp-test/{t}")) for t in ("ioi", "induction")}
    assert e.circuits == expected and set(first.discovered) == {"ioi", "induction"}
    assert first.discovered["ioi"].id == expected["ioi"]
    done = [d for d, _ in calls[-len(calls) // 2:]]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1]
    assert e.provenance.forward_passes > 0 and set(e.provenance.dataset_hashes) == {"ioi", "induction"}
    assert set(e.provenance.conflict_hashes) == {PAIR}


@pytest.mark.slow
def test_tables_are_complete(runs):
    e = runs[0][0].experiment
    assert len(e.ablations) == 2 * 5 * 2 and len(e.cross) == 4 and len(e.dose) == 2
    sets = e.sets[0]
    assert set(sets.nodes["ioi&induction"]) == set(sets.nodes["ioi"]) & set(sets.nodes["induction"])
    assert not any(n in ("embed", "logits") for v in sets.nodes.values() for n in v)
    members = set(sets.nodes["ioi"]) | set(sets.nodes["induction"])
    assert {r.name for r in e.components} == members
    diagonal = {(c.circuit_task, c.eval_task): c for c in e.cross}
    assert diagonal[("ioi", "ioi")].faithfulness > 0.8  # the circuit alone keeps its task
    summary = e.conflicts[0]
    assert summary.ablation == "mean" and summary.source == "builtin:ioi-induction"
    assert summary.win_rate["ioi"] + summary.win_rate["induction"] <= 1.0
    cell = e.cell(PAIR, "ioi", "ioi")
    assert cell.effect == pytest.approx(cell.full - cell.metric)


@pytest.mark.slow
def test_a_circuits_shared_edges_beat_random_edges_but_an_unimportant_set_does_not(runs):
    e = runs[0][0].experiment
    shared = e.cell(PAIR, "ioi&induction", "ioi", "edges")
    assert shared.control.pool == "outside circuits" and shared.control.n == 20
    assert shared.control.p_value == pytest.approx(1 / 21)
    assert shared.verdict.state == "supported" and shared.effect > shared.control.mean
    # induction's own edges matter little for IOI: their ablation is no worse than random edges
    other = e.cell(PAIR, "induction-ioi", "ioi", "edges")
    assert other.verdict.state == "not supported" and other.control.p_value > 0.05
    # the whole IOI circuit holds every MLP: no random set of 4 MLPs lies outside it
    whole = e.cell(PAIR, "ioi", "ioi", "nodes")
    assert whole.control is None and whole.verdict.state == "inconclusive"
    assert "no random set" in whole.verdict.detail


@pytest.mark.slow
def test_roles_rest_on_attribution_and_controls(runs):
    e = runs[0][0].experiment
    for role in e.components:
        pushes = role.dla_p is not None and role.dla_p <= 0.05 and abs(role.dla_t or 0) >= 2
        assert (role.favours is not None) == pushes
        assert role.role in ("cooperative", "competitive", "mixed", "neutral")
        assert role.verdict.statistic and role.conflict_control is not None
    # 16 heads leave 15 single-head controls: p >= 1/16 > 0.05, so no head can be shown to hurt
    head = next(r for r in e.components if r.kind == "attention")
    assert head.effect_controls["ioi"].n == 15 and e.pairs[0].cooperates.state != "supported"


@pytest.mark.slow
def test_empty_unique_set_is_inconclusive_and_given_circuits_are_used(model, runs):
    induction = runs[0][0].discovered["induction"]
    succ = compete(ExperimentRequest(model="multitask", tasks=("successor", "induction"), **SMALL),
                   model=model, circuits={"induction": induction}, experiment_id="succ")
    e = succ.experiment
    assert set(succ.discovered) == {"successor"} and e.circuits["induction"] == induction.id
    sets = e.sets[0]
    empty = [s for s, members in sets.nodes.items() if not members]
    for name in empty:
        cell = e.cell("successor|induction", name, "successor")
        assert cell.verdict.state == "inconclusive" and cell.effect == 0.0
        assert cell.faithfulness == pytest.approx(1.0)
    dose = {d.scaled_task: d for d in e.dose}
    if not sets.nodes["successor-induction"]:
        assert dose["successor"].verdict.state == "inconclusive"


def test_bad_input_names_the_field(model, runs):
    induction = runs[0][0].discovered["induction"]
    with pytest.raises(ValueError, match=r"circuits\[0\]"):
        compete(ExperimentRequest(model="multitask", tasks=("ioi", "induction"), **SMALL), model=model,
                circuits={"ioi": induction})
    with pytest.raises(ValueError, match=r"circuits\[1\]"):
        compete(ExperimentRequest(model="multitask", tasks=("ioi", "induction"), **SMALL), model=model,
                circuits={"induction": replace(induction, provenance=replace(induction.provenance,
                                                                             model="gpt2"))})
    with pytest.raises(ValueError, match=r"conflicts\['ioi\|greater_than'\].*built-in"):
        compete(ExperimentRequest(model="multitask", tasks=("ioi", "greater_than"), **SMALL), model=model)
    with pytest.raises(ValueError, match="conflicts"):
        compete(ExperimentRequest(model="multitask", tasks=("ioi", "induction"), **SMALL), model=model,
                conflicts={PAIR: (ConflictPrompt("Mary and John", {"ioi": "Mary", "induction": "Mary"}),)})
    with pytest.raises(ValueError, match="tasks"):
        ExperimentRequest(model="multitask", tasks=("ioi",))
    with pytest.raises(ValueError, match="n_controls"):
        ExperimentRequest(model="multitask", tasks=("ioi", "induction"), n_controls=5)
