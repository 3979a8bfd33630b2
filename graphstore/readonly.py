"""Users' own Cypher, read-only: a READ transaction with a server-side timeout and a row cap.

Three guards, each enough to refuse a write on its own terms:

1. the session's access mode is READ, so the server refuses any write (``Statement.AccessMode``);
2. before running, the query is planned with ``EXPLAIN`` and refused unless the planner calls it a
   read (``query_type == "r"``), its plan has no operator that reaches beyond the graph (``LOAD
   CSV``, ``TERMINATE``/``SHOW TRANSACTIONS``, ``SHOW SETTINGS``, administration, any ``SHOW`` but
   indexes, constraints, procedures and functions), and every procedure it calls is on
   :data:`ALLOWED_PROCEDURES` (deny by default: ``db.stats.*`` shows other sessions' queries and
   their parameter values, ``dbms.*`` the server's configuration and connections);
3. the transaction is always rolled back, never committed.

Values travel only as parameters, checked first (:func:`check_params`): Bolt carries 64-bit
integers, so a larger one is refused naming the parameter instead of failing in the driver.
Every failure comes back as a :class:`CypherError` with a kind and a message a person can act on,
never as a driver traceback. This module runs in-process; :mod:`graphstore.sandbox` runs the same
code in a child process with a hard deadline and a byte cap, which is what the API uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from neo4j import READ_ACCESS, Driver, NotificationMinimumSeverity
from neo4j.exceptions import AuthError, DriverError, Neo4jError, ServiceUnavailable, SessionExpired
from neo4j.graph import Node, Path, Relationship

#: Plan operators refused even in a read: they read files or URLs, or see or stop other sessions.
DENIED_OPERATORS: frozenset[str] = frozenset({
    "LoadCSV", "TerminateTransactions", "ShowTransactions", "ShowSettings", "AdministrationCommand",
})
#: The ``SHOW`` commands allowed: they describe the schema and the callable code, nothing else.
ALLOWED_SHOW: frozenset[str] = frozenset({
    "ShowIndexes", "ShowConstraints", "ShowProcedures", "ShowFunctions",
})
#: Procedures a user's query may call; any other is refused (deny by default). All of them
#: describe the schema of the circuit graph.
ALLOWED_PROCEDURES: frozenset[str] = frozenset({
    "db.labels", "db.relationshipTypes", "db.propertyKeys",
    "db.schema.nodeTypeProperties", "db.schema.relTypeProperties", "db.schema.visualization",
})
#: Limits on parameters: Bolt's integers are 64-bit; deeper nesting or more names than these is
#: not a query of the circuit graph (and deep nesting would exhaust the driver's recursion).
INT64 = (-(2**63), 2**63 - 1)
MAX_PARAMS = 100
MAX_PARAM_DEPTH = 16
MAX_PARAM_NAME = 128

WRITE_REFUSED = ("the read-only Cypher path refuses writes (CREATE, MERGE, SET, DELETE, REMOVE, "
                 "write procedures); it runs reads only")
MEMORY_ADVICE = ("aggregate fewer rows (collect, ORDER BY, DISTINCT), build smaller lists, or add "
                 "a LIMIT")


class CypherError(ValueError):
    """A user's query that could not run. ``kind``: ``write`` (tried to change the store),
    ``refused`` (not a plain read), ``syntax``, ``parameter``, ``timeout``, ``memory`` (needed
    more memory than a query may use), ``invalid`` (any other mistake in the query or the
    request), ``busy`` (too many queries at once), ``unavailable`` (the server cannot be reached)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class CypherResult:
    """Columns and at most ``row_cap`` rows; ``truncated`` when the query had more."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    truncated: bool


def plain(value: Any) -> Any:
    """A result value as plain Python (JSON-ready): nodes, relationships and paths become dicts,
    temporal and spatial values their ISO text, NaN and infinities the strings ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"`` (strict JSON has no such numbers)."""
    if isinstance(value, Node):
        return {"labels": sorted(value.labels), "properties": plain(dict(value))}
    if isinstance(value, Relationship):
        return {"type": value.type, "properties": plain(dict(value))}
    if isinstance(value, Path):
        return {"nodes": [plain(n) for n in value.nodes],
                "relationships": [plain(r) for r in value.relationships]}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _plan_facts(plan: Mapping[str, Any] | None) -> tuple[set[str], set[str]]:
    """The operator names and the called procedures' names of ``plan`` and all its children."""
    if not plan:
        return set(), set()
    operator = str(plan.get("operatorType", "")).split("@")[0]
    operators, procedures = {operator}, set()
    if operator == "ProcedureCall":  # Details: "db.labels() :: (label :: STRING)"
        details = str(plan.get("args", {}).get("Details", ""))
        procedures.add(details.split("(")[0].strip().strip("`") or "<unnamed procedure>")
    for child in plan.get("children", ()):
        more_operators, more_procedures = _plan_facts(child)
        operators |= more_operators
        procedures |= more_procedures
    return operators, procedures


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else "no detail"


