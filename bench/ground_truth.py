"""How well each method recovers the hand-built model's true circuit (models/induction-gt).

For ACDC, a threshold sweep (tau on a log scale, 1e-4 .. 1, as in Conmy et al. 2023): each tau gives
a circuit, hence a (false positive rate, true positive rate) point; the ROC AUC is the area under
those points joined by straight lines, with (0, 0) and (1, 1) added. For attribution methods the
sweep is over |score| cut-offs, which is the same as the AUC of the scores. Printed per ablation.

The true edges are those the weights read (see discovery/zoo/ground_truth.py), which is what zero
ablation tests. Under corrupted or mean ablation the two edges that carry only position
(embed->a0.h0<q>, <k>) carry the same values as the clean run, so no ablation-based method can see
them, and those rows cannot reach an AUC of 1 whatever the method.

    python bench/ground_truth.py [--steps 5,20]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discovery.algorithms import ALGORITHMS, AlgorithmConfig  # noqa: E402
from discovery.discover import build_problem, task_data  # noqa: E402
from discovery.evaluate import edge_roc_auc  # noqa: E402
from discovery.models import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def roc_auc_of_points(points: list[tuple[float, float]]) -> float:
    pts = sorted(set(points) | {(0.0, 0.0), (1.0, 1.0)})
    xs, ys = zip(*pts, strict=True)
    return float(np.trapezoid(ys, xs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="5,20", help="EAP-IG step counts to try")
    parser.add_argument("--prompts", type=int, default=50)
    args = parser.parse_args()
    from transformers.utils import logging

    logging.set_verbosity_error()
    truth = set(json.loads((ROOT / "models/induction-gt/true_edges.json").read_text())["edges"])
    model = load_model("induction-gt", device="cpu")
    data = task_data("induction", model, args.prompts, 0)
    print("| ablation | method | ROC AUC | how |\n| --- | --- | --- | --- |")
    for ablation in ("corrupt", "mean", "zero"):
        points = []
        for tau in np.logspace(-4, 0, 13):
            problem = build_problem(model, data, metric="kl", ablation=ablation)
            result = ALGORITHMS["acdc"](problem, AlgorithmConfig(threshold=float(tau)))
            kept = {problem.graph.edge(u, k).name for u, k in result.mask.nonzero().tolist()}
            every = {problem.graph.edge(u, k).name for u, k in problem.graph.valid().nonzero().tolist()}
            tpr = len(kept & truth) / len(truth)
            fpr = len(kept - truth) / len(every - truth)
            points.append((fpr, tpr))
        print(f"| {ablation} | acdc | {roc_auc_of_points(points):.3f} | 13 thresholds 1e-4..1 |")
        for method, steps in [("eap", 1)] + [("eap-ig", int(s)) for s in args.steps.split(",")]:
            problem = build_problem(model, data, metric="logprob", ablation=ablation)
            result = ALGORITHMS[method](problem, AlgorithmConfig(ig_steps=steps))
            scores = {problem.graph.edge(u, k).name: float(result.scores[u, k])
                      for u, k in problem.graph.valid().nonzero().tolist()}
            label = method if method == "eap" else f"{method} ({steps} steps)"
            print(f"| {ablation} | {label} | {edge_roc_auc(scores, truth):.3f} | |score| cut-offs |")


if __name__ == "__main__":
    main()
