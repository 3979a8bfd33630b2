"""Start-up time (issue 13, point 5): each target timed in fresh subprocesses, median of --runs.

    python bench/startup.py [--runs 5] [--root DIR]

``--root`` times another checkout of the project (``git archive HEAD | tar -x -C /tmp/before``
gives the "before" column); rows that need this version's lazy ``LoadedModel`` show n/a there.

Rows: the three targets (``circuits discover --model multitask --task ioi`` end to end, loading a
shipped model, ``import discovery``) with pass/fail, then what they are made of, measured the same
way: the floors this project does not control (``import torch``; the ``transformers`` modeling
stack, which imports ``torch._dynamo`` through ``transformers.masking_utils``), the whole
discovery in a process that has torch (the search is most of it) on each shipped architecture
(their saved weights and ``tokenizer.json`` are read without ``transformers``), what importing
``transformers`` would add, the first use of
the weights, a second load in a warm process (a worker's case), and what booting the
TransformerBridge would still cost. Timings on a shared machine vary with its load: the load
average is printed beside the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TIMER = ("import time, sys; t = time.perf_counter(); {setup}\nt = time.perf_counter(); {code}\n"
         "print('ELAPSED', time.perf_counter() - t)")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(ROOT)}


def whole(argv: list[str]) -> float:
    """Wall seconds of a fresh process running ``argv``."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def inside(code: str, setup: str = "pass") -> float:
    """Seconds ``code`` takes in a fresh interpreter after ``setup`` (timed from inside)."""
    done = subprocess.run([PY, "-c", TIMER.format(setup=setup, code=code)], cwd=ROOT,
                          capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise SystemExit(f"{code!r} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.split("ELAPSED")[-1])


def rows(out: Path) -> list[tuple[str, float | None, object]]:
    """(what, target seconds or None, a zero-argument timing, or None where ``--root``'s version
    has no lazy weights)."""
    lazy = "def hf_model" in (ROOT / "discovery" / "models.py").read_text()
    load = "from discovery.models import load_model; m = load_model('multitask', device='cpu')"
    discover = ("from discovery.discover import DiscoveryRequest, discover; "
                "discover(DiscoveryRequest(model='{name}', task='ioi', device='cpu'))")
    return [
        ("circuits discover --model multitask --task ioi (end to end)", 3.0,
         lambda: whole([PY, "-m", "api.cli", "discover", "--model", "multitask", "--task", "ioi",
                        "--device", "cpu", "--out", str(out)])),
        ("load_model('multitask') (after import torch)", 1.0, lambda: inside(load, "import torch")),
        ("import discovery", 1.5, lambda: inside("import discovery")),
        ("  floor: import torch", None, lambda: inside("import torch")),
        ("  discover ioi on multitask in-process (after import torch)", None,
         lambda: inside(discover.format(name="multitask"), "import torch")),
        ("  discover ioi on multitask-llama in-process", None,
         lambda: inside(discover.format(name="multitask-llama"), "import torch")),
        ("  discover ioi on multitask-pythia in-process", None,
         lambda: inside(discover.format(name="multitask-pythia"), "import torch")),
        ("  discover ioi on multitask-gemma2 in-process", None,
         (ROOT / "models" / "multitask-gemma2").is_dir()  # n/a where --root's version lacks it
         and (lambda: inside(discover.format(name="multitask-gemma2"), "import torch"))),
        ("  import transformers (no longer on the discover path)", None,
         lambda: inside("import transformers", "import torch")),
        ("  floor: transformers GPT-2 modeling import (torch._dynamo)", None,
         lambda: inside("from transformers.models.gpt2 import modeling_gpt2",
                        "import torch, transformers")),
        ("  first model.hf_model (modeling import + weights)", None,
         lazy and (lambda: inside("m.hf_model", "import torch; " + load))),
        ("  second load_model + hf_model in a warm process", None,
         lazy and (lambda: inside(load + "; m.hf_model", "import torch; " + load + "; m.hf_model"))),
        ("  model.bridge on demand (transformer_lens import + boot)", None,
         lazy and (lambda: inside("m.bridge", "import torch; " + load + "; m.hf_model"))),
        ("  circuits --help", None, lambda: whole([PY, "-m", "api.cli", "--help"])),
    ]


def main() -> int:
    global ROOT  # --root: the checkout every row runs in
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per row (median)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to time")
    args = parser.parse_args()
    ROOT = args.root.resolve()
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        print(f"timing {ROOT}; load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
        print(f"{'what':<64} {'target':>7} {'median':>8} {'min':>7}  result")
        for what, target, timing in rows(Path(tmp) / "circuit.json"):
            if not timing:
                print(f"{what:<64} {'':>7} {'n/a':>8}")
                continue
            times = [timing() for _ in range(args.runs)]
            med = statistics.median(times)
            verdict = "" if target is None else ("pass" if med <= target else "FAIL")
            failed += verdict == "FAIL"
            limit = "" if target is None else f"<={target:g}s"
            print(f"{what:<64} {limit:>7} {med:7.2f}s {min(times):6.2f}s  {verdict}", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
