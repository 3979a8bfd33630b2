"""Training checkpoints (``circuits train --checkpoints N`` / ``--checkpoint-steps``): the log-spaced
steps, the run manifest ``run.json``, checkpoint directories that load and run discovery, and a final
model that is byte-identical to a run without checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from discovery.zoo.card import CARD
from discovery.zoo.runs import (
    RUN,
    RunManifest,
    load_run,
    log_spaced_steps,
    parse_steps,
)

ROOT = Path(__file__).resolve().parents[2]


def circuits(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("total,n", [(60, 3), (60, 10), (3000, 8), (5, 5), (10, 2), (7, 20), (1, 2)])
def test_log_spaced_steps_are_sorted_unique_and_end_at_the_last_step(total, n):
    steps = log_spaced_steps(total, n)
    assert steps == sorted(set(steps))
    assert steps[-1] == total and steps[0] == 1
    assert len(steps) == min(n, total)
    assert all(1 <= s <= total for s in steps)


def test_log_spacing_is_logarithmic():
    steps = log_spaced_steps(10000, 5)
    assert steps == [1, 10, 100, 1000, 10000]


def test_too_few_checkpoints_and_bad_explicit_steps_name_the_flag():
    with pytest.raises(ValueError, match="--checkpoints must be at least 2"):
        log_spaced_steps(60, 1)
    assert parse_steps("50, 10,10,60", 60) == [10, 50, 60]
    for bad, why in (("0,10", "outside 1..60"), ("10,61", "outside 1..60"), ("ten", "not a step")):
        with pytest.raises(ValueError, match=f"--checkpoint-steps: .*{why}"):
            parse_steps(bad, 60)


def test_load_run_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="no run.json in .*--checkpoints"):
        load_run(tmp_path)
    (tmp_path / RUN).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_run(tmp_path)
    good = {"recipe": "tiny", "seed": 0, "steps": 60, "arch": "gpt2", "final": ".",
            "checkpoints": [{"step": 8, "path": "checkpoints/step-000008", "train_loss": 5.0,
                             "eval": {}}]}
    (tmp_path / RUN).write_text(json.dumps({k: v for k, v in good.items() if k != "seed"}))
    with pytest.raises(ValueError, match="missing field 'seed'"):
        load_run(tmp_path)
    (tmp_path / RUN).write_text(json.dumps({**good, "steps": "60"}))
    with pytest.raises(ValueError, match="field 'steps' must be a int"):
        load_run(tmp_path)
    twice = {**good, "checkpoints": good["checkpoints"] * 2}
    (tmp_path / RUN).write_text(json.dumps(twice))
    with pytest.raises(ValueError, match=r"checkpoints\[1\]: steps must ascend"):
        load_run(tmp_path)
    (tmp_path / RUN).write_text(json.dumps(good))
    assert load_run(tmp_path).to_dict() == good


def test_runs_module_is_torch_free():
    code = "import sys, discovery.zoo.runs; assert 'torch' not in sys.modules, 'torch loaded'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("flags,message", [
    (["--checkpoints", "1"], "--checkpoints must be at least 2"),
    (["--checkpoint-steps", "10,61"], "--checkpoint-steps: step 61 is outside 1..60"),
    (["--checkpoint-steps", "x"], "--checkpoint-steps: 'x' is not a step number"),
])
def test_bad_checkpoint_flags_fail_before_training(tmp_path, capsys, flags, message):
    from api.cli import main

    assert main(["train", "--recipe", "tiny", "--out", str(tmp_path / "out"), *flags]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_checkpoints_and_checkpoint_steps_exclude_each_other(tmp_path, capsys):
    from api.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--recipe", "tiny", "--out", str(tmp_path), "--checkpoints", "3",
              "--checkpoint-steps", "10"])
    assert exit_.value.code != 0
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny recipe trained twice through the CLI: with 3 checkpoints and without."""
    with_ckpt, plain = tmp_path_factory.mktemp("ckpt"), tmp_path_factory.mktemp("plain")
    done = circuits("train", "--recipe", "tiny", "--out", str(with_ckpt), "--checkpoints", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "step" in done.stderr  # the progress bar still runs
    assert "3 checkpoints (steps 1, 8, 60)" in done.stdout
    done = circuits("train", "--recipe", "tiny", "--out", str(plain))
    assert done.returncode == 0, done.stderr[-2000:]
    return with_ckpt, plain


def test_checkpointing_does_not_change_the_final_model(runs):
    with_ckpt, plain = runs
    assert (with_ckpt / "model.safetensors").read_bytes() == (plain / "model.safetensors").read_bytes()
    final, ckpt = (json.loads((d / CARD).read_text()) for d in (plain, with_ckpt))
    assert ckpt["eval"] == final["eval"] and ckpt["weights_sha256"] == final["weights_sha256"]
    assert not (plain / RUN).exists() and not (plain / "checkpoints").exists()
    last = load_file(with_ckpt / "checkpoints/step-000060/model.safetensors")
    first = load_file(with_ckpt / "model.safetensors")
    assert all((last[k] == first[k]).all() for k in first)  # the last checkpoint is the final model


def test_run_manifest_lists_the_checkpoints(runs):
    with_ckpt, _ = runs
    raw = json.loads((with_ckpt / RUN).read_text())
    assert list(raw) == ["recipe", "seed", "steps", "arch", "checkpoints", "final"]
    assert (raw["recipe"], raw["seed"], raw["steps"], raw["arch"], raw["final"]) == (
        "tiny", 0, 60, "gpt2", ".")
    run = load_run(with_ckpt)
    assert isinstance(run, RunManifest) and run.to_dict() == raw
    assert [c.step for c in run.checkpoints] == [1, 8, 60]
    final_card = json.loads((with_ckpt / CARD).read_text())
    for c in run.checkpoints:
        assert c.path == f"checkpoints/step-{c.step:06d}"
        assert list(c.to_dict()) == ["step", "path", "train_loss", "eval"]
        card = json.loads((with_ckpt / c.path / CARD).read_text())
        assert card["step"] == c.step and card["train_loss"] == c.train_loss
        assert card["eval"] == c.eval
        assert set(c.eval) == set(final_card["eval"])
        for scores in c.eval.values():
            assert set(scores) == {"accuracy", "answer_mass", "metric", "metric_mean", "prompts"}
    assert run.checkpoints[-1].eval == final_card["eval"]
    # the loss falls: step 1's window is its own loss, step 60's the mean of steps 11..60
    assert run.checkpoints[0].train_loss > run.checkpoints[-1].train_loss


def test_every_checkpoint_loads_and_runs_discovery(runs):
    from discovery.discover import DiscoveryRequest, discover
    from discovery.models import load_model

    with_ckpt, _ = runs
    for c in load_run(with_ckpt).checkpoints:
        path = with_ckpt / c.path
        model = load_model(str(path), device="cpu")
        assert model.n_ctx == 48
        circuit = discover(DiscoveryRequest(model=str(path), task="induction", n_prompts=10))
        assert circuit.provenance.task == "induction"
