"""Users' Cypher cannot take the store down, hang the API or swell its memory (issue 10).

Every finding is replayed against a scratch Neo4j configured as ``circuits services up``
configures the local one, with a 512 MiB heap (the local default is 1 GiB; at 512 MiB the
256 MiB per-transaction floor is half the heap, the tightest case), where a failure cannot harm
the shared server: a read that fills the memory pools or builds a huge list outside them, an
expression that ignores the server's timeout, a response of ~75 MB; and through a real API
process, its answers and its memory. After each, Neo4j is still the same process and answers.
The largest write we make (a GPT-2-small circuit, rewritten) still fits the per-transaction limit.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from neo4j import GraphDatabase

from api.ops.neo4j_local import transaction_memory
from graphstore.reader import ensure_reader
from graphstore.readonly import CypherError
from graphstore.sandbox import Account, CypherRunner, Limits
from tests.conftest import ApiServer
from tests.integration.faults.conftest import SCRATCH_PASSWORD

HEAP = "512m"  # half the local default (ATLAS_NEO4J_HEAP=1g): the same limits, less headroom
READ_KEY = "fault-reader-key"
#: The findings' queries. HUGE: 1000 capped rows of ~74 KB each.
TRACKED_MEMORY = "UNWIND range(1, 50000000) AS x WITH collect(toString(x)) AS l RETURN size(l) AS n"
#: A list comprehension (not tracked by the transaction memory limit) of 64-string lists: it fills
#: the heap in ~0.5 s; one string per element took 4.4 s, past the API tests' 2 s timeout.
UNTRACKED_MEMORY = "RETURN size([x IN range(1, 100000000) | [y IN range(1, 64) | toString(x + y)]]) AS n"
CPU_HEAVY = "RETURN reduce(s = 0, x IN range(1, $n) | s + x) AS s"
HUGE = "UNWIND range(1, 2000) AS i RETURN [y IN range(1, 5000) | toString(y) + 'abcdefgh'] AS l"
USER, PASSWORD = "atlas_fault_reader", "fault-reader-pass"


@pytest.fixture(scope="module")
def server(scratch_neo4j):
    return scratch_neo4j(heap=HEAP, pagecache="64m")


@pytest.fixture(scope="module")
def admin(server):
    with GraphDatabase.driver(server.uri(), auth=("neo4j", SCRATCH_PASSWORD)) as driver:
        yield driver


def runner(server, admin, **limits) -> CypherRunner:
    account = Account(uri=server.uri(), user=USER, password=PASSWORD, database="neo4j")
    return CypherRunner(admin, account, Limits(**limits))


def assert_up(server, admin, pid: int) -> None:
    """The same Neo4j process still runs, and reads and writes."""
    assert server.process.pid() == pid, "Neo4j was restarted or died"
    admin.execute_query("CREATE (p:Probe {n: 1}) WITH p DELETE p", database_="neo4j")
    records, _, _ = admin.execute_query("RETURN 1 AS one", database_="neo4j")
    assert records[0]["one"] == 1


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_neo4j_bounds_query_memory_itself(server, admin):
    per_tx, total = transaction_memory(HEAP)
    records, _, _ = admin.execute_query(
        "SHOW SETTINGS YIELD name, value WHERE name IN $names RETURN name, value",
        names=["db.memory.transaction.max", "dbms.memory.transaction.total.max",
               "db.transaction.timeout"], database_="neo4j")
    values = {r["name"]: r["value"] for r in records}
    assert values["db.memory.transaction.max"] == f"{per_tx:.2f}MiB"
    assert float(values["dbms.memory.transaction.total.max"].removesuffix("MiB")) == pytest.approx(
        total, abs=1)
    assert values["db.transaction.timeout"] == "2m"
    argv = Path(f"/proc/{server.process.pid()}/cmdline").read_bytes().split(b"\0")
    assert b"-XX:+ExitOnOutOfMemoryError" not in argv  # an OOM of one query must not end the JVM


@pytest.mark.slow
@pytest.mark.parametrize(("query", "text"), [
    (TRACKED_MEMORY, "db.memory.transaction.max"),  # stopped by Neo4j's memory pool
    (UNTRACKED_MEMORY, "the server is still up"),  # the finding: outside the pools, heap exhausted
])
def test_memory_heavy_reads_fail_clearly_and_neo4j_stays_up(server, admin, query, text):
    pid = server.process.pid()
    started = time.monotonic()
    with pytest.raises(CypherError) as info:
        runner(server, admin, timeout_s=30.0, grace_s=2.0).run(query)
    assert info.value.kind == "memory" and text in info.value.message, info.value.message
    assert time.monotonic() - started < 32
    assert_up(server, admin, pid)


@pytest.mark.slow
def test_cpu_heavy_read_answers_by_its_deadline_and_keeps_its_slot(server, admin):
    """reduce() over a huge range never checks for termination: the server runs on past the
    timeout. The caller still gets its answer at timeout + grace; the query's slot stays taken
    while the server works, so such queries cannot pile up on the server."""
    pid = server.process.pid()
    cypher = runner(server, admin, timeout_s=1.0, grace_s=1.0, max_concurrent=1, hold_max_s=120)
    started = time.monotonic()
    with pytest.raises(CypherError) as info:
        cypher.run(CPU_HEAVY, {"n": 1_000_000_000})
    assert info.value.kind == "timeout" and "1s timeout" in info.value.message
    assert time.monotonic() - started < 1.0 + 1.0 + 1.5
    running, _, _ = admin.execute_query(
        "SHOW TRANSACTIONS YIELD username WHERE username = $user RETURN count(*) AS n", user=USER,
        database_="neo4j")
    if running[0]["n"]:  # the server still computes (here ~15 s of it): the slot is held
        with pytest.raises(CypherError) as busy:
            cypher.run("RETURN 1 AS one")
        assert busy.value.kind == "busy"
    deadline = time.monotonic() + 120
    while True:
        try:
            assert cypher.run("RETURN 1 AS one").decoded().rows == ((1,),)
            break
        except CypherError as exc:
            assert exc.kind == "busy" and time.monotonic() < deadline, exc.message
            time.sleep(0.5)
    assert_up(server, admin, pid)


def test_huge_response_is_cut_at_the_byte_cap(server, admin):
    started = time.monotonic()
    result = runner(server, admin, timeout_s=20.0, byte_cap=4_000_000).run(HUGE)
    assert result.truncated_by == "bytes" and 0 < len(result.rows) < 1000
    assert sum(len(row) + 1 for row in result.rows) <= 4_000_000
    assert time.monotonic() - started < 10  # was 13-26 s for a ~74 MB response


def test_query_user_is_created_and_its_password_kept_in_step(admin):
    name = "atlas_fault_user"
    assert ensure_reader(admin, name=name, password="first-pass") == "community"
    assert ensure_reader(admin, name=name, password="first-pass") == "community"  # idempotent
    ensure_reader(admin, name=name, password="second-pass")
    assert admin.verify_authentication(auth=(name, "second-pass"))
    assert not admin.verify_authentication(auth=(name, "first-pass"))


@pytest.mark.slow
def test_largest_circuit_write_fits_the_transaction_limit(admin):
    """A full GPT-2-small circuit (32,491 edges), written and then rewritten in one transaction
    each (the rewrite holds both versions: ~155 MiB tracked), under the 256 MiB limit."""
    from bench.graphstore import circuit
    from graphstore.store import delete_circuit, ensure_schema, write_circuit

    ensure_schema(admin, database="neo4j")
    full = circuit("fault-full-0", "gpt2-fault", "full", share=1.0, seed=0)
    try:
        write_circuit(admin, full, database="neo4j")
        write_circuit(admin, full, database="neo4j")
        records, _, _ = admin.execute_query(
            "MATCH ()-[f:FEEDS {circuit: $id}]->() RETURN count(f) AS n", id=full.id,
            database_="neo4j")
        assert records[0]["n"] == 32_491
    finally:
        delete_circuit(admin, full.id, database="neo4j")


# -- through a real API process --------------------------------------------------------------

@pytest.fixture(scope="module")
def api(server, tmp_path_factory):
    env = {"ATLAS_NEO4J_URI": server.uri(), "ATLAS_NEO4J_PASSWORD": SCRATCH_PASSWORD,
           "ATLAS_API_KEYS": f"{READ_KEY}:read", "ATLAS_CYPHER_TIMEOUT_S": "2",
           "ATLAS_CYPHER_GRACE_S": "1", "ATLAS_CYPHER_USER": USER, "ATLAS_CYPHER_PASSWORD": PASSWORD}
    served = ApiServer(tmp_path_factory.mktemp("api"), env)
    yield served
    served.stop()


def _cypher(api, query: str, params: dict | None = None) -> httpx.Response:
    return httpx.post(f"{api.url}/v1/cypher", json={"query": query, "params": params or {}},
                      headers={"X-API-Key": READ_KEY}, timeout=60)


@pytest.mark.slow
def test_two_huge_responses_leave_the_api_memory_flat(api):
    assert _cypher(api, "RETURN 1 AS one").json()["rows"] == [[1]]
    before, peak, answers = rss_mb(api.proc.pid), [0.0], []
    threads = [threading.Thread(target=lambda: answers.append(_cypher(api, HUGE))) for _ in range(2)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        peak[0] = max(peak[0], rss_mb(api.proc.pid))
        time.sleep(0.05)
    assert [a.status_code for a in answers] == [200, 200]
    for answer in answers:
        body = answer.json()
        assert body["truncated"] is True and body["truncated_by"] == "bytes"
        assert len(answer.content) < 4_100_000
    assert peak[0] - before < 60, (before, peak[0])  # was +800 MB


@pytest.mark.slow
def test_api_answers_heavy_reads_with_clear_errors_in_time(api):
    started = time.monotonic()
    cpu = _cypher(api, CPU_HEAVY, {"n": 500_000_000})
    assert time.monotonic() - started < 2 + 1 + 1.5  # timeout + grace + slack; was ~31 s
    assert cpu.status_code == 400 and cpu.json()["kind"] == "timeout"
    # The pool-stopped query (~0.6 s): the heap-filling one took 0.5 s on some days and over the
    # 2 s deadline on others (2026-12-08, also at older commits), then it is a timeout, not this
    # check. Its own classification is tested above (test_memory_heavy_reads_fail_clearly...).
    memory = _cypher(api, TRACKED_MEMORY)
    assert memory.status_code == 400 and memory.json()["kind"] == "memory"
    stats = _cypher(api, "CALL db.stats.retrieve('QUERIES') YIELD data RETURN data")
    assert stats.status_code == 400 and stats.json()["kind"] == "refused"
    big = _cypher(api, "RETURN $x AS x", {"x": 2**64})
    assert big.status_code == 400 and big.json()["kind"] == "parameter"
    assert "$x" in big.json()["detail"]
    assert _cypher(api, "RETURN 1 AS one").json()["rows"] == [[1]]
