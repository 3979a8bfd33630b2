"""``circuits discover`` and ``circuits show`` end to end, and their errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from discovery.circuit import Circuit

ROOT = Path(__file__).resolve().parents[2]


def circuits(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_discover_then_show(tmp_path):
    out = tmp_path / "induction.json"
    done = circuits("discover", "--model", "induction-2l", "--task", "induction", "--method", "acdc",
                    "--threshold", "0.1", "--device", "auto", "--n-prompts", "20", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "edge" in done.stderr and "faithfulness" in done.stdout  # progress bar and summary
    circuit = Circuit.from_json(out.read_text())
    assert circuit.provenance.method == "acdc" and circuit.edges
    assert len(circuit.edge_scores) == circuit.provenance.params["edges_total"]
    shown = circuits("show", str(out), "--format", "graphml")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert out.with_suffix(".graphml").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--model", "./no/such/model"], "not a Hugging Face model directory"),
    (["--threshold", "0"], "--threshold must be > 0"),
    (["--threshold", "-1"], "--threshold must be > 0"),
    (["--method", "magic"], "unknown method 'magic'"),
])
def test_bad_arguments_are_clear(tmp_path, args, message):
    base = {"--model": "induction-2l", "--task": "induction", "--out": str(tmp_path / "c.json")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    done = circuits("discover", *[x for kv in base.items() for x in kv])
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr


def test_cuda_request_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = circuits("discover", "--model", "induction-2l", "--task", "induction", "--device", "cuda",
                    "--out", str(tmp_path / "c.json"))
    assert done.returncode == 1 and "CUDA is not available" in done.stderr
