"""ACDC's edge orders (discovery.orders): every order visits every edge once with receiver layers
latest first; fast ACDC equals the reference under each order (interleaved receivers included, on
per-head and tied k/v graphs); the order is honoured (it changes the circuit) and recorded."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from discovery.algorithms import ALGORITHMS, AlgorithmConfig
from discovery.algorithms.acdc_sweep import sweep
from discovery.arch import graph_shape, read_weights
from discovery.circuit import GraphShape
from discovery.discover import DiscoveryRequest, build_problem, discover, task_data
from discovery.graph import Graph
from discovery.models import load_model
from discovery.orders import auto_circuit_name, check_order, describe, edge_order, order_names
from discovery.problem import Problem
from tests.unit.test_arch_parity import batch, tiny

ORDERS = ("ours", "auto-circuit", "random:0", "random:5")


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model("multitask", device="cpu")


@pytest.mark.parametrize("spec", ["ours", "auto-circuit", "random:0", "random:123"])
def test_known_orders_are_accepted(spec):
    assert check_order(spec) == spec and describe(spec)


@pytest.mark.parametrize("spec", ["", "random", "random:x", "random:-1", "Ours", "auto-circuit:1", "sorted"])
def test_unknown_orders_are_refused_naming_the_choices(spec):
    with pytest.raises(ValueError, match="ours, auto-circuit or random:<seed>"):
        check_order(spec)
    with pytest.raises(ValueError, match="edge order"):
        AlgorithmConfig(edge_order=spec)


@pytest.mark.parametrize("shape", [GraphShape(3, 4), GraphShape(2, 4, kv_groups=2), GraphShape(2, 2, mlp=False)])
@pytest.mark.parametrize("spec", ORDERS)
def test_every_order_visits_every_edge_once_latest_receiver_layer_first(shape, spec):
    graph = Graph(shape)
    order = edge_order(graph, spec)
    assert len(order) == len(set(order)) == graph.n_edges
    assert set(order) == set(graph.edges_in_order())
    layers = [(graph.inputs[k].layer, graph.inputs[k].stage) for _, k in order]
    assert layers == sorted(layers, reverse=True)


def test_auto_circuit_names_and_order_within_a_layer():
    graph = Graph(GraphShape(2, 2))
    names = {auto_circuit_name(graph, u, k) for u, k in graph.edges_in_order()}
    assert {"Resid Start->A0.1.Q", "A0.0->A1.1.K", "A1.1->MLP 1", "MLP 0->A1.0.V",
            "MLP 1->Resid End", "Resid Start->MLP 0"} <= names
    order = edge_order(graph, "auto-circuit")
    first_layer = [auto_circuit_name(graph, u, k) for u, k in order[:graph.n_avail[-1]]]
    assert first_layer == sorted(first_layer) and all(n.endswith("Resid End") for n in first_layer)
    heads_l1 = [auto_circuit_name(graph, u, k) for u, k in order if graph.inputs[k].layer == 1
                and graph.inputs[k].stage == 0]
    assert heads_l1 == sorted(heads_l1)
    # sorted by name, the receivers of one layer interleave (the sender comes first in a name)
    assert len({k for _, k in order[len(first_layer) + graph.n_avail[graph.in_index[("m1", "mlp")]]:][:3]}) > 1


def test_random_orders_are_seeded():
    graph = Graph(GraphShape(3, 4))
    assert order_names(graph, "random:1") == order_names(graph, "random:1")
    assert order_names(graph, "random:1") != order_names(graph, "random:2")
    assert order_names(graph, "ours") == [graph.edge(u, k).name for u, k in graph.edges_in_order()]


@pytest.mark.parametrize("spec", ["auto-circuit", "random:0", "random:7"])
@pytest.mark.parametrize(("task", "metric"), [("ioi", "kl"), ("greater_than", "prob_diff")])
def test_fast_acdc_equals_the_reference_in_every_order(model, spec, task, metric):
    data = task_data(task, model, 12, 0)
    config = AlgorithmConfig(threshold=0.01, edge_order=spec)
    fast = ALGORITHMS["acdc"](build_problem(model, data, metric=metric, ablation="corrupt"), config)
    slow = ALGORITHMS["acdc-reference"](build_problem(model, data, metric=metric, ablation="corrupt"), config)
    assert torch.equal(fast.mask, slow.mask)
    assert torch.allclose(fast.scores.nan_to_num(0), slow.scores.nan_to_num(0), atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
@pytest.mark.parametrize("spec", ["auto-circuit", "random:3"])
def test_fast_acdc_equals_the_reference_on_tied_inputs_in_other_orders(arch, spec):
    w = read_weights(tiny(arch))
    graph = Graph(dataclasses.replace(graph_shape(w), kv_groups=w.n_kv_heads))
    config = AlgorithmConfig(threshold=0.003, edge_order=spec)
    fast = ALGORITHMS["acdc"](Problem.build(w, graph, batch(), metric="kl", ablation="corrupt"), config)
    slow = ALGORITHMS["acdc-reference"](Problem.build(w, graph, batch(), metric="kl", ablation="corrupt"), config)
    assert torch.equal(fast.mask, slow.mask)
    assert torch.allclose(fast.scores.nan_to_num(0), slow.scores.nan_to_num(0), atol=1e-4)


def test_the_order_is_honoured_and_recorded(model):
    data = task_data("ioi", model, 12, 0)
    circuits = {spec: discover(DiscoveryRequest(model="multitask", task="ioi", n_prompts=12, device="cpu",
                                                edge_order=spec), model=model, data=data)
                for spec in ("ours", "random:0", "random:1")}
    edges = {spec: {e.name for e in c.edges} for spec, c in circuits.items()}
    assert edges["random:0"] != edges["ours"] or edges["random:1"] != edges["ours"]
    graph = Graph(circuits["ours"].graph)
    for spec, circuit in circuits.items():
        p = circuit.provenance
        assert p.params["edge_order"] == spec and p.edge_order == describe(spec)
        assert p.edge_order_sha256 == hashlib.sha256("\n".join(order_names(graph, spec)).encode()).hexdigest()
    assert len({c.provenance.edge_order_sha256 for c in circuits.values()}) == 3


def test_a_sweep_refuses_another_order(model):
    problem = build_problem(model, task_data("ioi", model, 4, 0), metric="kl", ablation="corrupt")
    with pytest.raises(ValueError, match="edge_order"):
        sweep(problem, [0.01, 0.1], AlgorithmConfig(edge_order="random:1"))
