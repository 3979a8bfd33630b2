"""``circuits services up|down|status``: the local Redis and Neo4j, without Docker, and the
supervisor that restarts them when they die (``supervise`` runs it in the foreground; ``up``
starts it in the background)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from api.ops.process import ServiceError

if TYPE_CHECKING:  # loaded in the handlers: `circuits --help` need not import Neo4j and Redis
    from workers.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("services", help="start, stop or inspect the local Redis and Neo4j")
    parser.add_argument("action", choices=["up", "down", "status", "supervise"],
                        help="supervise: run the supervisor in the foreground (what `up` starts)")
    parser.add_argument("--only", choices=["redis", "neo4j", "supervisor"], help="act on one of them")
    parser.add_argument("--purge", action="store_true", help="with down: delete the services' data")
    parser.add_argument("--json", action="store_true", help="with status: print JSON")
    parser.add_argument("--local-dir", type=Path, help="instead of ATLAS_LOCAL_DIR")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from api.ops.services import supervisor
    from api.ops.supervisor import run_forever
    from workers.settings import get_settings

    settings = get_settings()
    if args.local_dir:
        settings = settings.model_copy(update={"local_dir": args.local_dir})
    if args.purge and args.action != "down":
        raise ServiceError("--purge goes with `down` only")
    if args.action == "supervise":
        run_forever(supervisor(settings))
        return 0
    return {"status": _status, "up": _up, "down": _down}[args.action](args, settings)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from api.ops.services import local_services, remote_services, supervisor_process

    services = local_services(settings)
    remote = set(remote_services(settings))
    names = [args.only] if args.only in services else [] if args.only else list(services)
    rows = [services[n].status() | {"managed": n not in remote} for n in names]
    watcher = [supervisor_process(settings).status()] if args.only in (None, "supervisor") else []
    if args.json:
        print(json.dumps(rows + watcher, indent=2))
    for row in rows if not args.json else []:
        state = f"running, pid {row['pid']}" if row["pid"] else "not started by circuits"
        print(f"{row['service']:6} {row['address']:22} reachable={row['reachable']!s:5} ({state})")
    for row in watcher if not args.json else []:
        state = f"running, pid {row['pid']}" if row["pid"] else "not running"
        counts = ", ".join(f"{n} {c}" for n, c in row["restarts"].items()) or "none yet"
        print(f"supervisor ({state}); restarts: {counts}; log {row['log']}")
    # The services decide the exit status (CI asks it whether they are up); the supervisor does
    # only when asked about alone.
    checked = rows or [{"reachable": row["pid"] is not None} for row in watcher]
    return 0 if all(r["reachable"] for r in checked) else 3


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from api.ops.services import local_services, remote_services, supervisor_process

    services = local_services(settings)
    remote = set(remote_services(settings))
    for name in [args.only] if args.only in services else [] if args.only else list(services):
        if name in remote:
            print(f"{name}: settings point at a remote host; not managed here")
            continue
        started = time.monotonic()
        print(f"{services[name].up()}  [{time.monotonic() - started:.1f}s]", flush=True)
    if set(services) - remote:  # started last, so it never races a service's first start
        print(supervisor_process(settings).up(), flush=True)
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    """Stop the supervisor first, so it cannot restart what is being stopped; when one service
    alone is stopped, start the supervisor again for the others."""
    from api.ops.services import local_services, purge, remote_services, supervisor_process

    services = local_services(settings)
    remote = set(remote_services(settings))
    watcher = supervisor_process(settings)
    was_supervising = watcher.process.pid() is not None
    print(watcher.down(), flush=True)
    if args.purge and args.only in (None, "supervisor"):
        print(purge(settings, "supervisor"))
    if args.only == "supervisor":
        return 0
    for name in [args.only] if args.only else reversed(list(services)):
        if name in remote:
            print(f"{name}: settings point at a remote host; not managed here")
            continue
        print(services[name].down(), flush=True)
        if args.purge:
            print(purge(settings, name))
    if args.only and was_supervising:
        print(watcher.up(), flush=True)
    return 0
