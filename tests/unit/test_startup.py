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


# --- no transformers on the discover path (the tokenizer from tokenizer.json, saved readers) ----


def test_import_discovery_and_discovering_on_shipped_models_import_no_transformers():
    """``import discovery``, then load + discover on each shipped architecture (GPT-2, Llama,
    NeoX, Gemma 2): ``transformers`` stays out of sys.modules (its import alone costs ~1.2 s)."""
    done = _python(
        "import sys; import discovery; first = 'transformers' in sys.modules\n"
        "from discovery.discover import DiscoveryRequest, discover\n"
        "from discovery.models import load_model\n"
        "for name in ('multitask', 'multitask-llama', 'multitask-pythia', 'multitask-gemma2'):\n"
        "    m = load_model(name, device='cpu')\n"
        "    c = discover(DiscoveryRequest(model=name, task='ioi', method='eap', threshold=0.01,\n"
        "                                  n_prompts=4, device='cpu'), model=m)\n"
        "    assert c.edges and not m.hf_model_loaded, name\n"
        "print(first, type(m.tokenizer).__name__, sorted(k for k in ('transformers', 'transformer_lens',"
        " 'neo4j', 'fastapi', 'celery') if k in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "FastTokenizer", "[]"]


def test_cli_discover_imports_no_transformers(tmp_path):
    out = tmp_path / "c.json"
    done = _python(
        "import sys, runpy; sys.argv = ['circuits', 'discover', '--model', 'multitask', '--task', 'ioi',"
        f" '--method', 'eap', '--n-prompts', '4', '--device', 'cpu', '--out', {str(out)!r}]\n"
        "from api.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print(rc, sorted(k for k in ('transformers', 'transformer_lens', 'neo4j', 'fastapi', 'redis',"
        " 'celery', 'pydantic_settings') if k in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 []" and out.exists()


def _tokenized_or_error(data, tokenizer, n_ctx):
    from discovery.tasks.tokens import tokenize_task

    try:
        b = tokenize_task(data, tokenizer, n_ctx=n_ctx)
    except ValueError as exc:
        return str(exc)
    return [b.clean.tolist(), b.corrupt.tolist(), b.last.tolist(), b.answers.tolist(), b.wrongs.tolist()]


@pytest.mark.parametrize("shipped", sorted(models_module.shipped_models()))
def test_fast_tokenizer_equals_transformers_on_every_task(shipped):
    from transformers import PreTrainedTokenizerFast

    from discovery.tasks import TASKS
    from discovery.tasks.tokens import tokenizer_sha256
    from discovery.tokenizer import FastTokenizer

    model = load_model(shipped, device="cpu")
    ours, theirs = model.tokenizer, PreTrainedTokenizerFast.from_pretrained(str(model.path))
    assert isinstance(ours, FastTokenizer)
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token", "bos_token_id", "eos_token_id",
                 "pad_token_id", "unk_token_id", "vocab_size", "all_special_ids"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert len(ours) == len(theirs) and ours.get_vocab() == theirs.get_vocab()
    assert tokenizer_sha256(ours) == tokenizer_sha256(theirs) != ""
    vocab = sorted(theirs.get_vocab())
    assert ours.convert_tokens_to_ids([*vocab, "not-a-word"]) == theirs.convert_tokens_to_ids([*vocab, "not-a-word"])
    assert ours.convert_ids_to_tokens(list(range(len(theirs)))) == theirs.convert_ids_to_tokens(list(range(len(theirs))))
    for task in TASKS:
        data = TASKS[task].generate(20, seed=3, split="test", options=model.task_options.get(task))
        assert _tokenized_or_error(data, ours, model.n_ctx) == _tokenized_or_error(data, theirs, model.n_ctx)
        texts = [t for p in data.pairs for t in (p.clean, p.corrupt, *p.answers, *p.wrongs)]
        for special in (False, True):
            assert ours(texts, add_special_tokens=special) == dict(theirs(texts, add_special_tokens=special))
            for text in texts[:6]:
                assert ours(text, add_special_tokens=special) == dict(theirs(text, add_special_tokens=special))
                ids = theirs.encode(text, add_special_tokens=special)
                assert ours.encode(text, add_special_tokens=special) == ids
                assert ours.decode(ids) == theirs.decode(ids)
                assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


def test_tokenizer_falls_back_to_transformers_where_it_would_differ(tmp_path):
    from discovery.tokenizer import FastTokenizer, fast_tokenizer_fits

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((MULTITASK / name).read_bytes())
    assert fast_tokenizer_fits(tmp_path)
    config = json.loads((MULTITASK / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
    assert not fast_tokenizer_fits(tmp_path)  # an option transformers applies on top of the file
    model = load_model(str(tmp_path), device="cpu")
    assert not isinstance(model.tokenizer, FastTokenizer) and model.tokenizer.bos_token_id == 0
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": "<s>"}))
    assert not fast_tokenizer_fits(tmp_path)  # a special token outside the vocabulary
    (tmp_path / "tokenizer.json").unlink()
    assert not fast_tokenizer_fits(tmp_path)


def test_bridge_gets_a_transformers_tokenizer_built_lazily():
    from transformers import PreTrainedTokenizerBase

    from discovery.tokenizer import FastTokenizer, as_transformers_tokenizer

    model = load_model("multitask", device="cpu")
    assert isinstance(model.tokenizer, FastTokenizer) and "transformers_tokenizer" not in vars(model.tokenizer)
    real = as_transformers_tokenizer(model.tokenizer)
    assert isinstance(real, PreTrainedTokenizerBase) and real is as_transformers_tokenizer(model.tokenizer)
    assert real("Mary", add_special_tokens=False)["input_ids"] == model.tokenizer("Mary", add_special_tokens=False)["input_ids"]


def test_cli_discover_skips_teardown_but_flushes_everything(tmp_path):
    """``circuits discover`` ends with os._exit after atexit handlers and a flush (the module
    teardown costs ~0.5 s with torch loaded): a piped stdout is complete, the JSON written, the
    exit status kept; a caller's ``main([...])`` returns instead (test_cli_discover_imports_...)."""
    from api.cli import build_parser

    assert build_parser().parse_args(["discover", "--model", "m", "--task", "t", "--out", "x"]).fast_exit
    out = tmp_path / "c.json"
    done = subprocess.run([sys.executable, "-m", "api.cli", "discover", "--model", "multitask", "--task", "ioi",
                           "--method", "eap", "--n-prompts", "4", "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(f"wrote {out}") and json.loads(out.read_text())["edges"]
    bad = subprocess.run([sys.executable, "-m", "api.cli", "discover", "--model", "multitask", "--task", "nope",
                          "--device", "cpu", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert bad.returncode == 1 and "unknown task 'nope'" in bad.stderr
