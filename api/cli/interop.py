"""``circuits import`` (store a circuit found by another tool: EAP-IG / MIB graph JSON, an
auto-circuit edge list, our JSON) and ``circuits export-mib`` (a study's circuits, or circuit
files, in MIB's submission layout). Both talk to the API (``/v1/circuits``, ``/v1/studies``); the
formats are :mod:`discovery.interop`'s (torch-free)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from api.cli.compete import Rest, _rest_args


def register(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("import", help="store a circuit found by another tool (EAP-IG/MIB JSON, auto-circuit, ours)")
    i.add_argument("file", type=Path, help="the tool's JSON file")
    i.add_argument("--format", choices=["ours", "eap-ig", "auto-circuit"], help="default: detected")
    i.add_argument("--model", help="the model it was found on (required unless our own JSON)")
    i.add_argument("--task", help="the task (required unless our own JSON)")
    i.add_argument("--method", help="the method that found it, e.g. eap-ig-inputs (required unless ours)")
    i.add_argument("--top-n", type=int, help="auto-circuit scores alone: keep the n edges of largest |score|")
    i.add_argument("--source", help="where the file came from (default: its path)")
    _rest_args(i)
    i.set_defaults(handler=run_import)
    e = sub.add_parser("export-mib", help="write circuits in MIB's submission layout <method>/<task>_<model>/")
    e.add_argument("--study", help="a stored study's id: its chosen circuit of every task x method")
    e.add_argument("--circuit", action="append", default=[], metavar="ID",
                   help="a stored circuit's id (repeatable)")
    e.add_argument("--out", type=Path, required=True, help="the submission folder to write")
    _rest_args(e)
    e.set_defaults(handler=run_export)


def run_import(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise ValueError(f"{args.file}: no such file")
    try:
        data = json.loads(args.file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{args.file} is not JSON ({exc})") from None
    body = {"circuit": data, "format": args.format, "model": args.model, "task": args.task,
            "method": args.method, "top_n": args.top_n, "source": args.source or args.file.name}
    made = Rest.from_args(args).call("POST", "/v1/circuits", json={k: v for k, v in body.items() if v is not None})
    print(f"imported {args.file} ({made['format']}) as circuit {made['id']}: {made['model']} / {made['task']} / "
          f"{made['method']}, {made['n_edges']} edges, {made['n_nodes']} nodes, {made['n_scored']} scored")
    print(f"compare it: circuits compare {made['id']} <other id>   (or GET /v1/compare?ids=...)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from discovery.circuit import Circuit
    from discovery.interop import export_mib

    if not args.study and not args.circuit:
        raise ValueError("give --study ID or at least one --circuit ID")
    rest = Rest.from_args(args)
    ids = list(args.circuit)
    if args.study:
        study = rest.call("GET", f"/v1/studies/{args.study}")
        if not study.get("circuits"):
            raise ValueError(f"study {args.study} has no stored circuits yet (state {study.get('state')}); "
                             "wait for it to finish")
        ids += [c["id"] for c in study["circuits"] if c.get("chosen", True)]
    circuits = [Circuit.from_dict(rest.call("GET", f"/v1/circuits/{cid}"))
                for cid in tqdm(ids, desc="reading circuits", unit="circuit", file=sys.stderr)]
    files = export_mib(circuits, args.out)
    for f in files:
        print(f)
    print(f"wrote {len(files)} importance files under {args.out} (MIB's layout: one folder per method, "
          "one <task>_<model> folder per circuit)")
    return 0
