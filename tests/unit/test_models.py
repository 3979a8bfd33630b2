"""Loading through transformer_lens 4.x: shipped names, local Hugging Face directories (a randomly
initialised GPT-2 saved here: no hub access), and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from discovery.catalog import shipped_models
from discovery.models import ModelLoadError, load_model, resolve_device
from discovery.zoo.corpus import vocabulary
from discovery.zoo.language import build_tokenizer, save_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def random_gpt2(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("gpt2")
    save_tokenizer(build_tokenizer(vocabulary()), directory, n_ctx=32)
    n_vocab = len(AutoTokenizer.from_pretrained(directory))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=n_vocab, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    GPT2LMHeadModel(config).eval().save_pretrained(directory)
    return directory


def test_local_directory_loads_and_matches_hf(random_gpt2):
    model = load_model(str(random_gpt2), device="cpu")
    hf = GPT2LMHeadModel.from_pretrained(random_gpt2, attn_implementation="eager").eval()
    tokens = torch.tensor([[0, 5, 9, 17, 3, 8]])
    with torch.no_grad():
        assert torch.allclose(model.logits(tokens), hf(tokens).logits, atol=1e-4)
    assert model.source == "local" and model.n_ctx == 32 and len(model.sha256) == 64
    assert model.bridge.cfg.n_layers == 2 and model.bridge.cfg.n_heads == 4


def test_shipped_model_by_name():
    assert "induction-gt" in shipped_models()
    model = load_model("induction-gt", device="cpu")
    assert model.source == "shipped" and model.attn_only
    assert "pool" in model.task_options["induction"]


def test_missing_path():
    with pytest.raises(ModelLoadError, match="not a Hugging Face model directory"):
        load_model("./no/such/model", device="cpu")


def test_unsupported_architecture(tmp_path, random_gpt2):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((random_gpt2 / name).read_bytes())
    config = json.loads((random_gpt2 / "config.json").read_text())
    config["architectures"] = ["XLNetLMHeadModel"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="XLNetLMHeadModel is not supported by transformer_lens"):
        load_model(str(tmp_path), device="cpu")


def test_tokenizer_mismatch(tmp_path, random_gpt2):
    save_tokenizer(build_tokenizer(vocabulary() | {f"extra{i}" for i in range(50)}), tmp_path, n_ctx=32)
    (tmp_path / "config.json").write_bytes((random_gpt2 / "config.json").read_bytes())
    with pytest.raises(ModelLoadError, match="tokenizer has .* tokens but the model's embedding has"):
        load_model(str(tmp_path), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_unavailable_is_clear():
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


def test_hub_name_offline_is_a_clear_cli_error():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home"}
    done = subprocess.run([sys.executable, "-m", "api.cli", "eval", "--model", "gpt2-nope-offline"],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert "neither a shipped model" in done.stderr and "Traceback" not in done.stderr
