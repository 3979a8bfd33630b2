"""The ``circuits`` command line. Each subcommand lives in its own module and registers itself
here; errors the user can fix print one clear line and exit non-zero, never a traceback."""

from __future__ import annotations

import argparse
import sys

from api.cli import compete, demo, discover, jobs, serve, services, stored, zoo
from api.ops.process import ServiceError

_COMMANDS = (services, serve, demo, zoo, discover, stored, jobs, compete)


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
    from pydantic import ValidationError  # after parsing: `circuits --help` need not load it

    try:
        return int(args.handler(args) or 0)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "ATLAS_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        print(f"error: {field}: {first['msg']}", file=sys.stderr)
    except (ServiceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1