def as_cypher_error(exc: Neo4jError, timeout_s: float) -> CypherError:
    """The server's error ``exc`` as a :class:`CypherError` of the right kind."""
    code = exc.code or ""
    message = _first_line(exc.message)
    if code.endswith("Statement.AccessMode"):
        return CypherError("write", f"{WRITE_REFUSED} ({message})")
    if code.endswith("Statement.SyntaxError"):
        return CypherError("syntax", f"Cypher syntax error: {message}")
    if code.endswith("Statement.ParameterMissing"):
        return CypherError("parameter", f"{message}: give a value for every $parameter the query names")
    if "TransactionTimedOut" in code or code.endswith("Transaction.Terminated"):
        return timeout_error(timeout_s)
    if code.endswith("General.MemoryPoolOutOfMemoryError"):
        return CypherError("memory", f"the query needed more memory than one query may use and was "
                                     f"stopped ({message}); {MEMORY_ADVICE}")
    if code.endswith("General.OutOfMemoryError"):
        return CypherError("memory", "the query built values larger than the server's memory and "
                                     f"was stopped (the server is still up); {MEMORY_ADVICE}")
    return CypherError("invalid", f"{code.rsplit('.', 1)[-1] or 'error'}: {message}")


def timeout_error(timeout_s: float) -> CypherError:
    """The error of a query stopped at its timeout of ``timeout_s`` seconds."""
    return CypherError("timeout", f"the query ran past its {timeout_s:g}s timeout and was stopped; "
                                  "add a LIMIT or narrow the pattern")


def _check_plan(query_type: str | None, operators: set[str], procedures: set[str]) -> None:
    """Refuse what the planner says is not a plain read of the graph."""
    if query_type in ("w", "rw"):
        raise CypherError("write", WRITE_REFUSED)
    denied = sorted(op for op in operators if op in DENIED_OPERATORS
                    or (op.startswith(("Show", "Terminate")) and op not in ALLOWED_SHOW))
    if denied:
        raise CypherError("refused", f"only reads of the circuit graph run here; this query uses "
                                     f"{', '.join(denied)}")
    unlisted = sorted(procedures - ALLOWED_PROCEDURES)
    if unlisted:
        raise CypherError("refused", f"only reads of the circuit graph run here; the procedure "
                                     f"{', '.join(unlisted)} is not allowed (allowed: "
                                     f"{', '.join(sorted(ALLOWED_PROCEDURES))})")
    if query_type != "r":
        raise CypherError("refused", "only reads of the circuit graph run here; schema and "
                                     f"system commands are refused (query type {query_type!r})")


def _check_value(where: str, value: Any, depth: int) -> None:
    """Refuse a parameter value Bolt cannot carry, naming where in the parameter it sits."""
    if depth > MAX_PARAM_DEPTH:
        raise CypherError("parameter", f"parameter {where} is nested more than {MAX_PARAM_DEPTH} "
                                       "levels deep; send flatter values")
    if value is None or isinstance(value, bool | str | bytes):
        return
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise CypherError("parameter", f"parameter {where} = {value} is outside Cypher's "
                                           "64-bit integer range (-2^63 .. 2^63-1)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CypherError("parameter", f"parameter {where} is {value}; send a finite number")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(f"{where}[{i}]", item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CypherError("parameter", f"parameter {where} has a key {key!r} that is not "
                                               "text; map keys must be strings")
            _check_value(f"{where}.{key}", item, depth + 1)
    else:
        raise CypherError("invalid", f"the query could not be sent: parameter {where} is a "
                                     f"{type(value).__name__}, which Cypher cannot take")


