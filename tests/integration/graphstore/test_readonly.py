"""Users' Cypher runs read-only on the real server: rows up to a cap, writes and reaches beyond
the graph refused, timeouts, syntax errors and missing parameters reported as typed errors, and
parameter values that look like Cypher stay values."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from neo4j.exceptions import Neo4jError

from graphstore.readonly import CypherError, as_cypher_error, run_readonly


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
    ("CALL dbms.listConfig()", "query type 's'"),
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
