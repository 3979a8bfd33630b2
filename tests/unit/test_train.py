"""Training (the tiny CI recipes, GPT-2 and Llama) and the shipped models' cards, checked through
the CLI; the architecture builders checked against their recipes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from discovery.catalog import shipped_models
from discovery.zoo.card import CARD, sha256_file
from discovery.zoo.recipes import ARCHITECTURES, RECIPES, Recipe

ROOT = Path(__file__).resolve().parents[2]


def circuits(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    done = circuits("train", "--recipe", "tiny", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "step" in done.stderr  # the progress bar
    return out


def test_tiny_recipe_saves_a_complete_model(tiny):
    for name in ("config.json", "model.safetensors", "tokenizer.json", CARD, "README.md"):
        assert (tiny / name).exists(), name
    card = json.loads((tiny / CARD).read_text())
    assert card["weights_sha256"] == sha256_file(tiny / "model.safetensors")
    assert card["recipe"]["name"] == "tiny" and card["steps"] == 60
    assert set(card["eval"]) == {"ioi", "greater_than", "induction", "successor", "pronoun"}


def test_training_is_deterministic(tiny, tmp_path):
    done = circuits("train", "--recipe", "tiny", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    again = load_file(tmp_path / "model.safetensors")
    first = load_file(tiny / "model.safetensors")
    assert again.keys() == first.keys()
    assert all((again[k] - first[k]).abs().max() < 1e-5 for k in first)


def test_eval_reproduces_the_card(tiny):
    done = circuits("eval", "--model", str(tiny), "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "matches the card" in done.stdout


def test_tiny_llama_recipe_saves_a_loadable_llama(tmp_path):
    done = circuits("train", "--recipe", "tiny-llama", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
                 CARD, "README.md"):
        assert (tmp_path / name).exists(), name
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["circuit_atlas"] == {"attn_only": False, "recipe": "tiny-llama", "arch": "llama"}
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (2, 1)
    weights = load_file(tmp_path / "model.safetensors")
    assert not any(k.endswith(".bias") for k in weights)  # Llama has no biases
    assert "lm_head.weight" in weights  # untied unembedding
    assert "Llama architecture" in (tmp_path / "README.md").read_text()
    done = circuits("eval", "--model", str(tmp_path), "--device", "cpu")  # load_model reads it
    assert done.returncode == 0, done.stderr[-2000:]
    assert "matches the card" in done.stdout


def test_architecture_builders_follow_their_recipes():
    from transformers import GPT2LMHeadModel, GPTNeoXForCausalLM, LlamaForCausalLM

    from discovery.zoo.train import BUILDERS, build_model

    assert set(BUILDERS) == set(ARCHITECTURES)
    base = sum(p.numel() for p in build_model(RECIPES["multitask"], 270).parameters())
    llama = build_model(RECIPES["multitask-llama"], 270)
    pythia = build_model(RECIPES["multitask-pythia"], 270)
    assert isinstance(llama, LlamaForCausalLM) and isinstance(pythia, GPTNeoXForCausalLM)
    assert isinstance(build_model(RECIPES["multitask"], 270), GPT2LMHeadModel)
    for model in (llama, pythia):  # same size class as multitask (237,696 parameters)
        assert abs(sum(p.numel() for p in model.parameters()) - base) < 0.02 * base
        assert model.config.max_position_embeddings == 48 and not model.config.tie_word_embeddings
        assert model.config.circuit_atlas["arch"] in ("llama", "pythia")
    c = llama.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.hidden_size) == (4, 2, 64)
    assert c.hidden_act == "silu" and not c.attention_bias and not c.mlp_bias
    assert not any(name.endswith("bias") for name, _ in llama.named_parameters())
    c = pythia.config
    assert (c.num_attention_heads, c.hidden_size, c.intermediate_size) == (4, 64, 256)
    assert c.use_parallel_residual and c.rope_parameters["partial_rotary_factor"] == 0.25
    assert pythia.gpt_neox.rotary_emb.inv_freq.numel() == 2  # 4 of each head's 16 dims rotate


def test_recipe_architecture_errors_name_the_field():
    with pytest.raises(ValueError, match=r"unknown arch 'gptj'.*gpt2, llama, pythia"):
        Recipe("x", n_layer=1, n_head=2, n_embd=8, arch="gptj", mix={"ioi": 1.0})
    with pytest.raises(ValueError, match="attn_only is only supported for arch 'gpt2'"):
        Recipe("x", n_layer=1, n_head=2, n_embd=8, arch="llama", attn_only=True, mix={"ioi": 1.0})
    with pytest.raises(ValueError, match="n_head 4 not divisible by n_kv_head 3"):
        Recipe("x", n_layer=1, n_head=4, n_embd=8, arch="llama", n_kv_head=3, mix={"ioi": 1.0})


@pytest.mark.parametrize("name", ["multitask", "induction-2l", "multitask-llama", "multitask-pythia"])
def test_shipped_models_have_cards(name):
    models = shipped_models()
    assert name in models
    card = json.loads((models[name] / CARD).read_text())
    assert card["weights_sha256"] == sha256_file(models[name] / "model.safetensors")
    if name.startswith("multitask"):  # every architecture solves every shipped task
        assert set(card["eval"]) == {"ioi", "greater_than", "induction", "successor", "pronoun"}
        assert all(s["accuracy"] >= 0.95 for s in card["eval"].values()), card["eval"]


def test_shipped_models_fit_the_size_budget():
    total = sum(f.stat().st_size for f in (ROOT / "models").rglob("*") if f.is_file())
    assert total <= 30 * 1024 * 1024


def test_bad_recipe_is_a_clear_error(tmp_path):
    done = circuits("train", "--recipe", "huge", "--out", str(tmp_path))
    assert done.returncode == 1 and "unknown recipe 'huge'" in done.stderr


@pytest.mark.parametrize("name", ["multitask", "induction-2l", "induction-gt", "multitask-llama",
                                  "multitask-pythia"])
def test_eval_reproduces_shipped_cards(name):
    done = circuits("eval", "--model", name, "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "matches the card" in done.stdout
