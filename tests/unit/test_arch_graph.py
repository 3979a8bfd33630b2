"""Graph shapes per architecture (edge counts against a formula, GraphShape.edges agreeing with
Graph, parallel blocks), the adapter table, and the error for architectures without an adapter."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from discovery.arch import ADAPTERS, UnsupportedModelError, graph_shape, read_weights
from discovery.circuit import Circuit, GraphShape
from discovery.graph import Graph


def expected_edges(n_layers: int, n_heads: int, *, parallel: bool) -> int:
    """Each head's q, k, v read every earlier node; a sequential MLP also reads its own layer's
    heads (a parallel one does not); logits read everything."""
    total = 0
    for layer in range(n_layers):
        before = 1 + layer * (n_heads + 1)
        total += 3 * n_heads * before + before + (0 if parallel else n_heads)
    return total + 1 + n_layers * (n_heads + 1)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize(("n_layers", "n_heads"), [(2, 4), (3, 2), (12, 12)])
def test_edge_count_formula_and_shape_agree_with_graph(n_layers, n_heads, parallel):
    shape = GraphShape(n_layers, n_heads, parallel=parallel)
    graph = Graph(shape)
    assert graph.n_edges == expected_edges(n_layers, n_heads, parallel=parallel)
    names = [graph.edge(u, k).name for k in range(graph.n_inputs) for u in range(graph.n_avail[k])]
    assert sorted(names) == sorted(shape.edges())
    assert int(graph.valid().sum()) == graph.n_edges


def test_gpt2_small_keeps_its_edge_count():
    assert Graph(GraphShape(12, 12)).n_edges == len(GraphShape(12, 12).edges()) == 32491


def test_parallel_mlp_reads_what_its_heads_read():
    graph = Graph(GraphShape(2, 4, parallel=True))
    mlp = graph.in_index[("m1", "mlp")]
    q = graph.in_index[("a1.h0", "q")]
    assert graph.n_avail[mlp] == graph.n_avail[q]
    assert "a1.h0->m1" not in GraphShape(2, 4, parallel=True).edges()
    assert "a1.h0->m1" in GraphShape(2, 4).edges()


def test_stored_shapes_without_the_new_field_still_load():
    old = {"n_layers": 2, "n_heads": 4, "mlp": True}
    assert GraphShape(**old) == GraphShape(2, 4, mlp=True, parallel=False)
    assert Circuit.from_dict  # the loader builds GraphShape(**data["graph"])


def _tiny(cls, config):
    torch.manual_seed(0)
    return cls(config)


def test_adapters_give_the_graph_shape():
    neox = _tiny(tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig(
        vocab_size=20, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=2, use_parallel_residual=True))
    assert graph_shape(read_weights(neox)) == GraphShape(3, 2, parallel=True)
    llama = _tiny(tf.LlamaForCausalLM, tf.LlamaConfig(
        vocab_size=20, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2))
    w = read_weights(llama)
    assert graph_shape(w) == GraphShape(2, 4)  # k/v inputs per query head, not per kv group
    assert w.kv_of.tolist() == [0, 0, 1, 1]
    assert w.w_k.shape[1] == 2  # the two kv groups' weights, shared, not copied per head


@pytest.mark.parametrize(("cls", "config"), [
    (tf.GPTJForCausalLM, lambda: tf.GPTJConfig(vocab_size=20, n_embd=32, n_layer=1, n_head=2, rotary_dim=8)),
    (tf.OPTForCausalLM, lambda: tf.OPTConfig(vocab_size=20, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, ffn_dim=48, word_embed_proj_dim=32)),
])
def test_unsupported_architecture_is_named_with_the_supported_ones(cls, config):
    with pytest.raises(UnsupportedModelError) as err:
        read_weights(_tiny(cls, config()))
    message = str(err.value)
    assert cls.__name__ in message
    assert all(name in message for name in ADAPTERS)


def test_the_torch_free_list_names_every_adapter_and_refuses_the_rest():
    """The API refuses (422) what the engine could not search, without loading torch."""
    from discovery.arch import ADAPTERS
    from discovery.catalog import EDGE_ARCHITECTURES, unsupported_architecture

    assert set(EDGE_ARCHITECTURES) == set(ADAPTERS)
    assert unsupported_architecture({"architectures": ["LlamaForCausalLM"]}) is None
    why = unsupported_architecture({"architectures": ["GPTJForCausalLM"]})
    assert "GPTJForCausalLM" in why and "GPT2LMHeadModel" in why


def test_saved_gpt2_weights_equal_the_transformers_models_and_skip_building_it():
    """Discovery on a shipped GPT-2 reads model.safetensors directly: the same tensors as through
    the transformers model, which is then never built (start-up time)."""
    import dataclasses

    import torch

    from discovery.arch import GPT2Weights, read_saved_weights
    from discovery.discover import DiscoveryRequest, discover, model_weights
    from discovery.models import load_model

    model = load_model("multitask", device="cpu")
    saved = model_weights(model)
    assert isinstance(saved, GPT2Weights) and not model.hf_model_loaded
    circuit = discover(DiscoveryRequest(model="multitask", task="successor", n_prompts=8, device="cpu"),
                       model=model)
    assert not model.hf_model_loaded and circuit.provenance.architecture == "GPT2LMHeadModel"
    built = GPT2Weights.from_hf(model.hf_model)
    for f in dataclasses.fields(GPT2Weights):
        a, b = getattr(saved, f.name), getattr(built, f.name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, f.name
    assert read_saved_weights(model.path, {"architectures": ["LlamaForCausalLM"]}, "cpu") is None


def expected_grouped_edges(n_layers: int, n_heads: int, groups: int, *, parallel: bool) -> int:
    """One k and one v input per key-value group: per layer n_heads q inputs and 2 * groups k/v
    inputs, each reading every earlier node; MLPs and logits as per head."""
    total = 0
    for layer in range(n_layers):
        before = 1 + layer * (n_heads + 1)
        total += (n_heads + 2 * groups) * before + before + (0 if parallel else n_heads)
    return total + 1 + n_layers * (n_heads + 1)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize(("n_layers", "n_heads", "groups"), [(2, 4, 2), (3, 4, 1), (2, 6, 3), (2, 4, 4)])
def test_grouped_edge_count_formula_and_shape_agree_with_graph(n_layers, n_heads, groups, parallel):
    shape = GraphShape(n_layers, n_heads, parallel=parallel, kv_groups=groups)
    graph = Graph(shape)
    assert graph.n_edges == expected_grouped_edges(n_layers, n_heads, groups, parallel=parallel)
    names = [graph.edge(u, k).name for u, k in graph.edge_valid().nonzero().tolist()]
    assert sorted(names) == sorted(shape.edges())
    assert [graph.edge(u, k).name for u, k in graph.edges_in_order()] and len(graph.edges_in_order()) == graph.n_edges
    assert len(graph.ties) == n_layers * (n_heads + 2 * groups) + n_layers + 1
    assert all(graph.index_of(n)[1] in graph.leaders().nonzero()[:, 0].tolist() for n in names)


def test_the_grouped_shape_comes_from_the_adapter_and_old_shapes_keep_per_head():
    llama = _tiny(tf.LlamaForCausalLM, tf.LlamaConfig(
        vocab_size=20, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2))
    gpt2 = _tiny(tf.GPT2LMHeadModel, tf.GPT2Config(vocab_size=20, n_embd=32, n_layer=1, n_head=2))
    assert read_weights(llama).n_kv_heads == 2 and read_weights(gpt2).n_kv_heads == 2
    assert GraphShape(**{"n_layers": 2, "n_heads": 4, "mlp": True}).kv_groups is None
    assert Graph(GraphShape(2, 4)).ties == [(k,) for k in range(Graph(GraphShape(2, 4)).n_inputs)]
