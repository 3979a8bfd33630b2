"""The child process of :class:`graphstore.sandbox.CypherRunner`: user queries, one at a time.

Run as ``python -m graphstore.sandbox_child``. It reads JSON requests on stdin, one a line (where
to connect, the credentials, the query, its parameters and limits; credentials never appear in
the command line), caps its own address space at the first, runs each query through
:func:`graphstore.readonly.readonly_rows` (plan check, READ transaction, server-side timeout,
rollback) fetching a few rows at a time, and answers each with JSON lines on stdout:

- ``{"columns": [...]}`` once, then one JSON array per row;
- last, ``{"end": "done"}``, or ``{"end": "rows"}`` / ``{"end": "bytes"}`` when the row cap or the
  byte cap stopped it, or ``{"error": kind, "message": ...}``.

After the end line it waits for the next request; at end-of-file on stdin it exits.

Why a process: the parent can kill it at its deadline even when the server never stops the query
(an expression Neo4j does not interrupt), and a huge row costs this process's memory (capped here,
``MemoryError`` ends it as ``bytes``), never the API's.
"""

from __future__ import annotations

import sys

# The driver imports numpy, pandas and pyarrow when present, for result types we do not use:
# 0.5 s and 90 MB per query. Marked missing, the driver skips them.
for _optional in ("numpy", "pandas", "pyarrow"):
    sys.modules.setdefault(_optional, None)  # type: ignore[arg-type]

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
from typing import IO, Any  # noqa: E402

from neo4j import Driver, GraphDatabase  # noqa: E402

from graphstore.readonly import CypherError, readonly_rows  # noqa: E402

#: Largest request read from stdin: the API's body cap is far below this.
MAX_REQUEST_BYTES = 16 * 2**20


def _emit(out: IO[bytes], message: Any) -> None:
    out.write(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
    out.flush()


def _limit_memory(limit_bytes: int) -> None:
    """Cap this process's address space: past it, allocations raise ``MemoryError``."""
    if limit_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


class _Drivers:
    """One driver per (URI, user, password), kept between the queries of this child."""

    def __init__(self) -> None:
        self._drivers: dict[tuple[str, str, str], Driver] = {}

    def get(self, request: dict[str, Any]) -> Driver:
        key = (request["uri"], request["user"], request["password"])
        if key not in self._drivers:
            self._drivers[key] = GraphDatabase.driver(
                key[0], auth=key[1:], connection_timeout=float(request["connect_timeout_s"]),
                max_connection_pool_size=1, max_transaction_retry_time=0,
                liveness_check_timeout=0)  # the kept connection may be dead after a restart
        return self._drivers[key]


def stream(driver: Driver, request: dict[str, Any], out: IO[bytes]) -> str:
    """Run the request's query and write its columns and rows to ``out``; returns how it ended:
    ``done``, ``rows`` (row cap reached) or ``bytes`` (byte cap reached)."""
    row_cap, byte_cap = int(request["row_cap"]), int(request["byte_cap"])
    with readonly_rows(driver, request["query"], request["params"],
                       database=request["database"], timeout_s=float(request["timeout_s"]),
                       fetch_size=int(request["fetch_size"]),
                       metadata={"atlas_query": request["tag"]}) as (columns, rows):
        _emit(out, {"columns": list(columns)})
        sent = count = 0
        for row in rows:
            if count == row_cap:
                return "rows"
            line = json.dumps(row, ensure_ascii=False, allow_nan=False,
                              separators=(",", ":")).encode() + b"\n"
            if sent + len(line) > byte_cap:
                return "bytes"
            out.write(line)
            sent += len(line)
            count += 1
        return "done"


def answer(drivers: _Drivers, request: dict[str, Any], out: IO[bytes]) -> None:
    """One request: its rows, then its end line (or its error line)."""
    try:
        ended = stream(drivers.get(request), request, out)
    except CypherError as exc:
        _emit(out, {"error": exc.kind, "message": exc.message})
    except MemoryError:  # one row larger than this process may hold: the byte cap, in effect
        _emit(out, {"end": "bytes"})
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line, never a traceback
        _emit(out, {"error": "invalid", "message": f"the query failed: {type(exc).__name__}: {exc}"})
    else:
        _emit(out, {"end": ended})


def main() -> int:
    drivers, out, limited = _Drivers(), sys.stdout.buffer, False
    for line in iter(lambda: sys.stdin.buffer.readline(MAX_REQUEST_BYTES), b""):
        request = json.loads(line)
        if not limited:
            _limit_memory(int(request.get("memory_bytes", 0)))
            limited = True
        answer(drivers, request, out)
    return 0  # end of file: the parent is done with this child (or gone)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # everything is sent: skip the interpreter's teardown (~0.1 s)
