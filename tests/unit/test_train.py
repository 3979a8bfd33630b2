"""Training (the tiny CI recipe) and the shipped models' cards, checked through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from discovery.catalog import shipped_models
from discovery.zoo.card import CARD, sha256_file

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


@pytest.mark.parametrize("name", ["multitask", "induction-2l"])
def test_shipped_models_have_cards(name):
    models = shipped_models()
    assert name in models
    card = json.loads((models[name] / CARD).read_text())
    assert card["weights_sha256"] == sha256_file(models[name] / "model.safetensors")


def test_shipped_models_fit_the_size_budget():
    total = sum(f.stat().st_size for f in (ROOT / "models").rglob("*") if f.is_file())
    assert total <= 30 * 1024 * 1024


def test_bad_recipe_is_a_clear_error(tmp_path):
    done = circuits("train", "--recipe", "huge", "--out", str(tmp_path))
    assert done.returncode == 1 and "unknown recipe 'huge'" in done.stderr


@pytest.mark.parametrize("name", ["multitask", "induction-2l", "induction-gt"])
def test_eval_reproduces_shipped_cards(name):
    done = circuits("eval", "--model", name, "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "matches the card" in done.stdout
