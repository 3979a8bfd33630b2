"""Users' own Cypher in a child process: a hard deadline, a byte cap, flat memory.

The server-side timeout (:mod:`graphstore.readonly`) stops most queries, but not all: Neo4j checks
for termination between rows and at store reads, so one expression that loops in memory
(``reduce`` over a huge ``range``) runs on past it, and the client waits as long. And a row cap
bounds rows, not bytes: 1000 rows of large lists made a ~50-75 MB response that the API held
several times over while encoding it. So :class:`CypherRunner` runs each query in a child
process, ``python -m graphstore.sandbox_child`` (credentials over stdin, a capped address space,
a few rows fetched at a time), and reads its JSON lines with a deadline (timeout + grace) and a
byte cap. When either is hit it kills the child and terminates the server-side transaction
(found by the tag in its metadata) from the admin connection. A child that finished cleanly
waits for the next query (a Python start costs ~0.25 s, a query on a warm child ~0.03 s); it is
replaced after :data:`MAX_USES` queries or one large result, so its memory does not creep.

A semaphore bounds the queries running at once. A slot whose killed query is still running on
the server (an expression that ignores termination keeps its server thread busy) stays taken
until the server lets go of the transaction, or for at most ``hold_max_s``: a caller can then
keep at most ``max_concurrent`` server threads busy, never more.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from neo4j import Driver
from neo4j.exceptions import ServiceUnavailable, SessionExpired

from graphstore.reader import ensure_reader
from graphstore.readonly import UNREACHABLE, CypherError, CypherResult, check_request, timeout_error

log = logging.getLogger("graphstore.sandbox")

FIND_TAGGED = ("SHOW TRANSACTIONS YIELD transactionId, metaData "
               "WHERE metaData.atlas_query = $tag RETURN transactionId")
TERMINATE = "TERMINATE TRANSACTIONS $ids"
CHILD = (sys.executable, "-m", "graphstore.sandbox_child")
#: End lines of a child that finished by itself (and rolled back).
ENDS = frozenset({"done", "rows", "bytes", "error"})
#: A child serves at most this many queries, or one result over RECYCLE_BYTES, then exits.
MAX_USES = 200
RECYCLE_BYTES = 1_000_000


@dataclass(frozen=True)
class Account:
    """Where user queries run and as whom: the dedicated query user (:mod:`graphstore.reader`)."""

    uri: str
    user: str
    password: str = field(repr=False)
    database: str = "neo4j"


@dataclass(frozen=True)
class Limits:
    """What one user query may take. ``grace_s``: how long past ``timeout_s`` the parent waits
    before it kills the child; ``hold_max_s``: how long a slot stays taken after a kill while the
    server still runs the query."""

    timeout_s: float = 10.0
    grace_s: float = 2.0
    row_cap: int = 1000
    byte_cap: int = 4_000_000
    fetch_size: int = 100
    child_memory_mb: int = 512
    max_concurrent: int = 2
    hold_max_s: float = 300.0


@dataclass(frozen=True)
class RawResult:
    """Columns and rows, each row kept as the JSON text of an array, so that the API sends them
    on without decoding; ``truncated_by`` is ``rows`` or ``bytes`` when a cap left rows out."""

    columns: tuple[str, ...]
    rows: tuple[bytes, ...]
    truncated_by: str | None

    @property
    def truncated(self) -> bool:
        return self.truncated_by is not None

    def decoded(self) -> CypherResult:
        rows = tuple(tuple(json.loads(row)) for row in self.rows)
        return CypherResult(self.columns, rows, truncated=self.truncated)

    def json_body(self, **extra: Any) -> bytes:
        """``{"columns", "rows", "truncated", "truncated_by", **extra}`` as JSON bytes."""
        compact = {"ensure_ascii": False, "separators": (",", ":")}
        head = json.dumps({"columns": list(self.columns)}, **compact)[:-1].encode()
        tail = json.dumps({"truncated": self.truncated, "truncated_by": self.truncated_by,
                           **extra}, **compact)[1:].encode()
        return b"".join((head, b',"rows":[', b",".join(self.rows), b"],", tail))


@dataclass
class _Reading:
    """What the parent has read of the child's output so far."""

    columns: tuple[str, ...] = ()
    rows: list[bytes] = field(default_factory=list)
    size: int = 0
    ended: str | None = None  # one of ENDS, or "cut" (a row past the byte cap)
    error: CypherError | None = None
    exited: bool = False  # the child's output ended without an end line
    clean: bool = True  # nothing followed the end line (else the child is not reused)


