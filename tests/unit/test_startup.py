"""Start-up cost (issue 13, point 5): load_model and discovery never boot the TransformerBridge nor
import transformer_lens; the bridge still boots on demand around the same weights; the cached list
of transformer_lens architectures is the live one; `circuits --help` loads no service client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from discovery import models as models_module
from discovery import tl_architectures
from discovery.discover import DiscoveryRequest, discover
from discovery.models import ModelLoadError, load_model, supported_architectures

ROOT = Path(__file__).resolve().parents[2]
MULTITASK = ROOT / "models" / "multitask"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def test_discovery_does_not_boot_the_bridge():
    model = load_model("multitask", device="cpu")
    assert not model.bridge_booted and not model.hf_model_loaded  # weights load on first use
    request = DiscoveryRequest(model="multitask", task="ioi", method="eap", threshold=0.01,
                               n_prompts=4, device="cpu")
    circuit = discover(request, model=model)
    assert circuit.edges and not model.hf_model_loaded  # a shipped GPT-2's safetensors are read directly
    assert not model.bridge_booted, "discovery booted the TransformerBridge; it needs only the weights"
    assert not model.hf_model.training and next(model.hf_model.parameters()).device.type == "cpu"


def test_load_model_imports_no_transformer_lens():
    done = _python("import sys; from discovery.models import load_model; "
                   "m = load_model('multitask', device='cpu'); m.hf_model; "
                   "print('transformer_lens' in sys.modules, m.bridge_booted)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_bridge_boots_on_demand_around_the_same_weights():
    model = load_model("multitask", device="cpu")
    tokens = torch.tensor([[0, 5, 9, 17, 3, 8], [0, 2, 4, 6, 8, 10]])
    with torch.no_grad():
        expected = model.hf_model(tokens).logits
    got = model.logits(tokens)  # boots the bridge
    assert model.bridge_booted and model.bridge.original_model is model.hf_model  # not a copy
    assert got.shape == (2, 6, model.config["vocab_size"])
    assert torch.allclose(got, expected, atol=1e-5)
    assert model.bridge.cfg.n_ctx == model.n_ctx
    _, cache = model.bridge.run_with_cache(tokens)  # the hooks discovery.heads reads
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, model.config["n_head"], 6, 6)


def test_unsupported_architecture_is_clear(tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((MULTITASK / name).read_bytes())
    config = json.loads((MULTITASK / "config.json").read_text())
    config["architectures"] = ["FooForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"FooForCausalLM is not supported by transformer_lens "
                                              r"4\.\d+\.\d+; supported include GPT2LMHeadModel"):
        load_model(str(tmp_path), device="cpu")


def test_cached_architectures_are_transformer_lens_own():
    from importlib.metadata import version

    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    assert version("transformer-lens") == tl_architectures.TL_VERSION, (
        "transformer_lens was upgraded: regenerate discovery/tl_architectures.py from "
        "SUPPORTED_ARCHITECTURES and set TL_VERSION")
    assert tl_architectures.SUPPORTED_ARCHITECTURES == frozenset(SUPPORTED_ARCHITECTURES)


def test_another_transformer_lens_version_is_asked_live(monkeypatch):
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    monkeypatch.setattr(models_module, "_tl_version", lambda: "9.9.9")
    live = supported_architectures()
    assert live == frozenset(SUPPORTED_ARCHITECTURES) and live is not tl_architectures.SUPPORTED_ARCHITECTURES


def test_cli_help_loads_no_torch_nor_service_clients():
    done = _python("import sys; import api.cli; from api.cli import build_parser; build_parser(); "
                   "print(sorted(m for m in ('torch', 'transformers', 'httpx', 'neo4j', 'redis', "
                   "'pydantic') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
