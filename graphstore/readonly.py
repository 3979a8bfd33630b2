"""Users' own Cypher, read-only: a READ transaction with a server-side timeout and a row cap.

Three guards, each enough to refuse a write on its own terms:

1. the session's access mode is READ, so the server refuses any write (``Statement.AccessMode``);
2. before running, the query is planned with ``EXPLAIN`` and refused unless the planner calls it a
   read (``query_type == "r"``) and its plan has no operator that reaches beyond the graph
   (``LOAD CSV``, ``TERMINATE``/``SHOW TRANSACTIONS``, ``SHOW SETTINGS``, administration);
3. the transaction is always rolled back, never committed.

Values travel only as parameters. Every failure comes back as a :class:`CypherError` with a kind
and a message a person can act on, never as a driver traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from neo4j import READ_ACCESS, Driver, NotificationMinimumSeverity
from neo4j.exceptions import DriverError, Neo4jError, ServiceUnavailable
from neo4j.graph import Node, Path, Relationship

#: Plan operators refused even in a read: they read files or URLs, or see or stop other sessions.
DENIED_OPERATORS: frozenset[str] = frozenset({
    "LoadCSV", "TerminateTransactions", "ShowTransactions", "ShowSettings", "AdministrationCommand",
})

WRITE_REFUSED = ("the read-only Cypher path refuses writes (CREATE, MERGE, SET, DELETE, REMOVE, "
                 "write procedures); it runs reads only")


class CypherError(ValueError):
    """A user's query that could not run. ``kind``: ``write`` (tried to change the store),
    ``refused`` (not a plain read), ``syntax``, ``parameter``, ``timeout``, ``invalid`` (any other
    mistake in the query or the request), ``unavailable`` (the server cannot be reached)."""

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
    temporal and spatial values their ISO text."""
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
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _operators(plan: Mapping[str, Any] | None) -> set[str]:
    if not plan:
        return set()
    found = {str(plan.get("operatorType", "")).split("@")[0]}
    for child in plan.get("children", ()):
        found |= _operators(child)
    return found


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
        return CypherError("timeout", f"the query ran past its {timeout_s:g}s timeout and was "
                                      "stopped; add a LIMIT or narrow the pattern")
    return CypherError("invalid", f"{code.rsplit('.', 1)[-1] or 'error'}: {message}")


def _check_plan(query_type: str | None, operators: set[str]) -> None:
    """Refuse what the planner says is not a plain read of the graph."""
    if query_type in ("w", "rw"):
        raise CypherError("write", WRITE_REFUSED)
    denied = sorted(operators & DENIED_OPERATORS)
    if denied:
        raise CypherError("refused", f"only reads of the circuit graph run here; this query uses "
                                     f"{', '.join(denied)}")
    if query_type != "r":
        raise CypherError("refused", "only reads of the circuit graph run here; schema and "
                                     f"system commands are refused (query type {query_type!r})")


def _check_request(text: str, params: Mapping[str, Any], timeout_s: float, row_cap: int) -> None:
    if not isinstance(text, str) or not text.strip():
        raise CypherError("invalid", "the query is empty; give a Cypher read such as "
                                     "'MATCH (c:Circuit) RETURN c.id LIMIT 5'")
    if not all(isinstance(k, str) and k for k in params):
        raise CypherError("invalid", "parameter names must be non-empty strings")
    if not timeout_s > 0:
        raise CypherError("invalid", f"timeout must be > 0 seconds, got {timeout_s}")
    if row_cap < 1:
        raise CypherError("invalid", f"row cap must be >= 1, got {row_cap}")


def run_readonly(driver: Driver, text: str, params: Mapping[str, Any] | None = None, *,
                 database: str, timeout_s: float = 10.0, row_cap: int = 1000) -> CypherResult:
    """Run the user's query ``text`` with ``params`` read-only; raises :class:`CypherError`."""
    params = dict(params or {})
    _check_request(text, params, timeout_s, row_cap)
    try:
        with driver.session(database=database, default_access_mode=READ_ACCESS,
                            notifications_min_severity=NotificationMinimumSeverity.OFF) as session:
            with session.begin_transaction(timeout=timeout_s) as tx:
                try:
                    summary = tx.run("EXPLAIN " + text, params).consume()
                    _check_plan(summary.query_type, _operators(summary.plan))
                    result = tx.run(text, params)
                    columns = tuple(result.keys())
                    rows: list[tuple[Any, ...]] = []
                    for record in result:
                        if len(rows) == row_cap:
                            return CypherResult(columns, tuple(rows), truncated=True)
                        rows.append(tuple(plain(v) for v in record.values()))
                    return CypherResult(columns, tuple(rows), truncated=False)
                finally:
                    tx.close()  # rolls back: a read has nothing to commit; never commit a user's query
    except CypherError:
        raise
    except Neo4jError as exc:
        raise as_cypher_error(exc, timeout_s) from None
    except ServiceUnavailable as exc:
        raise CypherError("unavailable", f"Neo4j cannot be reached ({exc}); is it running? "
                                         "`circuits services status`") from None
    except (DriverError, TypeError, ValueError) as exc:  # e.g. a parameter value Bolt cannot carry
        raise CypherError("invalid", f"the query could not be sent: {exc}") from None
