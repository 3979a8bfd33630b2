"""``bench/discovery.py --sweep``: a threshold sweep in one search against one threshold and
against a separate run per threshold, on the same problem in the same process (so the ratios
compare like with like). Every sweep circuit is checked against its separate run.

Grids: ``wide`` is the ACDC paper's range (20 thresholds log-spaced 1e-4 .. 1), ``narrow`` 20
log-spaced around the default (0.005 .. 0.02)."""

from __future__ import annotations

import time

import numpy as np
import torch

from discovery.algorithms import ALGORITHMS, AlgorithmConfig
from discovery.algorithms.acdc_sweep import sweep
from discovery.algorithms.attribution import select
from discovery.discover import build_problem, task_data
from discovery.models import load_model

GRIDS = {"wide": (1e-4, 1.0), "narrow": (0.005, 0.02)}


def grid(name: str, n: int = 20) -> list[float]:
    low, high = GRIDS[name]
    return [float(t) for t in np.logspace(np.log10(low), np.log10(high), n)]


def _seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def sweep_row(model, task: str, method: str, thresholds: list[float], args) -> dict:
    """Seconds of one threshold (``args.threshold``), of a run per threshold and of the sweep;
    whether every sweep circuit equals its run; the sweep's branches."""
    data = task_data(task, model, args.prompts, 0)
    metric = "kl" if method == "acdc" else data.metric
    problem = build_problem(model, data, metric=metric, ablation="corrupt", dtype=args.dtype)
    run = ALGORITHMS[method]
    run(problem, AlgorithmConfig(threshold=args.threshold))  # warm-up: first-call costs out of the timings
    one, _ = _seconds(lambda: run(problem, AlgorithmConfig(threshold=args.threshold)))
    separate, alone = _seconds(lambda: [run(problem, AlgorithmConfig(threshold=t)) for t in thresholds])
    if method == "acdc":
        swept_s, swept = _seconds(lambda: sweep(problem, thresholds))
        branches = int(swept[0].stats["branches"])
    else:  # attribution: one scoring, cut at every threshold
        def cut():
            scored = run(problem, AlgorithmConfig(threshold=thresholds[0]))
            return [select(scored.scores, AlgorithmConfig(threshold=t), problem.graph) for t in thresholds]
        swept_s, masks = _seconds(cut)
        swept, branches = [type("R", (), {"mask": m}) for m in masks], 1
    equal = all(torch.equal(s.mask, a.mask) for s, a in zip(swept, alone, strict=True))
    return {"edges": problem.graph.n_edges, "one": one, "separate": separate, "sweep": swept_s,
            "branches": branches, "equal": equal}


def main(args) -> None:
    methods = args.sweep_methods.split(",")
    print(f"# threshold sweep bench, {args.prompts} prompts, one threshold = {args.threshold}, "
          f"CPU x{torch.get_num_threads()} threads, seconds of one run each (after a warm-up)\n")
    print("| model | task | method | grid | thresholds | one threshold s | separate runs s | sweep s | "
          "sweep / one | separate / sweep | branches | circuits equal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for pair in args.pairs.split(","):
        model_name, task = pair.split(":")
        model = load_model(model_name, device=args.device)
        for method in methods:
            for name in args.sweep_grids.split(","):
                thresholds = grid(name)
                r = sweep_row(model, task, method, thresholds, args)
                print(f"| {model_name} | {task} | {method} | {name} {thresholds[0]:g}..{thresholds[-1]:g} | "
                      f"{len(thresholds)} | {r['one']:.2f} | {r['separate']:.2f} | {r['sweep']:.2f} | "
                      f"{r['sweep'] / r['one']:.1f}x | {r['separate'] / r['sweep']:.1f}x | {r['branches']} | "
                      f"{'yes' if r['equal'] else 'NO'} |", flush=True)
