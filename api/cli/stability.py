"""``circuits stability``: how stable a circuit is under other edge orders and prompt draws
(:mod:`discovery.stability`), as a table per task, with a progress bar. torch loads inside the
handler."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("stability", help="Jaccard of a circuit under shuffled edge orders and prompt resamples")
    s.add_argument("--model", required=True, help="shipped name or local directory")
    s.add_argument("--task", required=True, help="built-in task name(s), comma-separated, or 'all'")
    s.add_argument("--method", default="acdc", help="acdc, acdc-reference, eap, eap-ig, eap-ig+acdc")
    s.add_argument("--threshold", type=float, default=0.01)
    s.add_argument("--edge-order", default="ours", help="the circuit's own order: ours, auto-circuit, random:SEED")
    s.add_argument("--orders", type=int, default=10, help="re-runs under random edge orders (0..50)")
    s.add_argument("--resamples", type=int, default=10, help="re-runs on other prompt draws (0..50)")
    s.add_argument("--n-prompts", type=int, default=50)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", type=Path, help="write every task's score here")
    s.set_defaults(handler=run_stability, fast_exit=True)


def _tasks(text: str, model_name: str) -> list[str]:
    from discovery.tasks import TASKS, get_task

    if text == "all":
        from workers.studyspec import model_tasks

        found = model_tasks(model_name)
        if not found:
            raise ValueError(f"--task all: {model_name}'s card evaluates no built-in task; name them")
        return found
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"--task: give a task name, a comma-separated list or 'all' ({', '.join(TASKS)})")
    for name in names:
        get_task(name)  # an unknown task fails here, before torch and the model load
    return names


def run_stability(args: argparse.Namespace) -> int:
    from discovery.orders import check_order

    check_order(args.edge_order)
    for name in ("orders", "resamples"):
        if not 0 <= getattr(args, name) <= 50:
            raise ValueError(f"--{name} must be between 0 and 50 (got {getattr(args, name)}); 10 is usual")
    tasks = _tasks(args.task, args.model)
    import torch
    from tqdm import tqdm

    from discovery.discover import DiscoveryRequest
    from discovery.models import load_model
    from discovery.stability import stability_circuit

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model = load_model(args.model, device="cpu")
    scores = {}
    for task in tasks:
        request = DiscoveryRequest(model=args.model, task=task, method=args.method, threshold=args.threshold,
                                   n_prompts=args.n_prompts, seed=args.seed, device="cpu",
                                   edge_order=args.edge_order)
        with tqdm(desc=f"stability {task}", unit="run", file=sys.stderr) as bar:
            def progress(done: int, total: int, bar=bar) -> None:
                bar.total, bar.n = total, done
                bar.refresh()

            circuit = stability_circuit(request, orders=args.orders, resamples=args.resamples,
                                        model=model, progress=progress)
        scores[task] = circuit.stability
    print(table(scores, args))
    if args.json:
        args.json.write_text(json.dumps(scores, indent=2))
        print(f"wrote {args.json}")
    return 0


def _j(section: dict | None) -> str:
    if not section or section.get("jaccard_mean") is None:
        return "n/a"
    return f"{section['jaccard_mean']:.3f} ± {section['jaccard_std']:.3f} (min {section['jaccard_min']:.3f})"


def table(scores: dict[str, dict], args: argparse.Namespace) -> str:
    """One row per task: edges, Jaccard under orders and under prompts, core, auto-circuit's order."""
    head = (f"{args.method} on {args.model} (threshold {args.threshold}, order {args.edge_order}): "
            f"Jaccard of the circuit with {args.orders} re-runs under random edge orders and "
            f"{args.resamples} on other prompts")
    rows = [head, f"{'task':<14} {'edges':>5}  {'orders':<28} {'prompts':<28} {'core':<11} auto-circuit"]
    for task, s in scores.items():
        core = "n/a" if s["core"] is None else f"{len(s['core'])} ({s['core_share']:.0%})"
        cross = "n/a" if not s["auto_circuit"] else f"{s['auto_circuit']['jaccard']:.3f}"
        rows.append(f"{task:<14} {s['edges']:>5}  {_j(s['orders']):<28} {_j(s['prompts']):<28} {core:<11} {cross}")
    rows.append("core: the circuit's edges kept by every re-run; auto-circuit: Jaccard with the circuit "
                "found visiting edges in auto-circuit's order")
    return "\n".join(rows)
