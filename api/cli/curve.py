"""``circuits curve``: a method's faithfulness curve on a task (MIB's CPR and CMD), printed as a
table and, with ``--png``, drawn. torch loads inside the handler."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("curve", help="faithfulness at a ladder of circuit sizes, with MIB's CPR and CMD")
    c.add_argument("--model", required=True, help="shipped name or local directory")
    c.add_argument("--task", required=True, help="built-in task name")
    c.add_argument("--method", default="eap-ig", help="acdc, acdc-reference, eap, eap-ig, eap-ig+acdc")
    c.add_argument("--threshold", type=float, default=0.01)
    c.add_argument("--n-prompts", type=int, default=50, help="prompt pairs for the search and for the curve")
    c.add_argument("--seed", type=int, default=0, help="the search's prompts; the curve's are drawn with seed + 1")
    c.add_argument("--fractions", help="comma-separated shares of the edges (default MIB's 0.001 ... 1)")
    c.add_argument("--ablation", default="corrupt", choices=["corrupt", "mean", "zero"])
    c.add_argument("--png", type=Path, help="draw the curve here")
    c.add_argument("--json", type=Path, help="write the points, CPR and CMD here")
    c.set_defaults(handler=run_curve)


def parse_fractions(text: str | None) -> tuple[float, ...]:
    from discovery.curves import MIB_FRACTIONS, check_fractions

    if text is None:
        return MIB_FRACTIONS
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--fractions {text!r}: give numbers, e.g. 0.01,0.1,1") from None
    try:
        return check_fractions(values)
    except ValueError as exc:
        raise ValueError(f"--{exc}") from None


def run_curve(args: argparse.Namespace) -> int:
    fractions = parse_fractions(args.fractions)
    from discovery.tasks import get_task

    get_task(args.task)  # an unknown task fails here, before torch and the model load
    import torch

    from discovery.curves import held_out_curve
    from discovery.discover import DiscoveryRequest, discover
    from discovery.models import load_model

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model = load_model(args.model)
    request = DiscoveryRequest(model=args.model, task=args.task, method=args.method, threshold=args.threshold,
                               n_prompts=args.n_prompts, seed=args.seed, ablation=args.ablation)
    circuit = discover(request, model=model)
    curve = held_out_curve(model, request, circuit.edge_scores, fractions)  # prompts drawn with seed + 1
    print(f"{args.method} on {args.model}/{args.task}: edges ranked by |score| ({len(circuit.edge_scores)} "
          f"scored), {args.ablation} ablation, {curve.metric} on {args.n_prompts} held-out prompt pairs")
    print(f"{'share':>7}  {'edges':>6}  {'metric':>8}  faithfulness")
    for p in curve.points:
        f = "undefined" if p.faithfulness is None else f"{p.faithfulness:.3f}"
        print(f"{p.fraction:>7.3f}  {p.n_edges:>6}  {p.metric:>8.3f}  {f}")
    print(f"CPR {curve.cpr:.3f} (area under the curve, higher is better); "
          f"CMD {curve.cmd:.3f} (area under |1 - f|, lower is better)")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "task": args.task, "method": args.method,
                                         "metric": curve.metric, "full": curve.full, "empty": curve.empty,
                                         "cpr": curve.cpr, "cmd": curve.cmd,
                                         "points": [vars(p) for p in curve.points]}, indent=2))
    if args.png:
        _draw(curve, args, args.png)
        print(f"wrote {args.png}")
    return 0


def _draw(curve, args: argparse.Namespace, path: Path) -> None:  # noqa: ANN001 - discovery.curves.Curve
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(curve.fractions, [p.faithfulness for p in curve.points], "o-", color="#1b9e77")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("share of the graph's edges kept (log scale)")
    ax.set_ylabel(f"faithfulness ({curve.metric})")
    ax.set_title(f"{args.method} on {args.model}/{args.task}: CPR {curve.cpr:.3f}, CMD {curve.cmd:.3f}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
