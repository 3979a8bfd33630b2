"""What a competition experiment costs on CPU, stage by stage, for the shipped multitask pairs.

For each pair (ioi x induction, successor x induction) the experiment runs once from scratch
(discovering both circuits with ACDC) and once more on the circuits the first run found; the table
gives each stage's seconds (``provenance.timings``), its share of the run, and the whole run as a
multiple of the baseline measured in the same process: one forward pass of the full model over
one task's prompt batch through the patched forward (the unit every stage is made of).

    OMP_NUM_THREADS=1 python bench/experiment.py [--prompts 50] [--controls 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from discovery.discover import build_problem, task_data  # noqa: E402
from discovery.experiments.run import ExperimentRequest, compete  # noqa: E402
from discovery.models import load_model  # noqa: E402

PAIRS = (("ioi", "induction"), ("successor", "induction"))


def forward_baseline(model, n_prompts: int, repeats: int = 20) -> float:
    """Seconds of one full patched forward pass over ``n_prompts`` IOI prompts (median)."""
    problem = build_problem(model, task_data("ioi", model, n_prompts, 0), metric="logit_diff",
                            ablation="corrupt")
    mask, times = problem.graph.valid(), []
    for _ in range(repeats):
        start = time.perf_counter()
        problem.run(mask)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--controls", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging

    logging.set_verbosity_error()
    model = load_model("multitask", device="cpu")
    base = forward_baseline(model, args.prompts)
    print(f"baseline: one full forward pass over {args.prompts} prompts = {base * 1e3:.1f} ms "
          f"({args.threads} thread(s))\n")
    print("| pair | circuits | stage | seconds | share | forward passes (run) | run / baseline |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for a, b in PAIRS:
        circuits = None
        for how in ("discovered", "given"):
            request = ExperimentRequest(model="multitask", tasks=(a, b), n_prompts=args.prompts,
                                        n_conflicts=args.prompts, n_controls=args.controls, device="cpu")
            start = time.perf_counter()
            result = compete(request, circuits=circuits, model=model, experiment_id=f"bench-{a}-{b}")
            total = time.perf_counter() - start
            exp = result.experiment
            circuits = circuits or {t: result.discovered[t] for t in (a, b)}
            timings = dict(exp.provenance.timings)
            for stage, seconds in timings.items():
                print(f"| {a} x {b} | {how} | {stage.removesuffix('_s')} | {seconds:.2f} | {seconds / total:.0%} | | |")
            print(f"| {a} x {b} | {how} | **total** | {total:.2f} | 100% | "
                  f"{exp.provenance.forward_passes} | {total / base:.0f}x |")


if __name__ == "__main__":
    main()
