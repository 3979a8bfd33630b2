"""What is Gemma-specific in :mod:`discovery.arch.gemma`, on the tiny Gemma, Gemma 2 and Gemma 3
models of ``test_arch_parity`` (whose parity, empty-circuit, fast-equals-reference and EAP tests
also run on them): each detail of the adapter (sqrt(d) embedding scale, soft-cappings,
``query_pre_attn_scalar``, post-norms, q/k norms, per-layer rotary and windows) is needed, since
flipping it alone breaks parity with the Hugging Face logits; windows and graph shape per layer;
the RMSNorm's cast order; clear errors for what is not supported."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import transformers as tf

from discovery.arch import UnsupportedModelError, graph_shape, read_weights
from discovery.arch.gemma import GemmaWeights, gemma_rms_norm
from discovery.circuit import GraphShape
from discovery.graph import Graph
from tests.unit.test_arch_graph import expected_edges
from tests.unit.test_arch_parity import CONFIGS, max_dlogit, tiny


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return {name: tiny(name) for name in ("gemma", "gemma2", "gemma3")}


def test_families_and_flags(models):
    w1, w2, w3 = (read_weights(models[n]) for n in ("gemma", "gemma2", "gemma3"))
    assert [w.family for w in (w1, w2, w3)] == ["gemma", "gemma2", "gemma3"]
    assert [w.post_attn_norm for w in (w1, w2, w3)] == [False, True, True]
    assert w1.scale == pytest.approx(16 ** -0.5)  # head_dim
    assert w2.scale == w3.scale == pytest.approx(24 ** -0.5)  # query_pre_attn_scalar
    assert (w2.attn_softcap, w2.final_softcap) == (5.0, 3.0)
    assert w3.q_norm_w.shape == (3, 16) and w1.q_norm_w is None
    assert w2.kv_of.tolist() == [0, 0, 1, 1]
    assert float(w1.embed_scale) == 8.0  # sqrt(64), in the weights' dtype
    assert torch.equal(w1.free_bias(1, 1), torch.zeros(64))  # no o_proj bias
    assert torch.equal(w2.free_bias(1, 2), torch.zeros(64))  # post-norm: b_o is inside the norm


def test_windows_per_layer_are_read_as_transformers_masks_them(models):
    """Gemma 2 alternates sliding and global layers (sliding first); Gemma 3 follows
    ``layer_types``; Gemma 1 has none."""
    assert read_weights(models["gemma"]).windows == (None, None)
    assert read_weights(models["gemma2"]).windows == (3, None)
    assert models["gemma2"].config.layer_types == ["sliding_attention", "full_attention"]
    assert read_weights(models["gemma3"]).windows == (3, None, 3)


def test_gemma3_layers_take_the_rotary_of_their_layer_type(models):
    w = read_weights(models["gemma3"])
    x = torch.zeros(1)
    local, full = (w.rotaries[i].cos_sin(6, x)[0] for i in (0, 1))
    assert w.rotaries[0] is w.rotaries[2]  # one cache per layer type
    assert not torch.allclose(local, full)
    ref = models["gemma3"].model.rotary_emb(x, torch.arange(6)[None], "full_attention")[0][0]
    assert torch.equal(full, ref)


def test_the_graph_is_the_sequential_one_with_its_edge_count(models):
    for name, n_layers in (("gemma", 2), ("gemma2", 2), ("gemma3", 3)):
        shape = graph_shape(read_weights(models[name]))
        assert shape == GraphShape(n_layers, 4)  # k/v per query head, post-norms add no node
        assert Graph(shape).n_edges == expected_edges(n_layers, 4, parallel=False)


# (model, what the adapter gets wrong): each detail alone breaks parity
FLIPS = {
    "no sqrt(d) embedding scale": ("gemma", lambda w: replace(w, embed_scale=torch.tensor(1.0))),
    "Llama's norm (w, not 1 + w)": ("gemma", lambda w: replace(w, ln1_w=w.ln1_w - 1)),
    "head_dim scaling, not query_pre_attn_scalar": (
        "gemma2", lambda w: replace(w, scale=16 ** -0.5)),
    "no attention soft-capping": ("gemma2", lambda w: replace(w, attn_softcap=None)),
    "no final soft-capping": ("gemma2", lambda w: replace(w, final_softcap=None)),
    "no post-attention norm": (
        "gemma2", lambda w: replace(w, post_attn_w=None, post_attn_norm=False)),
    "no post-feedforward norm": ("gemma2", lambda w: replace(w, post_mlp_w=None)),
    "no sliding window": ("gemma2", lambda w: replace(w, windows=(None, None))),
    "no q/k norms": ("gemma3", lambda w: replace(w, q_norm_w=None, k_norm_w=None)),
    "global rotary on local layers": ("gemma3", lambda w: replace(w, rotaries=(w.rotaries[1],) * 3)),
}


@pytest.mark.parametrize("flip", list(FLIPS))
def test_each_gemma_detail_is_needed_for_parity(models, flip):
    name, wrong = FLIPS[flip]
    w = read_weights(models[name])
    assert max_dlogit(models[name], w) <= 1e-4
    assert max_dlogit(models[name], wrong(w)) > 1e-2, flip


def test_gemma3_attention_is_not_soft_capped_as_in_transformers():
    """Gemma 3's attention does not pass ``attn_logit_softcapping`` to its attention function:
    with the field set, the adapter (like transformers) leaves scores uncapped."""
    torch.manual_seed(0)
    model = CONFIGS["gemma3"]()
    model.config.attn_logit_softcapping = 1.0
    model.config._attn_implementation = "eager"
    model.eval()
    w = read_weights(model)
    assert w.attn_softcap is None
    assert max_dlogit(model, w) <= 1e-4
    assert max_dlogit(model, replace(w, attn_softcap=1.0)) > 1e-2


def test_rms_norm_casts_after_scaling_like_gemma():
    """In bf16 Gemma scales by (1 + w) in fp32 and casts last: bit-equal to the HF module."""
    torch.manual_seed(0)
    norm = tf.models.gemma2.modeling_gemma2.Gemma2RMSNorm(64, eps=1e-6).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.normal_(0.0, 0.5)
    x = torch.randn(3, 5, 64).to(torch.bfloat16) * 7
    with torch.no_grad():
        assert torch.equal(gemma_rms_norm(x, norm.weight, 1e-6), norm(x))


def test_multimodal_gemma3_and_bidirectional_attention_are_refused_clearly():
    fake = type("Gemma3ForConditionalGeneration", (), {})()
    with pytest.raises(UnsupportedModelError, match="Gemma3ForConditionalGeneration.*Gemma3ForCausalLM"):
        read_weights(fake)
    with pytest.raises(UnsupportedModelError, match="Gemma3ForCausalLM"):
        GemmaWeights.from_hf(fake)
    torch.manual_seed(0)
    model = tf.Gemma2ForCausalLM(tf.Gemma2Config(
        vocab_size=20, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, use_bidirectional_attention=True))
    with pytest.raises(UnsupportedModelError, match="use_bidirectional_attention"):
        read_weights(model)
