"""compete-gt, the hand-set model with two competing tasks: it behaves as built (through the
bridge and the patched forward), and the competition experiment labels its components correctly,
while a randomly relabelled "circuit" comes out with no significant effect."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance
from discovery.discover import build_problem
from discovery.graph import Graph
from discovery.metrics import final_logits
from discovery.models import load_model
from discovery.patching import GPT2Weights, clean_outputs, patched_forward
from discovery.tasks.custom import load_custom_task
from discovery.zoo import compete_gt as gt

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / gt.NAME
TASK_FILES = {gt.INDUCTION: SHIPPED / "tasks" / "induction.json",
              gt.RECALL: SHIPPED / "tasks" / "recall.json"}
PAIR = f"{gt.INDUCTION}|{gt.RECALL}"
N_FAST = 12  # pairs and conflict prompts per experiment: the model is exact, so few are enough


@pytest.fixture(scope="module")
def model():
    return load_model(gt.NAME, device="cpu")


@pytest.fixture(scope="module")
def data():
    return {task: load_custom_task(path) for task, path in TASK_FILES.items()}


@pytest.fixture(scope="module")
def conflicts():
    return json.loads((SHIPPED / "conflicts.json").read_text())


def _node_mask(graph: Graph, names: set[str]) -> torch.Tensor:
    """Every edge, except those leaving ``names`` (node-level ablation)."""
    mask = graph.valid()
    for name in names:
        mask[graph.up_index[name]] = False
    return mask


_PROBLEMS: dict = {}


def task_top1(model, data, task: str, ablate: set[str] = frozenset(), ablation: str = "corrupt") -> float:
    """Top-1 accuracy on ``task``'s own prompts with ``ablate`` ablated (corrupted twins, mean, zero)."""
    if (task, ablation) not in _PROBLEMS:
        _PROBLEMS[task, ablation] = build_problem(model, data[task], metric="logprob", ablation=ablation)
    problem = _PROBLEMS[task, ablation]
    with torch.no_grad():
        logits = patched_forward(problem.weights, problem.graph, problem.batch.clean, problem.ablation,
                                 _node_mask(problem.graph, set(ablate))).logits
    final = final_logits(logits, problem.batch.last)
    return (final.argmax(-1) == problem.batch.answers[:, 0]).float().mean().item()


def conflict_wins(model, conflicts, ablate: set[str] = frozenset(), ablation: str = "mean") -> dict[str, float]:
    """Share of conflict prompts whose top token, by more than one logit, is each task's answer
    (all logits tied counts for neither); the ablated components
    take their per-position mean over the prompts (or zero): conflict prompts have no twins."""
    tok = model.tokenizer
    rows = [[tok.bos_token_id, *tok(c["prompt"], add_special_tokens=False)["input_ids"]] for c in conflicts]
    width = max(map(len, rows))
    tokens = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    last = torch.tensor([len(r) - 1 for r in rows])
    weights = GPT2Weights.from_hf(model.bridge.original_model)
    graph = Graph(GraphShape(gt.N_LAYER, gt.N_HEAD, mlp=True))
    clean = clean_outputs(weights, graph, tokens).outputs
    source = clean.mean(1, keepdim=True).expand_as(clean) if ablation == "mean" else torch.zeros_like(clean)
    with torch.no_grad():
        logits = patched_forward(weights, graph, tokens, source.contiguous(), _node_mask(graph, set(ablate))).logits
    best = final_logits(logits, last).topk(2, dim=-1)
    top = torch.where(best.values[:, 0] - best.values[:, 1] > 1.0, best.indices[:, 0], -1)  # -1: a tie
    return {task: sum(int(t) == tok.convert_tokens_to_ids(c["answers"][task]) for t, c in zip(top, conflicts, strict=True))
            / len(conflicts) for task in (gt.INDUCTION, gt.RECALL)}


# -- the model --------------------------------------------------------------------------------------

def test_shipped_copy_is_current():
    """models/compete-gt is what save_compete_gt writes today (regenerate: python -m
    discovery.zoo.compete_gt)."""
    from safetensors.torch import load_file

    weights = load_file(SHIPPED / "model.safetensors")
    params = dict(gt.build_model().named_parameters())
    assert set(weights) == set(params)
    for name, tensor in params.items():
        torch.testing.assert_close(weights[name], tensor, msg=name)
    assert json.loads((SHIPPED / "true_roles.json").read_text()) == gt.true_roles_record()
    assert json.loads((SHIPPED / "conflicts.json").read_text()) == gt.conflict_records()
    for stem, record in gt.task_records().items():
        assert json.loads((SHIPPED / "tasks" / f"{stem}.json").read_text()) == record


