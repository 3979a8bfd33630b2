"""``circuits timeline`` (submit a formation timeline of a checkpointed run and follow it) and
``circuits timelines list|show|delete``: the ``/v1/timelines`` API from the shell. ``--png`` draws
the timeline (:mod:`api.cli.timeline_figure`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from api.cli.compete import Rest, _rest_args, follow
from api.cli.tables import table


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("timeline", help="discover task circuits at every checkpoint of a run (REST)")
    t.add_argument("--run", required=True, help="a run directory (circuits train --checkpoints N) or a "
                                                "shipped run's name (circuits timelines runs)")
    t.add_argument("--tasks", required=True, help="comma-separated built-in tasks, e.g. induction,ioi")
    t.add_argument("--method", default="acdc")
    t.add_argument("--threshold", type=float, default=0.01)
    t.add_argument("--top-n", type=int, help="keep the n best edges (EAP methods)")
    t.add_argument("--n-prompts", type=int, default=50)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--level", type=float, default=0.8, help="edge Jaccard to the final circuit counted as stable")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--wait", action="store_true", help="follow the job to its end with a progress bar")
    t.add_argument("--png", type=Path, help="with --wait: also draw the timeline into this PNG")
    _rest_args(t)
    t.set_defaults(handler=run_timeline)
    s = sub.add_parser("timelines", help="stored formation timelines (REST)")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="list stored timelines")
    ls.add_argument("--run", help="only those of this run directory")
    ls.add_argument("--json", action="store_true", help="print JSON")
    _rest_args(ls)
    ls.set_defaults(handler=run_list)
    sh = actions.add_parser("show", help="print one timeline's tables (and draw it)")
    sh.add_argument("id")
    sh.add_argument("--png", type=Path, help="draw the timeline into this PNG")
    sh.add_argument("--task", help="the task whose membership band the picture shows")
    sh.add_argument("--json", action="store_true", help="print the stored JSON")
    _rest_args(sh)
    sh.set_defaults(handler=run_show)
    rm = actions.add_parser("delete", help="delete a timeline and its circuits")
    rm.add_argument("id")
    _rest_args(rm)
    rm.set_defaults(handler=run_delete)
    runs = actions.add_parser("runs", help="the shipped checkpointed runs")
    _rest_args(runs)
    runs.set_defaults(handler=run_runs)


def parse_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise ValueError("--tasks: name at least one task, e.g. --tasks induction,ioi")
    return tasks


def run_arg(text: str) -> str:
    """A local directory is sent as an absolute path (the API and workers do not share our working
    directory); anything else as given (a shipped run's name, or a path only the server has)."""
    try:
        path = Path(text).expanduser()
        return str(path.resolve()) if path.is_dir() else text
    except (OSError, ValueError, RuntimeError):  # not a path here: the API says what is wrong
        return text


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    return {"run": run_arg(args.run), "tasks": parse_tasks(args.tasks), "method": args.method,
            "threshold": args.threshold, "top_n": args.top_n, "n_prompts": args.n_prompts,
            "seed": args.seed, "level": args.level, "device": args.device}


def run_timeline(args: argparse.Namespace) -> int:
    if args.png is not None and not args.wait:
        raise ValueError("--png needs --wait (or draw it later: circuits timelines show ID --png F)")
    rest = Rest.from_args(args)
    spec = build_spec(args)
    job = rest.call("POST", "/v1/timelines", json=spec)
    print(f"submitted timeline job {job['id']} ({', '.join(spec['tasks'])} over the checkpoints of "
          f"{Path(spec['run']).name})", flush=True)
    if not args.wait:
        print(f"follow it with `circuits jobs {job['id']}`; then `circuits timelines show {job['id']}`")
        return 0
    job = follow(rest, job["id"], unit="circuits")
    if job["state"] != "succeeded":
        print(f"error: timeline job {job['id']} {job['state']}: {job.get('error') or 'no error given'}",
              file=sys.stderr)
        return 1
    _show(rest.call("GET", f"/v1/timelines/{job.get('result_id') or job['id']}"), args.png, None)
    return 0


def summary(data: dict) -> str:
    """The timeline as text: per task the circuit size and Jaccard to the final circuit per step,
    stabilisation steps, the in-context change-point and pair overlaps."""
    lines = [f"timeline {data.get('id', '')} of {data['run_dir']} ({data['method']}, tasks "
             f"{', '.join(data['tasks'])})"]
    by_step = {s: d for d in data.get("induction", []) for s in [d["step"]]}
    rows = [[r["step"], r["task"], _num(r["train_loss"]), _num(r["accuracy"]), r["n_edges"],
             _num(r["jaccard_edges"]), _num(by_step.get(r["step"], {}).get("in_context_loss"))]
            for r in sorted(data["rows"], key=lambda r: (r["task"], r["step"]))]
    lines.append(table(["step", "task", "train loss", "accuracy", "edges", "jaccard to final",
                        "in-context loss"], rows))
    for task in data["tasks"]:
        joined = _joined(data["rows"], task)
        if joined:
            lines.append(f"{task}: components joined at " + ", ".join(f"{c} {s}" for c, s in joined))
    nodes = data.get("stabilisation_nodes", {})
    for task, step in data["stabilisation"].items():
        lines.append(f"{task}: " + _stable(step, "edge", data["level"]) + "; "
                     + _stable(nodes.get(task), "node", data["level"]))
    if data.get("in_context_change_point") is not None:
        lines.append(f"in-context loss: largest drop by step {data['in_context_change_point']}")
    for pair in data.get("pairs", []):
        overlap = ", ".join(f"{s}: {'-' if j is None else f'{j:.2f}'}" for s, j in pair["overlap"])
        lines.append(f"{pair['first']} x {pair['second']} node overlap (-: both circuits empty): {overlap}")
        for way, (a, b) in (("first_to_second", (pair["first"], pair["second"])),
                            ("second_to_first", (pair["second"], pair["first"]))):
            for comp, at in sorted(pair[way].items()):
                lines.append(f"  {comp}: in {a} from step {at['first_at']}, moved to {b} by step {at['moved_at']}")
    return "\n".join(lines)


def _stable(step: int | None, what: str, level: float) -> str:
    if step is not None:
        return f"{what}s stable from step {step} ({what} Jaccard to the final circuit >= {level} from then on)"
    return (f"{what}s not stable within the run ({what} Jaccard to the final circuit < {level} at a later "
            "checkpoint, or the final circuit is empty)")


def _joined(rows: list[dict], task: str) -> list[tuple[str, int]]:
    """``[(component, first step in the task's circuit)]`` by step (embed and logits left out)."""
    first: dict[str, int] = {}
    for row in sorted((r for r in rows if r["task"] == task), key=lambda r: r["step"]):
        for node in row["nodes"]:
            first.setdefault(node, row["step"])
    return sorted(((c, s) for c, s in first.items() if c not in ("embed", "logits")), key=lambda x: (x[1], x[0]))


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _show(data: dict, png: Path | None, task: str | None) -> None:
    print(summary(data))
    if png is not None:
        from api.cli.timeline_figure import render_timeline

        print(f"\nwrote {render_timeline(data, png, task=task)}")


def run_show(args: argparse.Namespace) -> int:
    data = Rest.from_args(args).call("GET", f"/v1/timelines/{args.id}")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    _show(data, args.png, args.task)
    return 0


def run_list(args: argparse.Namespace) -> int:
    params = {"run": run_arg(args.run)} if args.run else {}
    page = Rest.from_args(args).call("GET", "/v1/timelines", params=params)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    rows = [[t["id"], Path(t["run"]).name, ",".join(t["tasks"]), len(t["steps"]), t.get("method") or ""]
            for t in page["timelines"]]
    print(table(["id", "run", "tasks", "checkpoints", "method"], rows))
    print(f"({len(rows)} of {page['total']} timelines)")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    Rest.from_args(args).call("DELETE", f"/v1/timelines/{args.id}")
    print(f"deleted timeline {args.id} and its circuits")
    return 0


def run_runs(args: argparse.Namespace) -> int:
    runs = Rest.from_args(args).call("GET", "/v1/timelines/runs")
    print(table(["name", "recipe", "arch", "steps", "checkpoints"],
                [[r["name"], r["recipe"], r["arch"], r["steps"], len(r["checkpoints"])] for r in runs]))
    return 0
