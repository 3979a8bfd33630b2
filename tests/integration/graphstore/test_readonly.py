"""Users' Cypher runs read-only on the real server: rows up to a cap, writes and reaches beyond
the graph refused (procedures outside the allow-list among them), timeouts, syntax errors,
missing parameters and integers beyond 64 bits reported as typed errors, and parameter values
that look like Cypher stay values. The runner the API uses (a child process per query, as the
dedicated query user) gives the same answers with a byte cap and a deadline. Memory- and
CPU-heavy queries run against a scratch server: tests/integration/faults/test_cypher_faults.py."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid

import pytest
from neo4j.exceptions import Neo4jError

from graphstore.readonly import CypherError, as_cypher_error, run_readonly
from graphstore.sandbox import Account, CypherRunner, Limits


@pytest.fixture
def canary(store, db):
    """A probe node that every refused or injected query must leave exactly as it was."""
    key = f"canary-{uuid.uuid4()}"
    store.execute_query("CREATE (:Probe {key: $key, n: 1})", key=key, database_=db)

    def intact() -> bool:
        records, _, _ = store.execute_query(
            "MATCH (p:Probe {key: $key}) RETURN count(p) AS c, collect(p.n) AS ns, "
            "collect(labels(p)) AS ls", key=key, database_=db)
        return records[0]["c"] == 1 and records[0]["ns"] == [1] and records[0]["ls"] == [["Probe"]]

    yield key, intact
    store.execute_query("MATCH (p:Probe {key: $key}) DETACH DELETE p", key=key, database_=db)


def test_rows_come_back_up_to_the_cap(store, db):
    capped = run_readonly(store, "UNWIND range(1, $n) AS x RETURN x, x * x AS sq", {"n": 50},
                          database=db, row_cap=7)
    assert capped.columns == ("x", "sq") and capped.truncated
    assert capped.rows == tuple((x, x * x) for x in range(1, 8))
    exact = run_readonly(store, "UNWIND range(1, $n) AS x RETURN x", {"n": 7}, database=db, row_cap=7)
    assert len(exact.rows) == 7 and not exact.truncated


@pytest.mark.parametrize("query", [
    "CREATE (:Intruder)",
    "MATCH (p:Probe {key: $key}) SET p.n = 2",
    "MATCH (p:Probe {key: $key}) SET p:Owned",
    "MATCH (p:Probe {key: $key}) REMOVE p.n",
    "MATCH (p:Probe {key: $key}) DETACH DELETE p",
    "MERGE (p:Probe {key: $key}) ON MATCH SET p.n = 3",
    "MATCH (p:Probe {key: $key}) CALL (p) { DETACH DELETE p } IN TRANSACTIONS",
    "CALL db.createLabel('Intruder')",
    "CREATE INDEX intruder IF NOT EXISTS FOR (n:Intruder) ON (n.x)",
    "MATCH (p:Probe {key: $key}) RETURN p UNION MATCH (q:Probe {key: $key}) DELETE q RETURN q AS p",
])
def test_writes_are_refused(store, db, canary, query):
    key, intact = canary
    with pytest.raises(CypherError) as info:
        run_readonly(store, query, {"key": key}, database=db)
    assert info.value.kind in ("write", "refused"), info.value.message
    assert "refuses writes" in info.value.message or "only reads" in info.value.message
    assert intact()


@pytest.mark.parametrize(("query", "operator"), [
    ("LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row", "LoadCSV"),
    ("TERMINATE TRANSACTIONS 'neo4j-transaction-1'", "TerminateTransactions"),
    ("SHOW TRANSACTIONS", "ShowTransactions"),
    ("SHOW SETTINGS", "ShowSettings"),
    ("CALL dbms.listConfig()", "dbms.listConfig is not allowed"),
])
def test_reads_beyond_the_graph_are_refused(store, db, query, operator):
    with pytest.raises(CypherError) as info:
        run_readonly(store, query, database=db)
    assert info.value.kind == "refused" and operator in info.value.message


def test_the_servers_own_refusal_is_translated(store, db):
    # Behind the plan check the READ transaction itself refuses; its error maps to kind "write".
    with store.session(database=db, default_access_mode="READ") as session:
        with pytest.raises(Neo4jError) as info:
            session.execute_read(lambda tx: tx.run("CREATE (:Intruder)").consume())
    error = as_cypher_error(info.value, 10.0)
    assert error.kind == "write" and "refuses writes" in error.message


def test_slow_query_times_out(store, db):
    started = time.monotonic()
    with pytest.raises(CypherError) as info:
        run_readonly(store, "UNWIND range(1, 1000000000) AS x RETURN sum(x)", database=db,
                     timeout_s=0.5)
    assert info.value.kind == "timeout" and "0.5s timeout" in info.value.message
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(("query", "params", "kind", "text"), [
    ("MATCH (n RETURN n", {}, "syntax", "Cypher syntax error"),
    ("RETURN $missing AS x", {}, "parameter", "missing"),
    ("   ", {}, "invalid", "the query is empty"),
    ("RETURN 1 / $zero", {"zero": 0}, "invalid", "/ by zero"),
    ("RETURN $x", {"x": object()}, "invalid", "could not be sent"),
])
def test_mistakes_come_back_as_typed_errors(store, db, query, params, kind, text):
    with pytest.raises(CypherError) as info:
        run_readonly(store, query, params, database=db)
    assert info.value.kind == kind and text in info.value.message
    assert "Traceback" not in str(info.value)


def test_parameters_cannot_inject(store, db, canary):
    key, intact = canary
    evil = f"{key}'}}) DETACH DELETE p //"
    echoed = run_readonly(store, "RETURN $value AS value", {"value": evil}, database=db)
    assert echoed.rows == ((evil,),)
    found = run_readonly(store, "MATCH (p:Probe {key: $key}) RETURN p.key AS key", {"key": evil},
                         database=db)
    assert found.rows == () and intact()


def test_graph_values_come_back_as_plain_data(real_circuits, store, db):
    circuit = real_circuits["induction"]
    result = run_readonly(
        store, "MATCH p = (a:Component)-[f:FEEDS {circuit: $id}]->(b:Component) RETURN a, f, p LIMIT 1",
        {"id": circuit.id}, database=db)
    node, rel, path = result.rows[0]
    assert "Component" in node["labels"] and node["properties"]["model"] == circuit.provenance.model
    assert rel["type"] == "FEEDS" and rel["properties"]["circuit"] == circuit.id
    assert len(path["nodes"]) == 2 and path["relationships"] == [rel]
    json.dumps(result.rows)  # JSON-ready for the CLI and the API


# -- the procedure allow-list and parameters ------------------------------------------------------

@pytest.mark.parametrize("query", [
    "CALL db.stats.retrieve('QUERIES') YIELD section, data RETURN section, data",
    "CALL db.stats.collect('QUERIES')",
    "CALL db.stats.retrieveAllAnonymized('x')",
    "CALL db.clearQueryCaches()",
    "CALL dbms.listConnections()",
    "CALL dbms.killConnections(['bolt-1'])",
    "CALL dbms.showCurrentUser()",
    "CALL tx.getMetaData()",
    "MATCH (m:Model) CALL (m) { CALL db.stats.retrieve('GRAPH COUNTS') YIELD data RETURN data } "
    "RETURN data LIMIT 1",
    "CALL db.labels() YIELD label RETURN label UNION CALL dbms.components() YIELD name "
    "RETURN name AS label",
])
def test_procedures_outside_the_allow_list_are_refused(store, db, query):
    with pytest.raises(CypherError) as info:
        run_readonly(store, query, database=db)
    assert info.value.kind == "refused" and "is not allowed" in info.value.message
    assert "db.labels" in info.value.message  # says what is allowed


def test_other_sessions_queries_do_not_leak(store, db):
    """The finding: db.stats.retrieve('QUERIES') on the read path showed other sessions' query
    texts and parameter values. It is refused at planning, so the collector never even starts."""
    secret = f"secret-{uuid.uuid4()}"
    store.execute_query("MATCH (p:Probe {key: $key}) RETURN p", key=secret, database_=db)
    for query in ("CALL db.stats.collect('QUERIES')",
                  "CALL db.stats.retrieve('QUERIES') YIELD data RETURN data"):
        with pytest.raises(CypherError, match="is not allowed"):
            run_readonly(store, query, database=db)


def test_schema_procedures_and_show_indexes_run(store, db, canary):
    labels = run_readonly(store, "CALL db.labels() YIELD label RETURN label", database=db,
                          row_cap=500)
    assert ("Probe",) in labels.rows
    indexes = run_readonly(store, "SHOW INDEXES YIELD name RETURN name", database=db, row_cap=500)
    assert ("feeds_circuit",) in indexes.rows
    run_readonly(store, "CALL db.schema.visualization()", database=db)


@pytest.mark.parametrize(("params", "where"), [
    ({"x": 2**64}, "$x = 18446744073709551616"),
    ({"ids": ["a", 2**70]}, "$ids[1]"),
    ({"spec": {"seed": -(2**63) - 1}}, "$spec.seed"),
])
def test_integers_beyond_64_bits_name_the_parameter(store, db, params, where):
    with pytest.raises(CypherError) as info:
        run_readonly(store, "RETURN $x AS x", params, database=db)
    assert info.value.kind == "parameter" and where in info.value.message
    assert "64-bit" in info.value.message


def test_edge_of_the_64_bit_range_goes_through(store, db):
    result = run_readonly(store, "RETURN $lo AS lo, $hi AS hi", {"lo": -(2**63), "hi": 2**63 - 1},
                          database=db)
    assert result.rows == ((-(2**63), 2**63 - 1),)


# -- the runner the API and the CLI use: a child process per query, the dedicated user -----------

@pytest.fixture
def runner(store, settings):
    """A runner on the shared server as the API builds it, with small caps and short waits."""
    account = Account(uri=settings.neo4j_uri, user=settings.cypher_user,
                      password=settings.cypher_password.get_secret_value(),
                      database=settings.neo4j_database)
    return CypherRunner(store, account, Limits(timeout_s=2.0, grace_s=1.0, row_cap=50,
                                               byte_cap=2_000), admin_user=settings.neo4j_user)


def test_runner_caps_rows_and_bytes(runner):
    rows = runner.run("UNWIND range(1, $n) AS x RETURN x", {"n": 80})
    assert rows.truncated_by == "rows" and rows.decoded().rows == tuple((x,) for x in range(1, 51))
    wide = runner.run("UNWIND range(1, 50) AS x RETURN x, $pad AS pad", {"pad": "p" * 100})
    assert wide.truncated_by == "bytes" and 0 < len(wide.rows) < 50
    assert sum(len(r) + 1 for r in wide.rows) <= 2_000
    exact = runner.run("UNWIND range(1, 3) AS x RETURN x")
    assert exact.truncated_by is None and exact.columns == ("x",) and len(exact.rows) == 3


def test_runner_reports_the_same_errors(runner, canary):
    key, intact = canary
    for query, params, kind in (("MATCH (p:Probe {key: $key}) DETACH DELETE p", {"key": key}, "write"),
                                ("MATCH (n RETURN n", {}, "syntax"),
                                ("CALL db.stats.retrieve('QUERIES')", {}, "refused"),
                                ("RETURN $x", {"x": 2**64}, "parameter")):
        with pytest.raises(CypherError) as info:
            runner.run(query, params)
        assert info.value.kind == kind, info.value.message
    assert intact()


def test_runner_times_out_by_its_deadline(runner):
    started = time.monotonic()
    with pytest.raises(CypherError) as info:
        runner.run("UNWIND range(1, 1000000000) AS x RETURN sum(x)")
    assert info.value.kind == "timeout" and "2s timeout" in info.value.message
    assert time.monotonic() - started < 2.0 + 1.0 + 1.0  # timeout + grace + a kill's slack


def test_queries_run_as_the_dedicated_user(runner, store, db, settings):
    """The query user exists (created from the admin connection) and runs users' queries: a
    running one shows up in SHOW TRANSACTIONS under its name, tagged by the runner."""
    done = threading.Event()

    def slow() -> None:
        with contextlib.suppress(CypherError):
            runner.run("UNWIND range(1, 1000000000) AS x RETURN sum(x)")
        done.set()

    threading.Thread(target=slow, daemon=True).start()
    seen: set[str] = set()
    while not done.is_set() and not seen:
        records, _, _ = store.execute_query(
            "SHOW TRANSACTIONS YIELD username, metaData WHERE metaData.atlas_query IS NOT NULL "
            "RETURN username", database_=db)
        seen = {r["username"] for r in records}
        time.sleep(0.05)
    assert seen == {settings.cypher_user}
    assert done.wait(10)
    users, _, _ = store.execute_query("SHOW USERS YIELD user RETURN collect(user) AS users",
                                      database_="system")
    assert settings.cypher_user in users[0]["users"]
