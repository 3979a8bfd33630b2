"""Interop (discovery.interop): EAP-IG / MIB graph JSON as EAP-IG writes it, auto-circuit edge lists
and our JSON parse into circuits with their provenance; bad files are refused naming the field;
MIB's submission layout is written one folder per method and task."""

from __future__ import annotations

import json

import pytest

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance
from discovery.interop import (
    detect_format,
    export_mib,
    from_auto_circuit_name,
    parse_circuit,
    to_auto_circuit,
)

SHAPE = GraphShape(2, 2)
KEPT = ["embed->a0.h1<q>", "a0.h1->a1.h0<v>", "a1.h0->m1", "m1->logits", "embed->m0", "m0->logits"]


def eapig_file(kept=KEPT, shape: GraphShape = SHAPE, d_model: int = 16) -> dict:
    """A graph in EAP-IG's own ``Graph.to_json`` layout, written out by hand (not by our exporter):
    nodes ``{"in_graph": bool}``, the embedding named ``input``, ``d_model`` in ``cfg``."""
    nodes = ["input"] + [f"{kind}{layer}{h}" for layer in range(shape.n_layers)
                         for kind, h in [("a", f".h{i}") for i in range(shape.n_heads)] + [("m", "")]] + ["logits"]
    ends = {n.replace("embed", "input") for e in kept for n in e.split("<")[0].split("->")}
    kept, edges = set(kept), {}
    for i, name in enumerate(shape.edges()):
        mib = name.replace("embed", "input")
        edges[mib] = {"score": (-1) ** i / (7 * (i + 1)), "in_graph": name in kept}  # full-length floats
    return {"cfg": {"n_layers": shape.n_layers, "n_heads": shape.n_heads, "parallel_attn_mlp": False,
                    "d_model": d_model},
            "nodes": {n: {"in_graph": n in ends} for n in nodes}, "edges": edges}


def test_formats_are_detected_and_unknown_ones_refused():
    ours = Circuit(id="x", nodes=(Node.parse("embed"), Node.parse("logits")),
                   edges=(Edge.parse("embed->logits"),), metrics=Metrics(1.0, 0.0, 1.0),
                   provenance=Provenance("multitask", "ioi", "acdc")).to_dict()
    assert detect_format(ours) == "ours"
    assert detect_format(eapig_file()) == "eap-ig"
    assert detect_format(["A0.1->MLP 1"]) == detect_format({"edges": []}) == "auto-circuit"
    assert detect_format({"A0.1->MLP 1": 0.5}) == "auto-circuit"
    for bad in ({"x": "y"}, "text", 3, {}):
        with pytest.raises(ValueError, match="unrecognised circuit file"):
            detect_format(bad)


def test_an_eapig_file_imports_with_its_scores_and_provenance():
    data = eapig_file()
    circuit = parse_circuit(data, model="multitask", task="ioi", method="eap-ig-inputs", source="ioi.json")
    assert {e.name for e in circuit.edges} == set(KEPT)
    assert circuit.graph == SHAPE and len(circuit.edge_scores) == len(SHAPE.edges())
    assert circuit.edge_scores["embed->a0.h1<q>"] == data["edges"]["input->a0.h1<q>"]["score"]
    assert {n.name for n in circuit.nodes} == {"embed", "a0.h1", "a1.h0", "m0", "m1", "logits"}
    p = circuit.provenance
    assert (p.model, p.task, p.method) == ("multitask", "ioi", "eap-ig-inputs")
    assert p.params["imported"]["format"] == "eap-ig" and p.params["imported"]["source"] == "ioi.json"
    assert circuit.metrics.name == "unmeasured" and circuit.metrics.faithfulness is None
    json.loads(json.dumps(circuit.to_dict(), allow_nan=False))  # strict JSON: no NaN
    again = parse_circuit(eapig_file(), model="multitask", task="ioi", method="eap-ig-inputs")
    assert again.id == circuit.id and circuit.id.startswith("imported-")
    other = parse_circuit(eapig_file(KEPT[:-2]), model="multitask", task="ioi", method="eap-ig-inputs")
    assert other.id != circuit.id


