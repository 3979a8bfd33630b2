"""Exports: MIB JSON and GraphML round trips, DOT text, PNG/SVG drawings, the format table."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import networkx as nx
import pytest

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance
from discovery.export import (
    EXPORTERS,
    QKV_COLORS,
    draw,
    export,
    from_graphml,
    from_mib_json,
    from_networkx,
    to_dot,
    to_graphml,
    to_mib_json,
    to_networkx,
)

SHAPE = GraphShape(2, 2, mlp=True)
KEPT = ["embed->a0.h1<q>", "embed->a0.h1<k>", "embed->a0.h1<v>", "a0.h1->a1.h0<q>",
        "a0.h1->a1.h0<v>", "a0.h1->m1", "a0.h1->m1.n3", "m1->logits", "a1.h0->logits"]


def _scores(shape: GraphShape) -> dict[str, float]:
    """A distinct, signed, exactly representable score for every edge of the full graph."""
    return {name: (i % 7 - 3) / 8 + i / 1024 for i, name in enumerate(shape.edges())}


def _circuit(shape: GraphShape = SHAPE, kept: list[str] = KEPT) -> Circuit:
    scores = _scores(shape) | {n: 0.75 for n in kept if Edge.parse(n).dst.count(".n")}  # neurons
    edges = tuple(Edge.parse(name, scores[name]) for name in kept)
    order = [*shape.upstream(), "logits"]
    names = sorted({e.src for e in edges} | {e.dst for e in edges},
                   key=lambda n: (order.index(n.split(".n")[0]), n))
    return Circuit(
        id="c-export",
        nodes=tuple(Node.parse(n, score=0.5 if n.startswith("a") else None) for n in names),
        edges=edges,
        metrics=Metrics(full=2.0, empty=0.5, circuit=1.7, name="logit_diff"),
        provenance=Provenance(model="multitask", task="ioi", method="eap-ig", threshold=0.01,
                              params={"steps": 5}, versions={"torch": "2"}),
        graph=shape,
        edge_scores=scores,
    )


def _big_circuit() -> Circuit:
    """About 150 of the strongest edges of a 4-layer, 6-head graph, plus two neurons."""
    shape = GraphShape(4, 6, mlp=True)
    scores = _scores(shape)
    kept = sorted(scores, key=lambda n: -abs(scores[n]))[:148] + ["a1.h2->m2.n7", "m0->m2.n40"]
    return _circuit(shape, kept)


def test_mib_json_lists_the_full_graph_and_renames_embed():
    data = to_mib_json(_circuit())
    json.loads(json.dumps(data, allow_nan=False))  # strict JSON
    assert data["cfg"] == {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False, "d_model": None}
    assert set(data["edges"]) == {n.replace("embed", "input") for n in SHAPE.edges()}
    assert "input" in data["nodes"] and "embed" not in data["nodes"]
    assert data["edges"]["input->a0.h1<q>"] == {"score": _scores(SHAPE)["embed->a0.h1<q>"], "in_graph": True}
    assert data["nodes"]["a0.h1"] == {"in_graph": True} and data["nodes"]["a0.h0"] == {"in_graph": False}
    assert to_mib_json(_circuit(), d_model=64)["cfg"]["d_model"] == 64
    assert sum(e["in_graph"] for e in data["edges"].values()) == len(KEPT) - 1  # the neuron edge is left out


def test_mib_json_round_trip():
    circuit = _circuit()
    back = from_mib_json(json.loads(json.dumps(to_mib_json(circuit))), model="multitask", task="ioi",
                         method="eap-ig")
    kept = {e.name: e.score for e in circuit.edges if "m1.n3" not in e.name}
    assert {e.name: e.score for e in back.edges} == kept
    assert back.edge_scores == {k: v for k, v in circuit.edge_scores.items() if k in SHAPE.edges()}
    assert back.graph == SHAPE
    assert {n.name for n in back.nodes} == {"embed", "a0.h1", "a1.h0", "m1", "logits"}
    assert back.provenance.method == "eap-ig" and back.metrics.name == "unmeasured"
    assert back.id == from_mib_json(to_mib_json(circuit), model="m", task="t", method="x").id


def test_mib_json_needs_the_graph_shape():
    circuit = _circuit()
    bare = Circuit(id="x", nodes=circuit.nodes, edges=circuit.edges, metrics=circuit.metrics,
                   provenance=circuit.provenance)
    with pytest.raises(ValueError, match="graph shape"):
        to_mib_json(bare)


def test_graphml_round_trip_is_exact():
    circuit = _circuit()
    text = to_graphml(circuit)
    assert from_graphml(text) == circuit
    g = nx.parse_graphml(text, force_multigraph=True)
    assert g.number_of_edges() == len(KEPT) and g.nodes["a0.h1"]["kind"] == "attention"


def test_networkx_keeps_qkv_edges_of_one_pair_distinct():
    g = to_networkx(_circuit())
    assert isinstance(g, nx.DiGraph)
    assert set(g["embed"]["a0.h1"]) == {"q", "k", "v"}
    assert g.edges["a0.h1", "a1.h0", "v"]["score"] == _scores(SHAPE)["a0.h1->a1.h0<v>"]
    metrics = Metrics(1.0, 0.0, 0.5)
    back = from_networkx(g, metrics=metrics, provenance=Provenance("m", "t", "x"), circuit_id="other")
    assert (back.id, back.metrics, back.edges) == ("other", metrics, _circuit().edges)


def test_dot_marks_every_edge_and_qkv():
    circuit = _circuit()
    dot = to_dot(circuit)
    for e in circuit.edges:
        assert f'"{e.src}" -> "{e.dst}"' in dot
    for x, color in QKV_COLORS.items():
        assert f'label="{x}"' in dot and color in dot
    assert "rank=min" in dot and "rank=max" in dot and "penwidth" in dot


def test_dot_renders_with_graphviz(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("graphviz `dot` is not installed")
    out = subprocess.run(["dot", "-Tsvg"], input=to_dot(_big_circuit()), capture_output=True,
                         text=True, check=True)
    ET.fromstring(out.stdout)


@pytest.mark.parametrize("circuit", [_circuit(), _big_circuit()], ids=["small", "big"])
def test_drawings(tmp_path, circuit):
    png = draw(circuit, tmp_path / "c.png")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    svg = draw(circuit, tmp_path / "c.drawing", format="svg")
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_export_by_format(tmp_path):
    circuit = _circuit()
    for fmt in ("json", "mib", "graphml", "dot"):
        path = export(circuit, fmt, tmp_path / f"c.{fmt}")
        assert path.stat().st_size > 0
    assert Circuit.from_json((tmp_path / "c.json").read_text()) == circuit
    assert from_graphml((tmp_path / "c.graphml").read_text()) == circuit
    assert set(EXPORTERS) == {"json", "mib", "graphml", "dot", "png", "svg"}


def test_export_unknown_format_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="graphml.*png"):
        export(_circuit(), "pdf", tmp_path / "c.pdf")


def test_parallel_graphs_travel_through_mib_json_and_graphml():
    """A GPT-NeoX-style graph (an MLP reads what its layer's heads read) keeps its shape: the MIB
    file says parallel_attn_mlp and holds no head->MLP edge within a layer; both formats read back."""
    shape = GraphShape(2, 2, mlp=True, parallel=True)
    kept = ["embed->a0.h0<q>", "a0.h0->m1", "embed->m0", "m0->a1.h1<v>", "a1.h1->logits", "m1->logits"]
    circuit = _circuit(shape, kept)
    data = to_mib_json(circuit)
    assert data["cfg"]["parallel_attn_mlp"] is True
    assert "a0.h0->m0" not in data["edges"] and "input->m0" in data["edges"]
    assert set(data["edges"]) == {n.replace("embed", "input") for n in shape.edges()}
    back = from_mib_json(data, model="m", task="t", method="eap")
    assert back.graph == shape and {e.name for e in back.edges} == set(kept)
    assert from_graphml(to_graphml(circuit)).graph == shape
