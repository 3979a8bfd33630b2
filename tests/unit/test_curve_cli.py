"""``circuits curve``: a real run on the shipped multitask model writes the table, the JSON and the
picture, with CPR and CMD equal to their definition on the points it printed; bad input is one
line and exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from discovery.curves import cmd, cpr
from tests.conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", "curve", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_curve_of_eap_on_ioi(tmp_path):
    out, png = tmp_path / "curve.json", tmp_path / "curve.png"
    done = _run("--model", "multitask", "--task", "ioi", "--method", "eap", "--n-prompts", "20",
                "--fractions", "0.01,0.1,0.5,1", "--json", str(out), "--png", str(png))
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    f = [p["faithfulness"] for p in data["points"]]
    assert [p["fraction"] for p in data["points"]] == [0.01, 0.1, 0.5, 1.0]
    assert f[-1] == pytest.approx(1.0, abs=1e-5) and f[0] < f[-1]
    assert data["cpr"] == pytest.approx(cpr([0.01, 0.1, 0.5, 1.0], f))
    assert data["cmd"] == pytest.approx(cmd([0.01, 0.1, 0.5, 1.0], f))
    assert f"CPR {data['cpr']:.3f}" in done.stdout and f"CMD {data['cmd']:.3f}" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("args", "message"), [
    (("--model", "multitask", "--task", "nope"), "unknown task 'nope'"),
    (("--model", "multitask", "--task", "ioi", "--fractions", "0.5,0.1"), "--fractions[1] = 0.1: must be larger"),
    (("--model", "multitask", "--task", "ioi", "--fractions", "a,b"), "--fractions 'a,b': give numbers"),
])
def test_bad_input_is_one_line(args, message):
    done = _run(*args)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
