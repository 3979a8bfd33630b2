"""Saved-weight readers (``from_safetensors``, discovery.arch.SAVED_READERS) for the Llama family,
GPT-NeoX and Gemma 1/2/3: weights read from ``config.json`` + ``model.safetensors`` without building the
``transformers`` model give the same patched-forward logits as weights read from that model
(max |diff| <= 1e-6), on tiny random models saved to a tmp dir and on the shipped
multitask-llama, multitask-pythia and multitask-gemma2; rope types :mod:`discovery.arch.rope` does not compute make
the reader decline (None: the ``transformers`` model is read instead)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

from discovery.arch import (
    SAVED_READERS,
    GemmaWeights,
    LlamaWeights,
    NeoXWeights,
    graph_shape,
    read_saved_weights,
    read_weights,
)
from discovery.arch.rope import ConfigRotary, rotary_from_config
from discovery.graph import Graph
from discovery.patching import patched_forward

ROOT = Path(__file__).resolve().parents[2]
VOCAB, P = 50, 9
_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, max_position_embeddings=32, initializer_range=0.15)
CONFIGS = {
    "llama-linear": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(
        **_COMMON, num_key_value_heads=2, tie_word_embeddings=False,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0})),
    "llama-biases-tied": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(
        **_COMMON, num_key_value_heads=1, attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
        head_dim=8)),
    "mistral-window": lambda: tf.MistralForCausalLM(tf.MistralConfig(
        **_COMMON, num_key_value_heads=2, sliding_window=3, tie_word_embeddings=False)),
    "qwen2-sliding-tied": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(
        **_COMMON, num_key_value_heads=2, tie_word_embeddings=True, use_sliding_window=True,
        sliding_window=3, max_window_layers=1)),
    "neox-parallel": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
        **_COMMON, rotary_pct=0.5, use_parallel_residual=True, tie_word_embeddings=False)),
    "neox-sequential-linear": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
        **_COMMON, rotary_pct=0.25, use_parallel_residual=False, tie_word_embeddings=False,
        rope_parameters={"rope_type": "linear", "factor": 3.0, "rope_theta": 100.0,
                         "partial_rotary_factor": 0.25})),
    "gemma-untied-biases": lambda: tf.GemmaForCausalLM(tf.GemmaConfig(
        **_COMMON, num_key_value_heads=2, head_dim=16, hidden_act="gelu", attention_bias=True,
        tie_word_embeddings=False)),
    "gemma2-window-tied": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(
        **_COMMON, num_key_value_heads=2, head_dim=16, sliding_window=3, query_pre_attn_scalar=11,
        attn_logit_softcapping=2.0, final_logit_softcapping=3.0, tie_word_embeddings=True)),
    "gemma2-layer-types-linear": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(
        **_COMMON, num_key_value_heads=1, head_dim=8, sliding_window=4,
        layer_types=["full_attention", "sliding_attention"], tie_word_embeddings=False,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 300.0})),
    "gemma3-local-global": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(
        **_COMMON, num_key_value_heads=2, head_dim=16, sliding_window=3, query_pre_attn_scalar=9,
        final_logit_softcapping=4.0, layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1000.0}})),
}


def _both_ways(directory: Path, model) -> tuple:
    config = json.loads((directory / "config.json").read_text())
    saved = read_saved_weights(directory, config, "cpu")
    return saved, read_weights(model)


def _max_logit_diff(a, b, seed: int = 0) -> float:
    """Max |logit difference| of two weight readings through the patched forward, on random
    tokens with a random half of the edges ablated to random node outputs (every path used)."""
    graph = Graph(graph_shape(a))
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, a.wte.shape[0], (3, P), generator=g)
    ablation = torch.randn(graph.n_upstream, *tokens.shape, a.wte.shape[1], generator=g)
    mask = graph.valid() & (torch.rand(graph.valid().shape, generator=g) < 0.5)
    with torch.no_grad():
        runs = [patched_forward(w, graph, tokens, ablation, m).logits
                for w in (a, b) for m in (mask, graph.valid())]
    assert runs[1].std() > 0.01  # not a flat model
    return max((runs[0] - runs[2]).abs().max().item(), (runs[1] - runs[3]).abs().max().item())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_saved_weights_equal_the_transformers_models(name, tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = CONFIGS[name]().eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    saved, built = _both_ways(tmp_path, model)
    assert saved is not None, f"{name}: the saved reader declined"
    assert type(saved) is type(built) and saved.family == built.family
    assert saved.windows == built.windows if hasattr(saved, "windows") else saved.parallel == built.parallel
    assert _max_logit_diff(saved, built) <= 1e-6


@pytest.mark.parametrize("shipped", ["multitask-llama", "multitask-pythia", "multitask-gemma2"])
def test_shipped_models_read_both_ways_agree(shipped):
    from discovery.models import load_model

    model = load_model(shipped, device="cpu")
    saved, built = _both_ways(model.path, model.hf_model)
    kind = {"multitask-llama": LlamaWeights, "multitask-pythia": NeoXWeights, "multitask-gemma2": GemmaWeights}
    assert isinstance(saved, kind[shipped])
    assert getattr(saved, "windows", None) == getattr(built, "windows", None)
    assert _max_logit_diff(saved, built) <= 1e-6


def test_registered_for_the_llama_family_and_neox():
    for arch in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"):
        assert SAVED_READERS[arch] == LlamaWeights.from_safetensors
    assert SAVED_READERS["GPTNeoXForCausalLM"] == NeoXWeights.from_safetensors
    for arch in ("GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM"):
        assert SAVED_READERS[arch] == GemmaWeights.from_safetensors


def test_config_rotary_equals_the_models_rotary_module():
    torch.manual_seed(0)
    model = CONFIGS["neox-sequential-linear"]()
    config = model.config.to_dict()
    rotary, dim = rotary_from_config(config, 16)
    assert isinstance(rotary, ConfigRotary) and dim == model.gpt_neox.layers[0].attention.rotary_ndims == 4
    x, pos = torch.zeros(1, 1, 16), torch.arange(11)[None]
    ours, theirs = rotary(x, pos), model.gpt_neox.rotary_emb(x, pos)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


@pytest.mark.parametrize("rope", [
    {"rope_type": "llama3", "factor": 8.0, "rope_theta": 500000.0, "low_freq_factor": 1.0,
     "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    {"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0},
])
def test_other_rope_types_decline_to_the_transformers_model(rope, tmp_path):
    model_dir = ROOT / "models" / "multitask-llama"
    config = json.loads((model_dir / "config.json").read_text())
    tensors = load_file(model_dir / "model.safetensors")
    assert LlamaWeights.from_safetensors(config, tensors) is not None
    assert LlamaWeights.from_safetensors({**config, "rope_parameters": rope}, tensors) is None
    assert LlamaWeights.from_safetensors({k: v for k, v in config.items() if k != "rope_parameters"},
                                         tensors) is None  # older config format: not guessed


def test_a_file_of_another_architecture_is_declined():
    gpt2 = ROOT / "models" / "multitask"
    tensors = load_file(gpt2 / "model.safetensors")
    config = json.loads((gpt2 / "config.json").read_text())
    assert LlamaWeights.from_safetensors({**config, "architectures": ["LlamaForCausalLM"]}, tensors) is None
    assert NeoXWeights.from_safetensors({**config, "architectures": ["GPTNeoXForCausalLM"]}, tensors) is None


def test_gemma_fields_equal_the_transformers_models(tmp_path):
    """Every scalar field of the saved Gemma 2 reading is from_hf's (embed scale dtype, scaling,
    soft-caps, windows, activation), and Gemma 3's local and global rotaries differ as its own do."""
    torch.manual_seed(0)
    for name in ("gemma-untied-biases", "gemma2-window-tied", "gemma3-local-global"):
        model = CONFIGS[name]().eval()
        model.save_pretrained(tmp_path / name, safe_serialization=True)
        saved, built = _both_ways(tmp_path / name, model)
        for field in ("eps", "act", "scale", "attn_softcap", "final_softcap", "windows", "family",
                      "post_attn_norm", "n_heads"):
            assert getattr(saved, field) == getattr(built, field), (name, field)
        assert saved.embed_scale.dtype == built.embed_scale.dtype and torch.equal(saved.embed_scale, built.embed_scale)
        assert torch.equal(saved.kv_of, built.kv_of)
        x = torch.zeros(1, 1, 16)
        for ours, theirs in zip(saved.rotaries, built.rotaries, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(ours.cos_sin(7, x), theirs.cos_sin(7, x), strict=True))
    assert not torch.equal(saved.rotaries[0].cos_sin(7, x)[0], saved.rotaries[1].cos_sin(7, x)[0])


def test_gemma_configs_it_cannot_reproduce_decline():
    model_dir = ROOT / "models" / "multitask-gemma2"
    config = json.loads((model_dir / "config.json").read_text())
    tensors = load_file(model_dir / "model.safetensors")
    assert GemmaWeights.from_safetensors(config, tensors) is not None
    declined = [
        {**config, "rope_parameters": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0}},
        {**config, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
        {**config, "use_bidirectional_attention": True},
        {**config, "tie_word_embeddings": False},  # and no lm_head.weight in the file
        {k: v for k, v in config.items() if k != "head_dim"},  # the class default, not the shapes
        {**config, "architectures": ["Gemma3ForCausalLM"], "rope_parameters": {  # Gemma 3 linear
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}},
        {**config, "architectures": ["Gemma3ForCausalLM"]},  # one rope dict, not one per layer type
    ]
    for bad in declined:
        assert GemmaWeights.from_safetensors(bad, tensors) is None, bad
