"""Circuit formation report for a checkpointed run (issue 14): computes the timeline with
``discovery.timeline.timeline`` and prints plain-text tables, so the science of a run can be
re-derived with one command.

    python scripts/formation_report.py RUN_DIR --tasks induction[,ioi,...] [--method acdc]
        [--threshold 0.01] [--top-n N] [--n-prompts 50] [--threads 1] [--json OUT.json]

Printed: per step the train loss, in-context loss, best previous-token head (layer 0), best
induction head (layers >= 1); per task n_edges / edge Jaccard to final / faithfulness and the
K-composition edges (an earlier layer's head into a later head's k input); stabilisation steps;
the in-context-loss change-point; the first step whose best induction score exceeds
``INDUCTION_LEVEL``; and per task pair the node overlap per step and the moved components.
``--json`` writes ``Timeline.to_dict()`` so figures can be drawn without recomputing."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

#: The best induction (prefix-matching) score that counts as "an induction head has formed": an
#: attention probability, so > 0.5 means the head puts most of its attention on the token after
#: the current token's earlier occurrence (chance on [BOS, R, R] with 8 words is ~1/9 at most).
INDUCTION_LEVEL = 0.5

_HEAD = re.compile(r"^a(\d+)\.h(\d+)$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a run directory with run.json (circuits train)")
    p.add_argument("--tasks", required=True, help="comma-separated task names, e.g. induction,ioi")
    p.add_argument("--method", default="acdc")
    p.add_argument("--threshold", type=float, default=0.01)
    p.add_argument("--top-n", type=int, default=None, help="edges to keep (attribution methods)")
    p.add_argument("--n-prompts", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", type=Path, default=None, help="write Timeline.to_dict() here")
    return p.parse_args(argv)


def layer_of(node: str) -> int | None:
    """The layer of an attention-head node name ``aL.hH``; None for anything else."""
    m = _HEAD.match(node)
    return int(m[1]) if m else None


def k_composition(edges: list[dict]) -> list[str]:
    """Names of K-composition edges among ``edges`` (each ``{"src", "dst", "input", "name"}``): a
    head's output into a head of a *later* layer's key input (Olsson et al.'s previous-token ->
    induction-head composition is the layer-0 -> layer-1 case)."""
    found = []
    for e in edges:
        src, dst = layer_of(e["src"]), layer_of(e["dst"])
        if e["input"] == "k" and src is not None and dst is not None and src < dst:
            found.append(e["name"])
    return found


def best_head(heads: dict[str, dict[str, float]], score: str, layers: range | None) -> tuple[str, float]:
    """``(head, score)`` maximising ``heads[h][score]`` over heads whose layer is in ``layers``
    (all heads when None); ``("-", nan)`` when none qualifies."""
    pool = [(h, s[score]) for h, s in heads.items()
            if layers is None or layer_of(h) in layers]
    return max(pool, key=lambda x: x[1]) if pool else ("-", float("nan"))


def first_above(series: list[tuple[int, float]], level: float) -> int | None:
    """The first step whose value exceeds ``level`` (None when none does)."""
    return next((s for s, v in series if v > level), None)


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A left-aligned plain-text table."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def induction_section(data: dict) -> list[str]:
    """Per step: train loss, in-context loss, best previous-token head of layer 0, best induction
    head of layers >= 1, and the derived steps (change-point, first induction score > level)."""
    if not data["induction"]:
        return ["(no induction diagnostics: 'induction' is not among the tasks)"]
    loss = {r["step"]: r["train_loss"] for r in data["rows"]}
    rows, best_ind = [], []
    for d in data["induction"]:
        n_layers = 1 + max(layer_of(h) or 0 for h in d["heads"])
        prev = best_head(d["heads"], "previous_token", range(0, 1))
        ind = best_head(d["heads"], "induction", range(1, n_layers))
        best_ind.append((d["step"], ind[1]))
        rows.append([str(d["step"]), fmt(loss.get(d["step"])), fmt(d["in_context_loss"]),
                     fmt(d["early_loss"]), fmt(d["late_loss"]), prev[0], fmt(prev[1]), ind[0], fmt(ind[1])])
    header = ["step", "train_loss", "in_ctx_loss", "early", "late", "prev_head", "prev_score",
              "ind_head", "ind_score"]
    return ["== Induction diagnostics per step (attention patterns; in-context loss = late - early) ==",
            table(header, rows), "",
            f"in-context change-point (step ending the largest drop): {data['in_context_change_point']}",
            f"first step with best induction score (layers >= 1) > {INDUCTION_LEVEL}: "
            f"{first_above(best_ind, INDUCTION_LEVEL)}",
            f"  (definition: max over heads aL.hH, L >= 1, of the mean attention from a repeat position "
            f"to the token after its earlier occurrence; > {INDUCTION_LEVEL} = most of the attention)"]


def circuit_edges(data: dict) -> dict[tuple[int, str], list[dict]]:
    """``{(step, task): [edge dicts with a "name"]}`` from the JSON circuits."""
    out = {}
    for c in data["circuits"]:
        edges = c["circuit"]["edges"]
        out[c["step"], c["task"]] = [{**e, "name": edge_name(e)} for e in edges]
    return out


def edge_name(e: dict) -> str:
    """As discovery.circuit.Edge.name: ``src->dst<k>`` for head inputs, ``src->dst`` otherwise."""
    suffix = f"<{e['input']}>" if e["input"] in ("q", "k", "v") else ""
    return f"{e['src']}->{e['dst']}{suffix}"


def task_section(data: dict, task: str) -> list[str]:
    """Per step of one task: accuracy, circuit size, Jaccard to final, faithfulness, K-composition."""
    edges = circuit_edges(data)
    rows, first_k = [], None
    for r in (r for r in data["rows"] if r["task"] == task):
        kc = k_composition(edges[r["step"], task])
        first_k = first_k if first_k is not None or not kc else r["step"]
        rows.append([str(r["step"]), fmt(r["accuracy"]), str(r["n_edges"]), str(r["n_nodes"]),
                     fmt(r["jaccard_edges"]), fmt(r["jaccard_nodes"]), fmt(r["faithfulness_task"]),
                     ", ".join(kc) or "-"])
    header = ["step", "acc", "n_edges", "n_nodes", "jacc_edges", "jacc_nodes", "faith_task", "K-composition"]
    empty = all(r["n_edges"] == 0 for r in data["rows"] if r["task"] == task)
    return [f"== Task {task} ==", table(header, rows),
            f"stabilisation step (edge Jaccard to final >= {data['level']} from then on): "
            f"{data['stabilisation'].get(task)}",
            f"stabilisation step on the node Jaccard (same rule): "
            f"{data.get('stabilisation_nodes', {}).get(task, 'n/a (older library)')}",
            f"first step with a K-composition edge: {first_k}",
            *(["WARNING: the circuit is empty at every step"] if empty else []), ""]


def pairs_section(data: dict) -> list[str]:
    """Per task pair: node Jaccard per step and the components that moved between them."""
    out = []
    for p in data["pairs"]:
        # None: both circuits empty at that step (no overlap to speak of)
        overlap = "  ".join(f"{s}:{fmt(j, 2)}" for s, j in p["overlap"])
        out += [f"== Pair {p['first']} x {p['second']} ==", f"node overlap per step: {overlap}"]
        for key in ("first_to_second", "second_to_first"):
            moved = p[key]
            desc = ", ".join(f"{c} (in first at {m['first_at']}, moved at {m['moved_at']})"
                             for c, m in sorted(moved.items())) or "none"
            out.append(f"moved {key.replace('_', ' ')}: {desc}")
        out.append("")
    return out


def report(data: dict) -> str:
    """The whole plain-text report of a ``Timeline.to_dict()``."""
    head = [f"run: {data['run_dir']}  tasks: {','.join(data['tasks'])}  method: {data['method']}  "
            f"threshold: {data['threshold']}  top_n: {data['top_n']}  n_prompts: {data['n_prompts']}  "
            f"seed: {data['seed']}", ""]
    body = [line for t in data["tasks"] for line in task_section(data, t)]
    return "\n".join(head + induction_section(data) + [""] + body + pairs_section(data))


def compute(args: argparse.Namespace) -> dict:
    """Run the timeline (torch, ``args.threads`` threads) and return its ``to_dict()``."""
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from discovery.timeline import timeline

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    start = time.time()
    progress = lambda done, total, msg: print(  # noqa: E731
        f"[{time.time() - start:7.1f}s] {done}/{total} {msg}", file=sys.stderr, flush=True)
    result = timeline(args.run_dir, tasks, method=args.method, threshold=args.threshold,
                      top_n=args.top_n, n_prompts=args.n_prompts, seed=args.seed, progress=progress)
    return result.to_dict()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = compute(args)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    print(report(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
