"""The ``circuits`` command line. Each subcommand lives in its own module and registers itself
here; errors the user can fix print one clear line and exit non-zero, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys

from api.cli import (
    compete,
    curve,
    demo,
    discover,
    interop,
    jobs,
    serve,
    services,
    stability,
    stored,
    studies,
    timelines,
    zoo,
)
from api.ops.process import ServiceError

_COMMANDS = (services, serve, demo, zoo, discover, stored, jobs, compete, timelines, studies, curve, stability,
             interop)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuits", description="circuit-atlas: automated circuit discovery, stored in Neo4j."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc = _run(args)
    if argv is None and getattr(args, "fast_exit", False):
        _exit_now(rc)  # the process's own command line (not a caller's main([...])): skip teardown
    return rc


def _exit_now(rc: int) -> None:
    """End the process after running atexit handlers and flushing the standard streams, without
    the interpreter's teardown of every module: with torch loaded that teardown costs ~0.5 s of a
    ~3 s ``circuits discover`` (measured in bench/startup.py). Only for commands that opt in
    (``set_defaults(fast_exit=True)``) and have closed every file they wrote."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(rc)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.handler(args) or 0)
    except (ServiceError, ValueError) as exc:
        # A settings ValidationError (a ValueError) can only come from a handler that imported
        # pydantic; not importing it here spares `circuits discover` ~0.1 s.
        pydantic = sys.modules.get("pydantic")
        if pydantic is not None and isinstance(exc, pydantic.ValidationError):
            first = exc.errors()[0]
            field = "ATLAS_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
            print(f"error: {field}: {first['msg']}", file=sys.stderr)
        else:
            print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1