class CypherRunner:
    """Runs users' read-only Cypher in child processes; thread-safe, one per process.
    ``admin`` (an admin's driver) creates the query user and terminates killed queries."""

    def __init__(self, admin: Driver, account: Account, limits: Limits, *,
                 admin_user: str = "neo4j") -> None:
        self.admin, self.account, self.limits = admin, account, limits
        self._provision = account.user != admin_user
        # Children that finished a query cleanly and wait on stdin for the next one (at most one
        # per slot); one whose parent exits reads end-of-file and exits too.
        self._idle: list[_Child] = []
        self._idle_lock = threading.Lock()
        self._ready = False
        self._ready_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(limits.max_concurrent)

    def run(self, text: str, params: Mapping[str, Any] | None = None, *,
            timeout_s: float | None = None, row_cap: int | None = None) -> RawResult:
        """Run ``text`` read-only; raises :class:`CypherError` (``busy`` when every slot is
        taken for longer than the grace period)."""
        params = dict(params or {})
        timeout_s = self.limits.timeout_s if timeout_s is None else timeout_s
        row_cap = self.limits.row_cap if row_cap is None else row_cap
        check_request(text, params, timeout_s, row_cap)
        self._ensure_reader()
        if not self._slots.acquire(timeout=self.limits.grace_s):
            raise CypherError("busy", f"{self.limits.max_concurrent} Cypher queries are already "
                                      "running; try again in a few seconds")
        held = False
        try:
            reading, killed_tag = self._run_child(text, params, timeout_s, row_cap)
            if killed_tag is not None:
                # Stopping it on the server can be slow when the server is overloaded (by this very
                # query): a thread does it and keeps the slot, the caller gets its answer now.
                threading.Thread(target=self._stop_on_server, args=(killed_tag,), daemon=True,
                                 name=f"cypher-stop-{killed_tag[:8]}").start()
                held = True
        finally:
            if not held:
                self._slots.release()
        return self._result(reading, timeout_s)

    # -- the child -----------------------------------------------------------------------------
    def _run_child(self, text: str, params: dict[str, Any], timeout_s: float,
                   row_cap: int) -> tuple[_Reading, str | None]:
        """Run the query in a child; returns what it read, and the query's tag when the child
        had to be killed (so its server-side transaction may still run)."""
        tag = uuid.uuid4().hex
        request = json.dumps({
            "uri": self.account.uri, "user": self.account.user, "password": self.account.password,
            "database": self.account.database, "query": text, "params": params,
            "timeout_s": timeout_s, "row_cap": row_cap, "byte_cap": self.limits.byte_cap,
            "fetch_size": min(self.limits.fetch_size, row_cap + 1), "tag": tag,
            "connect_timeout_s": min(timeout_s, 5.0),
            "memory_bytes": self.limits.child_memory_mb * 2**20,
        }).encode()
        deadline = time.monotonic() + timeout_s + self.limits.grace_s
        child = self._send(request + b"\n")
        reading = _Reading()
        try:
            reading = self._read(child.process, deadline)
        finally:
            finished = reading.ended in ENDS  # then the child has rolled back and waits
            self._give_back(child, finished and reading.clean and reading.size < RECYCLE_BYTES)
        return reading, (None if finished else tag)

    def _send(self, request: bytes) -> _Child:
        """A child that took ``request``: an idle one, or a new one when none is idle or the idle
        one died in the meantime. A new child that dies at once is returned all the same (its
        output then ends without an end line)."""
        child = self._child()
        for attempt in (1, 2):
            try:
                child.process.stdin.write(request)
                child.process.stdin.flush()
                return child
            except BrokenPipeError:
                if attempt == 2 or child.uses == 0:
                    return child
                child.close()
                child = _Child()
        return child

    def _child(self) -> _Child:
        """An idle child that is still alive, else a new one."""
        with self._idle_lock:
            while self._idle:
                child = self._idle.pop()
                if child.process.poll() is None:
                    return child
                child.close()
        return _Child()

    def _give_back(self, child: _Child, reusable: bool) -> None:
        """Keep ``child`` for the next query, or end it (killed when it has not ended itself)."""
        child.uses += 1
        with self._idle_lock:
            if reusable and child.uses < MAX_USES and len(self._idle) < self.limits.max_concurrent:
                self._idle.append(child)
                return
        child.close()

    def _read(self, child: subprocess.Popen, deadline: float) -> _Reading:
        """The child's lines until its end line, its exit, the deadline or the byte cap."""
        reading, pending = _Reading(), bytearray()
        fd = child.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while reading.ended is None:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(timeout=left):
                    return reading  # past the deadline: the caller kills the child
                chunk = os.read(fd, 65536)
                if not chunk:
                    reading.exited = True  # without an end line
                    return reading
                pending += chunk
                if b"\n" not in chunk:
                    lines = []
                else:
                    *lines, rest = pending.split(b"\n")
                    pending = bytearray(rest)
                for i, line in enumerate(lines):
                    self._take(reading, bytes(line))
                    if reading.ended is not None:
                        reading.clean = i == len(lines) - 1 and not pending
                        break
                if reading.ended is None and len(pending) > self.limits.byte_cap - reading.size:
                    reading.ended = "cut"  # a row beyond the cap: the child is killed
        return reading

    def _take(self, reading: _Reading, line: bytes) -> None:
        if line.startswith(b"["):
            if reading.size + len(line) > self.limits.byte_cap:
                reading.ended = "cut"
                return
            reading.rows.append(line)
            reading.size += len(line) + 1
            return
        try:
            message = json.loads(line)
        except ValueError:
            reading.exited = True  # not our protocol: treat as a child that died
            reading.ended = "cut"
            return
        if "columns" in message:
            reading.columns = tuple(message["columns"])
        elif "error" in message:
            reading.ended, reading.error = "error", CypherError(message["error"], message["message"])
        else:
            reading.ended = str(message.get("end", "done"))

    @staticmethod
    def _result(reading: _Reading, timeout_s: float) -> RawResult:
        if reading.error is not None:
            raise reading.error
        if reading.exited:
            raise CypherError("invalid", "the query's runner stopped before it answered; try "
                                         "again, or narrow the query")
        if reading.ended is None:
            raise timeout_error(timeout_s)
        truncated_by = {"rows": "rows", "bytes": "bytes", "cut": "bytes"}.get(reading.ended)
        return RawResult(reading.columns, tuple(reading.rows), truncated_by)

    # -- the server side -----------------------------------------------------------------------
    def _ensure_reader(self) -> None:
        """Create the query user on first use (again after a failure), from the admin driver."""
        if self._ready or not self._provision:
            return
        with self._ready_lock:
            if self._ready:
                return
            try:
                ensure_reader(self.admin, name=self.account.user, password=self.account.password)
            except (ServiceUnavailable, SessionExpired):
                raise CypherError("unavailable", UNREACHABLE) from None
            except Exception as exc:  # noqa: BLE001 - any failure: the path is unavailable
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise CypherError("unavailable", f"the read-only Cypher user {self.account.user!r} "
                                  f"could not be set up from the admin connection ({reason}); "
                                  "check that Neo4j runs, and ATLAS_CYPHER_USER and "
                                  "ATLAS_CYPHER_PASSWORD") from None
            self._ready = True

    def _tagged(self, tag: str) -> list[str]:
        records, _, _ = self.admin.execute_query(FIND_TAGGED, tag=tag,
                                                 database_=self.account.database)
        return [r["transactionId"] for r in records]

    def _stop_on_server(self, tag: str) -> None:
        """Terminate the killed query's transaction and wait until the server lets it go (at most
        ``hold_max_s``), then give back the slot it held: a query that ignores its termination
        keeps occupying a slot, so one key cannot pile up runaway queries on the server."""
        until = time.monotonic() + self.limits.hold_max_s
        try:
            ids = self._tagged(tag)
            if ids:
                self.admin.execute_query(TERMINATE, ids=ids, database_=self.account.database)
            while ids and time.monotonic() < until:
                time.sleep(0.5)
                ids = self._tagged(tag)
            if ids:
                log.warning("Cypher query %s still runs on the server %.0fs after it was terminated; "
                            "its slot is given back", tag, self.limits.hold_max_s)
        except Exception as exc:  # noqa: BLE001 - Neo4j unreachable: nothing left to stop there
            log.warning("could not terminate Cypher query %s: %s", tag, exc)
        finally:
            self._slots.release()


class _Child:
    """A child process (``python -m graphstore.sandbox_child``) and how many queries it ran."""

    def __init__(self) -> None:
        # The child gets its credentials over stdin; the service's own (ATLAS_*) stay out of it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
        env.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        # stderr is the parent's: a child that crashes (it reports every query's failure as a
        # line on stdout, so only a broken installation does) leaves its traceback in our log.
        self.process = subprocess.Popen(CHILD, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        env=env)
        self.uses = 0

    def close(self) -> None:
        """Kill the child (if it still runs) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass  # a pipe to a killed child may fail to flush
