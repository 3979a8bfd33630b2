"""What a second tool needs to reproduce a circuit: both faithfulness numbers, the tokenisation
facts, the hashes of the tokenizer, the pairs and the edge order, and ``circuits tasks export``
writing the exact pairs of a run (checked against the circuit's dataset hash)."""

from __future__ import annotations

import hashlib
import json

import pytest

from discovery.circuit import Circuit, Metrics
from discovery.discover import DiscoveryRequest, build_problem, discover, task_data
from discovery.evaluate import metric_of
from discovery.graph import Graph
from discovery.models import load_model
from discovery.orders import order_names
from discovery.tasks.custom import parse_custom_task
from discovery.tasks.export import dataset_of
from discovery.tasks.tokens import tokenize_task, tokenizer_sha256

N, SEED = 12, 3


@pytest.fixture(scope="module")
def model():
    return load_model("multitask", device="cpu")


@pytest.fixture(scope="module")
def acdc(model, tmp_path_factory):
    """An ACDC circuit (search metric KL) and its JSON file."""
    circuit = discover(DiscoveryRequest(model="multitask", task="ioi", threshold=0.05, n_prompts=N,
                                        seed=SEED, device="cpu"), model=model)
    path = tmp_path_factory.mktemp("acdc") / "ioi.json"
    path.write_text(circuit.to_json())
    return circuit, path


def test_metrics_carry_both_faithfulness_numbers():
    m = Metrics(full=2.0, empty=0.5, circuit=2.3, name="logit_diff", search_metric="kl",
                search_full=0.0, search_empty=4.0, search_circuit=1.0)
    assert m.faithfulness_task == m.faithfulness == pytest.approx(1.2)  # beats the full model
    assert m.faithfulness_search == pytest.approx(1 - 1.0 / 4.0)  # 1 - KL(C) / KL(empty)
    data = json.loads(Circuit(id="x", nodes=(), edges=(), metrics=m, provenance=_prov()).to_json())
    assert data["metrics"]["faithfulness_task"] == pytest.approx(1.2)
    assert data["metrics"]["faithfulness_search"] == pytest.approx(0.75)
    assert (data["metrics"]["task_metric"], data["metrics"]["search_metric"]) == ("logit_diff", "kl")


def _prov():
    from discovery.circuit import Provenance

    return Provenance(model="m", task="ioi", method="acdc")


def test_circuits_written_before_the_new_fields_still_load(acdc):
    circuit, _ = acdc
    data = circuit.to_dict()
    for key in ("search_metric", "search_full", "search_empty", "search_circuit",
                "faithfulness_task", "faithfulness_search", "task_metric"):
        del data["metrics"][key]
    for key in ("search_metric", "ablation", "prepend_bos", "tokenizer_sha256", "edge_order",
                "edge_order_sha256"):
        del data["provenance"][key]
    old = Circuit.from_dict(data)
    assert old.metrics.faithfulness == circuit.metrics.faithfulness
    assert old.metrics.faithfulness_search is None and old.provenance.prepend_bos is None
    assert Circuit.from_json(circuit.to_json()) == circuit


def test_acdc_provenance_records_what_a_second_tool_needs(acdc, model):
    circuit, _ = acdc
    p = circuit.provenance
    assert (p.search_metric, p.ablation, p.threshold, p.seed) == ("kl", "corrupt", 0.05, SEED)
    assert p.prepend_bos is True
    assert p.tokenizer_sha256 == tokenizer_sha256(model.tokenizer) and len(p.tokenizer_sha256) == 64
    assert p.dataset_hash == task_data("ioi", model, N, SEED).dataset_hash
    assert p.edge_order.startswith("receivers reverse-topological")
    names = order_names(Graph(circuit.graph))
    assert names[0].endswith("->logits") and len(names) == p.params["edges_total"]
    assert p.edge_order_sha256 == hashlib.sha256("\n".join(names).encode()).hexdigest()


