"""``circuits study`` (submit a study: methods x tasks of one model, and follow it) and ``circuits
studies list|show|delete``: the ``/v1/studies`` API from the shell. The summary table is
:func:`discovery.study.render_summary`'s (torch-free)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from api.cli.compete import Rest, _rest_args
from api.cli.tables import table

TERMINAL = ("succeeded", "failed", "cancelled")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("study", help="compare methods on tasks of one model: CPR, CMD, size, faithfulness (REST)")
    s.add_argument("--model", required=True, help="a shipped model's name")
    s.add_argument("--tasks", default="all", help='comma-separated built-in tasks, or "all" (the model\'s)')
    s.add_argument("--methods", required=True, help="comma-separated methods, e.g. acdc,eap,eap-ig")
    s.add_argument("--threshold", default="0.01",
                   help="the chosen point: one threshold, or per method, e.g. acdc=0.02,eap=0.01")
    s.add_argument("--thresholds", help="comma-separated extra grid: each point's circuit is stored too")
    s.add_argument("--fractions", help="comma-separated curve ladder (default MIB's 0.001 ... 1)")
    s.add_argument("--n-prompts", type=int, default=50)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--ablation", default="corrupt", choices=["corrupt", "mean", "zero"])
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--edge-order", default="ours", help="ACDC's edge order: ours, auto-circuit, random:SEED")
    s.add_argument("--stability", type=int, default=0,
                   help="also score each chosen circuit: N re-runs under random edge orders, N on other prompts")
    s.add_argument("--wait", action="store_true", help="follow the study with a progress bar, then print it")
    _rest_args(s)
    s.set_defaults(handler=run_study)
    st = sub.add_parser("studies", help="stored studies (REST)")
    actions = st.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="list stored studies")
    ls.add_argument("--model", help="only those of this model")
    ls.add_argument("--json", action="store_true", help="print JSON")
    _rest_args(ls)
    ls.set_defaults(handler=run_list)
    sh = actions.add_parser("show", help="a study's progress, or its summary table once stored")
    sh.add_argument("id")
    sh.add_argument("--json", action="store_true", help="print the JSON")
    _rest_args(sh)
    sh.set_defaults(handler=run_show)
    rm = actions.add_parser("delete", help="cancel a running study, or delete a stored one and its circuits")
    rm.add_argument("id")
    _rest_args(rm)
    rm.set_defaults(handler=run_delete)


def _names(text: str, flag: str, example: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"{flag}: name at least one, e.g. {flag} {example}")
    return names


def _numbers(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give comma-separated numbers, e.g. {flag} 0.001,0.01,0.1") from None


def parse_threshold(text: str) -> float | dict[str, float]:
    """``0.01`` or ``acdc=0.02,eap=0.01`` (methods left out use 0.01)."""
    if "=" not in text:
        return _numbers(text, "--threshold")[0] if text.strip() else 0.01
    out = {}
    for item in (i for i in text.split(",") if i.strip()):
        method, _, value = item.partition("=")
        try:
            out[method.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--threshold {item!r}: give METHOD=NUMBER, e.g. acdc=0.02") from None
    return out


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    tasks = "all" if args.tasks.strip() == "all" else _names(args.tasks, "--tasks", "ioi,induction")
    spec = {"model": args.model, "tasks": tasks, "methods": _names(args.methods, "--methods", "acdc,eap"),
            "threshold": parse_threshold(args.threshold), "n_prompts": args.n_prompts, "seed": args.seed,
            "ablation": args.ablation, "device": args.device, "edge_order": args.edge_order,
            "stability": args.stability}
    if args.thresholds:
        spec["thresholds"] = _numbers(args.thresholds, "--thresholds")
    if args.fractions:
        spec["fractions"] = _numbers(args.fractions, "--fractions")
    return spec


def follow(rest: Rest, study_id: str, poll_s: float = 0.5) -> dict:
    """Poll the study to its end with a bar: pieces done of all, the running ones, the ETA."""
    from tqdm import tqdm

    with tqdm(total=100, unit="%", file=sys.stderr, bar_format="{desc} {bar} {n:.0f}% {postfix}") as bar:
        while True:
            study = rest.call("GET", f"/v1/studies/{study_id}")
            pieces = study.get("pieces") or []
            done = sum(p["state"] == "succeeded" for p in pieces)
            running = [f"{p['task']} x {p['method']}" for p in pieces if p["state"] == "running"]
            p = study.get("progress") or {}
            stage = p.get("stage") or ""
            after = "" if stage.startswith("discovering") or done < len(pieces) else f" ({stage})"
            bar.set_description_str(f"{study['state']}: {done}/{len(pieces)} pieces{after}")
            eta = p.get("eta_s")
            notes = (["running " + ", ".join(running[:3])] if running else []) + \
                ([f"ETA {eta:.0f}s"] if eta is not None and study["state"] == "running" else [])
            bar.set_postfix_str("; ".join(notes))
            bar.n = 100 if study["state"] == "succeeded" else (p.get("percent") or 0)
            bar.refresh()
            if study["state"] in TERMINAL:
                return study
            time.sleep(poll_s)


def run_study(args: argparse.Namespace) -> int:
    rest = Rest.from_args(args)
    spec = build_spec(args)
    job = rest.call("POST", "/v1/studies", json=spec)
    tasks = job["spec"]["tasks"]
    print(f"submitted study {job['id']} ({len(spec['methods'])} methods x {len(tasks)} tasks of "
          f"{spec['model']})", flush=True)
    if not args.wait:
        print(f"follow it with `circuits studies show {job['id']}`")
        return 0
    study = follow(rest, job["id"])
    if study["state"] != "succeeded":
        print(f"error: study {job['id']} {study['state']}: {study.get('error') or 'no error given'}",
              file=sys.stderr)
        return 1
    _print(study)
    return 0


def _print(study: dict) -> None:
    from discovery.study import render_summary

    if study.get("summary") is None:
        pieces = study.get("pieces") or []
        print(f"study {study['id']}: {study['state']} ({(study.get('progress') or {}).get('stage') or ''})")
        print(table(["piece", "state", "stage", "percent", "worker"],
                    [[f"{p['task']} x {p['method']}", p["state"], p["progress"].get("stage"),
                      p["progress"].get("percent"), p.get("worker")] for p in pieces]))
        return
    print(f"study {study['id']}")
    print(render_summary(study["summary"]))


def run_show(args: argparse.Namespace) -> int:
    study = Rest.from_args(args).call("GET", f"/v1/studies/{args.id}")
    if args.json:
        print(json.dumps(study, indent=2))
    else:
        _print(study)
    return 0


def run_list(args: argparse.Namespace) -> int:
    params = {"model": args.model} if args.model else {}
    page = Rest.from_args(args).call("GET", "/v1/studies", params=params)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    rows = [[s["id"], s["model"], ",".join(s["tasks"]), ",".join(s["methods"]), s["n_circuits"]]
            for s in page["studies"]]
    print(table(["id", "model", "tasks", "methods", "circuits"], rows))
    print(f"({len(rows)} of {page['total']} studies)")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    answer = Rest.from_args(args).call("DELETE", f"/v1/studies/{args.id}")
    if answer:  # 202: it was running
        print(f"cancelling study {args.id}: it stops within seconds and stores nothing")
    else:
        print(f"deleted study {args.id} and its circuits")
    return 0