def test_bridge_matches_the_hand_set_model(model, conflicts):
    ids = torch.tensor([[0, *model.tokenizer(conflicts[0]["prompt"], add_special_tokens=False)["input_ids"]]])
    with torch.no_grad():
        torch.testing.assert_close(model.logits(ids), gt.build_model()(ids).logits, atol=1e-4, rtol=1e-5)
    assert not model.attn_only and model.n_ctx == gt.P


def test_true_edges_name_real_edges():
    every = set(GraphShape(gt.N_LAYER, gt.N_HEAD, mlp=True).edges())
    for edges in gt.TRUE_EDGES.values():
        assert set(edges) <= every
        assert all(Edge.parse(e).name == e for e in edges)
    record = gt.true_roles_record()
    assert record["shared"] == ["a0.h0"] and record["competitive"]["a1.h1"] == gt.RECALL
    assert len(record["distractors"]) >= 19  # random single-component controls can reach p = 1/21


def test_each_task_is_solved_on_its_own_prompts(model, data):
    for task in (gt.INDUCTION, gt.RECALL):
        assert task_top1(model, data, task) == 1.0, task


def test_recall_wins_every_conflict(model, conflicts):
    assert conflict_wins(model, conflicts) == {gt.INDUCTION: 0.0, gt.RECALL: 1.0}


@pytest.mark.parametrize("ablation", ["corrupt", "mean", "zero"])
def test_the_shared_head_is_needed_by_both(model, data, ablation):
    for task in (gt.INDUCTION, gt.RECALL):
        assert task_top1(model, data, task, {"a0.h0"}, ablation) < 0.1, task


def test_each_answer_head_serves_only_its_task(model, data):
    assert task_top1(model, data, gt.INDUCTION, {"a1.h0"}) < 0.1
    assert task_top1(model, data, gt.RECALL, {"a1.h0"}) == 1.0
    assert task_top1(model, data, gt.RECALL, {"a1.h1"}) < 0.1
    assert task_top1(model, data, gt.INDUCTION, {"a1.h1"}) == 1.0


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_ablating_the_recall_head_lets_induction_win(model, conflicts, ablation):
    assert conflict_wins(model, conflicts, {"a1.h1"}, ablation)[gt.INDUCTION] == 1.0
    assert conflict_wins(model, conflicts, {"a0.h0"}, ablation) == {gt.INDUCTION: 0.0, gt.RECALL: 0.0}


def test_distractors_change_nothing(model, data, conflicts):
    distractors = set(gt.true_roles_record()["distractors"])
    for task in (gt.INDUCTION, gt.RECALL):
        assert task_top1(model, data, task, distractors) == 1.0, task
    assert conflict_wins(model, conflicts, distractors)[gt.RECALL] == 1.0


# -- the competition experiment on it ----------------------------------------------------------------

def circuit_of(task: str, edges: tuple[str, ...], cid: str) -> Circuit:
    parsed = tuple(Edge.parse(e) for e in edges)
    names = sorted({e.src for e in parsed} | {e.dst for e in parsed})
    return Circuit(id=cid, nodes=tuple(Node.parse(n) for n in names), edges=parsed,
                   metrics=Metrics(full=0.0, empty=0.0, circuit=0.0, name="logprob"),
                   provenance=Provenance(model=gt.NAME, task=task, method="ground-truth"),
                   graph=GraphShape(gt.N_LAYER, gt.N_HEAD, mlp=True))


def relabelled(seed: int = 0) -> dict[str, tuple[str, ...]]:
    """The true edges with every circuit head mapped, by a seeded permutation, onto a distractor
    head of the same layer (so every edge stays a real edge of the model)."""
    rng, mapping = random.Random(seed), {}
    for layer, heads in gt.DISTRACTORS.items():
        ours = sorted({n for edges in gt.TRUE_EDGES.values() for e in edges
                       for n in e.split("<")[0].split("->") if n.startswith(f"a{layer}.")})
        mapping.update(zip(ours, rng.sample([f"a{layer}.h{h}" for h, _ in heads], len(ours)), strict=True))

    def rename(edge: str) -> str:
        e = Edge.parse(edge)
        return Edge(mapping.get(e.src, e.src), mapping.get(e.dst, e.dst), e.input).name

    return {task: tuple(rename(e) for e in edges) for task, edges in gt.TRUE_EDGES.items()}


