"""``circuits services up|down|status``: the local Redis and Neo4j, without Docker."""

from __future__ import annotations

import argparse
import json
import time

from api.ops.process import ServiceError
from api.ops.services import local_services, purge, remote_services
from workers.settings import get_settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("services", help="start, stop or inspect the local Redis and Neo4j")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--only", choices=["redis", "neo4j"], help="act on one service")
    parser.add_argument("--purge", action="store_true", help="with down: delete the services' data")
    parser.add_argument("--json", action="store_true", help="with status: print JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    services = local_services(settings)
    names = [args.only] if args.only else list(services)
    remote = set(remote_services(settings))
    if args.action == "status":
        rows = [services[n].status() | {"managed": n not in remote} for n in names]
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in rows if not args.json else []:
            state = f"running, pid {row['pid']}" if row["pid"] else "not started by circuits"
            print(f"{row['service']:6} {row['address']:22} reachable={row['reachable']!s:5} ({state})")
        return 0 if all(r["reachable"] for r in rows) else 3
    for name in names if args.action == "up" else reversed(names):
        if name in remote:
            print(f"{name}: settings point at a remote host; not managed here")
            continue
        started = time.monotonic()
        if args.action == "up":
            print(f"{services[name].up()}  [{time.monotonic() - started:.1f}s]", flush=True)
        else:
            print(services[name].down(), flush=True)
            if args.purge:
                print(purge(settings, name))
    if args.purge and args.action != "down":
        raise ServiceError("--purge goes with `down` only")
    return 0