def test_search_faithfulness_is_measured_under_kl(acdc, model):
    circuit, _ = acdc
    m = circuit.metrics
    assert (m.name, m.search_metric) == ("logit_diff", "kl")
    problem = build_problem(model, task_data("ioi", model, N, SEED), metric="kl", ablation="corrupt")
    graph = problem.graph
    mask = problem.graph.valid() & False
    for e in circuit.edges:
        mask[graph.up_index[e.src], graph.in_index[(e.dst, e.input)]] = True
    kl_circuit = metric_of(problem, mask, "kl")
    kl_empty = metric_of(problem, mask & False, "kl")
    assert m.search_circuit == pytest.approx(kl_circuit, abs=1e-6)
    assert m.faithfulness_search == pytest.approx(1 - kl_circuit / kl_empty, abs=1e-6)
    assert abs(m.search_full) < 1e-6 and m.faithfulness_search <= 1


def test_attribution_methods_have_no_edge_order(model):
    circuit = discover(DiscoveryRequest(model="multitask", task="ioi", method="eap", top_n=10,
                                        n_prompts=4, device="cpu"), model=model)
    p = circuit.provenance
    assert p.edge_order is None and p.edge_order_sha256 is None
    assert p.search_metric == circuit.metrics.search_metric == "logit_diff"
    assert circuit.metrics.faithfulness_search == pytest.approx(circuit.metrics.faithfulness_task)


def test_bos_is_recorded_as_tokenised(model):
    data = task_data("ioi", model, 2, 0)
    with_bos = tokenize_task(data, model.tokenizer, n_ctx=model.n_ctx)
    without = tokenize_task(data, model.tokenizer, n_ctx=model.n_ctx, prepend_bos=False)
    assert with_bos.prepend_bos and not without.prepend_bos
    assert with_bos.clean[0, 0] == model.tokenizer.bos_token_id
    assert with_bos.clean.shape[1] == without.clean.shape[1] + 1


def _circuits(capsys, *args: str) -> tuple[int, str]:
    """``circuits ARGS`` in this process (the model is cached, torch already loaded): (rc, stderr)."""
    from api.cli import main

    capsys.readouterr()
    rc = main(list(args))
    return rc, capsys.readouterr().err


def test_tasks_export_writes_the_exact_pairs_of_a_circuit(acdc, model, tmp_path, capsys):
    circuit, path = acdc
    out = tmp_path / "pairs.json"
    rc, err = _circuits(capsys, "tasks", "export", "--circuit", str(path), "--out", str(out))
    assert rc == 0, err[-2000:]
    export = json.loads(out.read_text())
    assert export["dataset_hash"] == circuit.provenance.dataset_hash
    assert dataset_of(export).dataset_hash == circuit.provenance.dataset_hash  # recomputed from the pairs
    assert len(export["task"]["pairs"]) == N
    assert parse_custom_task(export["task"]).pairs == dataset_of(export).pairs
    tok = export["tokenization"]
    assert tok["prepend_bos"] is True and tok["tokenizer_sha256"] == circuit.provenance.tokenizer_sha256
    batch = tokenize_task(dataset_of(export), model.tokenizer, n_ctx=model.n_ctx)
    assert tok["tokens"][0]["clean"] == batch.clean[0, : int(batch.last[0]) + 1].tolist()
    assert all(row["clean"][0] == tok["bos_token_id"] for row in tok["tokens"])
    order = export["edge_order"]
    assert order["sha256"] == hashlib.sha256("\n".join(order["edges"]).encode()).hexdigest()
    assert order["sha256"] == circuit.provenance.edge_order_sha256

    rc, err = _circuits(capsys, "tasks", "export", "--circuit", str(path), "--n-prompts", str(N + 1),
                        "--out", str(tmp_path / "x.json"))
    assert rc == 1 and "error: the pairs drawn" in err and "not the circuit's" in err


def test_tasks_export_without_a_circuit(model, tmp_path, capsys):
    out = tmp_path / "gt.json"
    rc, err = _circuits(capsys, "tasks", "export", "--model", "multitask", "--task", "greater_than",
                        "--n-prompts", "3", "--seed", "1", "--out", str(out))
    assert rc == 0, err[-2000:]
    export = json.loads(out.read_text())
    expected = task_data("greater_than", model, 3, 1)
    assert dataset_of(export).dataset_hash == expected.dataset_hash == export["dataset_hash"]
    assert "edge_order" not in export
    rc, err = _circuits(capsys, "tasks", "export", "--out", str(out))
    assert rc == 1 and "give --model and --task" in err

