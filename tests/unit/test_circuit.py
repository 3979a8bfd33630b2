"""The Circuit data type: readable names, validation, and an exact JSON round trip."""

from __future__ import annotations

import pytest

from discovery.circuit import Circuit, Edge, Metrics, Node, Provenance


@pytest.mark.parametrize(
    ("name", "kind", "layer", "head", "neuron"),
    [("embed", "embed", None, None, None), ("a3.h5", "attention", 3, 5, None),
     ("m7", "mlp", 7, None, None), ("m7.n123", "neuron", 7, None, 123),
     ("logits", "logits", None, None, None)],
)
def test_node_names_parse(name, kind, layer, head, neuron):
    node = Node.parse(name)
    assert (node.kind, node.layer, node.head, node.neuron) == (kind, layer, head, neuron)


@pytest.mark.parametrize("bad", ["a3", "h5", "m", "mlp3", "a3.h", "embed2", ""])
def test_bad_node_names_rejected(bad):
    with pytest.raises(ValueError, match="bad node name"):
        Node.parse(bad)


@pytest.mark.parametrize("name", ["a0.h1->a2.h3<q>", "m1->a3.h0<v>", "a2.h1->m2", "m3->logits",
                                  "embed->m0.n12"])
def test_edge_names_round_trip(name):
    assert Edge.parse(name).name == name


def test_edge_into_head_needs_qkv():
    with pytest.raises(ValueError, match="q, k or v"):
        Edge.parse("a0.h1->a2.h3")


def _circuit() -> Circuit:
    return Circuit(
        id="c1",
        nodes=tuple(Node.parse(n, score=0.5) for n in ("embed", "a0.h1", "m1", "m1.n7", "logits")),
        edges=(Edge.parse("embed->a0.h1<k>", 0.2), Edge.parse("a0.h1->m1", 0.3),
               Edge.parse("m1->logits", 0.9)),
        metrics=Metrics(full=2.0, empty=0.5, circuit=1.7, name="logit_diff"),
        provenance=Provenance(model="multitask", task="ioi", method="acdc", threshold=0.01,
                              params={"steps": 5}, versions={"torch": "2"}),
    )


def test_json_round_trip_is_exact():
    circuit = _circuit()
    assert Circuit.from_json(circuit.to_json()) == circuit


def test_faithfulness():
    assert _circuit().metrics.faithfulness == pytest.approx((1.7 - 0.5) / (2.0 - 0.5))
    assert Metrics(full=1.0, empty=1.0, circuit=1.0).faithfulness is None


def test_edges_must_name_known_nodes():
    with pytest.raises(ValueError, match="lacks"):
        Circuit(id="x", nodes=(Node.parse("embed"),), edges=(Edge.parse("embed->logits"),),
                metrics=Metrics(1, 0, 1), provenance=Provenance(model="m", task="t", method="x"))