def test_an_eapig_file_for_another_shape_or_without_names_is_refused():
    with pytest.raises(ValueError, match="cfg: the file's graph"):
        parse_circuit(eapig_file(), model="multitask", task="ioi", method="eap-ig", shape=GraphShape(4, 4))
    with pytest.raises(ValueError, match="model, task: a eap-ig file does not say"):
        parse_circuit(eapig_file(), method="eap-ig")
    broken = eapig_file()
    broken["edges"]["input->a0.h0<x>"] = {"score": 1.0, "in_graph": True}
    with pytest.raises(ValueError, match="bad edge name"):
        parse_circuit(broken, model="m", task="t", method="x")


@pytest.mark.parametrize(("theirs", "ours"), [
    ("Resid Start->A0.1.Q", "embed->a0.h1<q>"),
    ("A0.1->A1.0.V", "a0.h1->a1.h0<v>"),
    ("A1.0->MLP 1", "a1.h0->m1"),
    ("MLP 1->Resid End", "m1->logits"),
    ("Resid Start->MLP 0", "embed->m0"),
    ("MLP 0->A1.1.K", "m0->a1.h1<k>"),
])
def test_auto_circuit_names(theirs, ours):
    assert from_auto_circuit_name(theirs) == ours


@pytest.mark.parametrize("bad", ["A0.1", "Resid End->A0.1.Q", "A0.1->A1.0.X", "A0->MLP 1", "MLP x->Resid End"])
def test_bad_auto_circuit_names_are_refused(bad):
    with pytest.raises(ValueError, match="bad auto-circuit edge name"):
        from_auto_circuit_name(bad)


def test_auto_circuit_lists_scores_and_round_trip():
    theirs = ["Resid Start->A0.1.Q", "A0.1->A1.0.V", "A1.0->MLP 1", "MLP 1->Resid End"]
    listed = parse_circuit(theirs, model="multitask", task="ioi", method="acdc-auto-circuit", shape=SHAPE)
    assert [e.name for e in listed.edges] == KEPT[:4] and listed.graph == SHAPE
    scores = {name: float(i) for i, name in enumerate(theirs, start=1)} | {"Resid Start->MLP 0": -9.0}
    top = parse_circuit(scores, model="m", task="t", method="x", top_n=2)
    assert {e.name for e in top.edges} == {"embed->m0", "m1->logits"}  # largest |score|
    assert top.edge_scores["embed->m0"] == -9.0
    back = parse_circuit(to_auto_circuit(listed), model="multitask", task="ioi", method="acdc-auto-circuit")
    assert {e.name for e in back.edges} == set(KEPT[:4]) and back.id == listed.id
    with pytest.raises(ValueError, match="top_n: an auto-circuit file of scores alone"):
        parse_circuit(scores, model="m", task="t", method="x")
    with pytest.raises(ValueError, match="not an edge of the model's graph"):
        parse_circuit(["A5.0->MLP 6"], model="m", task="t", method="x", shape=SHAPE)


def test_our_own_files_keep_their_provenance_and_refuse_other_names():
    circuit = parse_circuit(eapig_file(), model="multitask", task="ioi", method="eap-ig")
    data = json.loads(circuit.to_json())
    back = parse_circuit(data)
    assert {e.name for e in back.edges} == set(KEPT) and back.provenance.model == "multitask"
    assert back.provenance.params["imported"]["format"] == "ours"
    with pytest.raises(ValueError, match="model: the file's circuit is for model 'multitask'"):
        parse_circuit(data, model="gpt2")
    with pytest.raises(ValueError, match="format: unknown"):
        parse_circuit(data, fmt="graphml")


def test_export_mib_writes_one_folder_per_method_and_task(tmp_path):
    circuits = [parse_circuit(eapig_file(), model="multitask", task=task, method=method)
                for task in ("ioi", "greater_than") for method in ("eap-ig", "acdc")]
    files = export_mib(circuits, tmp_path, d_model=16)
    # MIB splits a folder's name at its underscore: underscores inside names become hyphens
    assert sorted(str(f.relative_to(tmp_path)) for f in files) == [
        "acdc/greater-than_multitask/importances.json", "acdc/ioi_multitask/importances.json",
        "eap-ig/greater-than_multitask/importances.json", "eap-ig/ioi_multitask/importances.json"]
    data = json.loads(files[0].read_text())
    assert data["cfg"]["d_model"] == 16 and set(data["edges"]) == {e.replace("embed", "input") for e in SHAPE.edges()}
    assert all(isinstance(e["score"], float) for e in data["edges"].values())
    assert data["nodes"]["input"] == {"in_graph": True}
    with pytest.raises(ValueError, match="two circuits for"):
        export_mib(circuits[:1] * 2, tmp_path / "again")