def run_experiment(model, data, conflicts, edges: dict[str, tuple[str, ...]], label: str):
    run = pytest.importorskip("discovery.experiments.run")
    from dataclasses import replace

    from discovery.experiments.conflicts import parse_conflicts

    tasks = (gt.INDUCTION, gt.RECALL)
    paths = tuple(str(TASK_FILES[t]) for t in tasks)
    task_data = {str(TASK_FILES[t]): replace(data[t], pairs=data[t].pairs[:N_FAST]) for t in tasks}
    circuits = {t: circuit_of(t, edges[t], f"{label}-{t.removeprefix('custom:')}") for i, t in enumerate(tasks)}
    prompts = parse_conflicts(conflicts[:N_FAST], tasks)
    request = run.ExperimentRequest(model=gt.NAME, tasks=paths, n_controls=20, seed=0, device="cpu")
    return run.compete(request, circuits=circuits, model=model, task_data=task_data,
                       conflicts={PAIR: prompts}).experiment


@pytest.fixture(scope="module")
def true_experiment(model, data, conflicts):
    return run_experiment(model, data, conflicts, gt.TRUE_EDGES, "true")


@pytest.fixture(scope="module")
def relabelled_experiment(model, data, conflicts):
    edges = relabelled(seed=0)
    distractors = set(gt.true_roles_record()["distractors"])
    assert {n for es in edges.values() for e in es for n in e.split("<")[0].split("->")} - {
        "embed", "logits"} <= distractors
    return run_experiment(model, data, conflicts, edges, "relabelled")


@pytest.mark.slow
def test_experiment_labels_the_true_roles(true_experiment):
    exp = true_experiment
    shared = exp.role_of(PAIR, "a0.h0")
    assert shared.role == "cooperative", shared.verdict
    assert shared.membership == f"{gt.INDUCTION}&{gt.RECALL}"
    for name, task in gt.COMPETITIVE.items():
        role = exp.role_of(PAIR, name)
        assert (role.role, role.favours) == ("competitive", task), role.verdict
    for task in (gt.INDUCTION, gt.RECALL):
        assert exp.cell(PAIR, f"{gt.INDUCTION}&{gt.RECALL}", task).verdict.state == "supported", task
    summary = next(c for c in exp.conflicts if c.pair == PAIR)
    assert summary.win_rate == {gt.INDUCTION: 0.0, gt.RECALL: 1.0}


@pytest.mark.slow
def test_dose_response_follows_the_construction(true_experiment):
    """a1.h0 at alpha writes logit 10 alpha against recall's 20, a1.h1 20 alpha against
    induction's 10: induction wins only at alpha 4, recall from alpha 1 on."""
    dose = {d.scaled_task: d for d in true_experiment.dose}
    wins = {t: {p.alpha: p.win_rate for p in d.points} for t, d in dose.items()}
    assert wins[gt.INDUCTION] == {0.0: 0.0, 0.5: 0.0, 1.0: 0.0, 1.5: 0.0, 2.0: 0.0, 4.0: 1.0}
    assert wins[gt.RECALL] == {0.0: 0.0, 0.5: 0.0, 1.0: 1.0, 1.5: 1.0, 2.0: 1.0, 4.0: 1.0}
    assert all(d.verdict.state == "supported" for d in dose.values()), [d.verdict for d in dose.values()]


@pytest.mark.slow
def test_relabelled_circuit_has_no_significant_effect(relabelled_experiment):
    exp = relabelled_experiment
    supported = [(c.set_name, c.kind, c.task) for c in exp.ablations if c.verdict.state == "supported"]
    assert supported == []
    assert exp.components and {r.role for r in exp.components} == {"neutral"}


@pytest.mark.slow
def test_relabelled_dose_response_is_not_supported(relabelled_experiment):
    dose = relabelled_experiment.dose
    assert all(d.verdict.state != "supported" for d in dose), [d.verdict for d in dose]