def check_params(params: Mapping[str, Any]) -> None:
    """Refuse parameters Bolt cannot carry (integers beyond 64 bits, NaN, nesting deeper than
    :data:`MAX_PARAM_DEPTH`, more than :data:`MAX_PARAMS` names), naming the parameter."""
    if len(params) > MAX_PARAMS:
        raise CypherError("parameter", f"{len(params)} parameters given; at most {MAX_PARAMS}")
    for name, value in params.items():
        if not isinstance(name, str) or not name or len(name) > MAX_PARAM_NAME:
            raise CypherError("invalid", "parameter names must be non-empty strings of at most "
                                         f"{MAX_PARAM_NAME} characters")
        _check_value(f"${name}", value, 1)


def check_request(text: str, params: Mapping[str, Any], timeout_s: float, row_cap: int) -> None:
    """Refuse an empty query, bad parameters or nonsensical limits before anything is sent."""
    if not isinstance(text, str) or not text.strip():
        raise CypherError("invalid", "the query is empty; give a Cypher read such as "
                                     "'MATCH (c:Circuit) RETURN c.id LIMIT 5'")
    if not timeout_s > 0:
        raise CypherError("invalid", f"timeout must be > 0 seconds, got {timeout_s}")
    if row_cap < 1:
        raise CypherError("invalid", f"row cap must be >= 1, got {row_cap}")
    check_params(params)


#: The message of a query that found Neo4j down: plain words, no driver text.
UNREACHABLE = ("the circuit store (Neo4j) cannot be reached; try again later (is it running? "
               "GET /health, `circuits services status`)")


@contextmanager
def translated_errors(timeout_s: float) -> Iterator[None]:
    """Turn the driver's and the server's errors inside the block into :class:`CypherError`."""
    try:
        yield
    except AuthError as exc:  # before Neo4jError, of which it is one
        raise CypherError("unavailable", f"Neo4j refused the read-only query user ({exc.message}); "
                                         "check ATLAS_CYPHER_USER and ATLAS_CYPHER_PASSWORD") from None
    except Neo4jError as exc:
        raise as_cypher_error(exc, timeout_s) from None
    except (ServiceUnavailable, SessionExpired):
        raise CypherError("unavailable", UNREACHABLE) from None
    except (DriverError, TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, CypherError):
            raise
        raise CypherError("invalid", f"the query could not be sent: {exc}") from None


@contextmanager
def readonly_rows(driver: Driver, text: str, params: Mapping[str, Any] | None = None, *,
                  database: str, timeout_s: float = 10.0, fetch_size: int = 1000,
                  metadata: Mapping[str, Any] | None = None
                  ) -> Iterator[tuple[tuple[str, ...], Iterator[tuple[Any, ...]]]]:
    """The user's query, planned, checked and started read-only: yields its columns and an
    iterator of plain rows, fetched ``fetch_size`` at a time; rolls back on leaving the block.
    ``metadata`` tags the transaction (``SHOW TRANSACTIONS`` shows it), so it can be found and
    terminated from another connection. Raises :class:`CypherError`."""
    params = dict(params or {})
    check_request(text, params, timeout_s, 1)
    with translated_errors(timeout_s):
        with driver.session(database=database, default_access_mode=READ_ACCESS,
                            fetch_size=fetch_size,
                            notifications_min_severity=NotificationMinimumSeverity.OFF) as session:
            tx = session.begin_transaction(timeout=timeout_s, metadata=dict(metadata or {}))
            try:
                summary = tx.run("EXPLAIN " + text, params).consume()
                _check_plan(summary.query_type, *_plan_facts(summary.plan))
                result = tx.run(text, params)
                rows = (tuple(plain(v) for v in record.values()) for record in result)
                yield tuple(result.keys()), rows
            finally:
                tx.close()  # rolls back: a read has nothing to commit; never commit a user's query


def run_readonly(driver: Driver, text: str, params: Mapping[str, Any] | None = None, *,
                 database: str, timeout_s: float = 10.0, row_cap: int = 1000) -> CypherResult:
    """Run the user's query ``text`` with ``params`` read-only, in this process; raises
    :class:`CypherError`. The API and the CLI use :class:`graphstore.sandbox.CypherRunner`
    instead, which also bounds the wait and the response's bytes."""
    if row_cap < 1:
        raise CypherError("invalid", f"row cap must be >= 1, got {row_cap}")
    with readonly_rows(driver, text, params, database=database, timeout_s=timeout_s,
                       fetch_size=min(row_cap + 1, 1000)) as (columns, rows):
        kept: list[tuple[Any, ...]] = []
        for row in rows:
            if len(kept) == row_cap:
                return CypherResult(columns, tuple(kept), truncated=True)
            kept.append(row)
        return CypherResult(columns, tuple(kept), truncated=False)
