"""The real Neo4j server, with auth on: writes, reads, refusals, and the circuit store."""

from __future__ import annotations

import uuid

import pytest
from neo4j import GraphDatabase
from neo4j.exceptions import AuthError, ClientError

from discovery.circuit import Circuit, Edge, Metrics, Node, Provenance
from graphstore.store import delete_circuit, ensure_schema, read_circuit, write_circuit


def test_node_written_and_read_back(neo4j_driver, settings):
    key = f"probe-{uuid.uuid4()}"
    with neo4j_driver.session(database=settings.neo4j_database) as session:
        session.execute_write(lambda tx: tx.run("CREATE (:Probe {key: $key, n: 42})", key=key).consume())
        record = session.execute_read(
            lambda tx: tx.run("MATCH (p:Probe {key: $key}) RETURN p.n AS n", key=key).single()
        )
        session.execute_write(lambda tx: tx.run("MATCH (p:Probe {key: $key}) DELETE p", key=key).consume())
    assert record["n"] == 42


def test_write_in_read_transaction_is_refused(neo4j_driver, settings):
    key = f"probe-{uuid.uuid4()}"
    with neo4j_driver.session(database=settings.neo4j_database) as session:
        with pytest.raises(ClientError) as info:
            session.execute_read(lambda tx: tx.run("CREATE (:Probe {key: $key})", key=key).consume())
        count = session.execute_read(
            lambda tx: tx.run("MATCH (p:Probe {key: $key}) RETURN count(p) AS c", key=key).single()["c"]
        )
    assert "AccessMode" in info.value.code or "read" in info.value.message.lower()
    assert count == 0


def test_auth_is_on(settings):
    with GraphDatabase.driver(settings.neo4j_uri, auth=(settings.neo4j_user, "wrong-password")) as d:
        with pytest.raises(AuthError):
            d.verify_connectivity()


def _circuit(circuit_id: str) -> Circuit:
    return Circuit(
        id=circuit_id,
        nodes=tuple(Node.parse(n, score=1.0) for n in ("embed", "a0.h1", "m1", "m1.n3", "logits")),
        edges=(Edge.parse("embed->a0.h1<q>", 0.5), Edge.parse("embed->a0.h1<v>", 0.25),
               Edge.parse("a0.h1->m1", 0.75), Edge.parse("m1->logits", 1.5)),
        metrics=Metrics(full=3.0, empty=0.0, circuit=2.4, name="logit_diff"),
        provenance=Provenance(model=f"test-model-{circuit_id}", task="ioi", method="acdc",
                              threshold=0.01, params={"order": "reverse"}, seed=0),
    )


def test_circuit_round_trip_and_idempotent_write(neo4j_driver, settings):
    db = settings.neo4j_database
    ensure_schema(neo4j_driver, database=db)
    circuit = _circuit(f"test-{uuid.uuid4()}")
    write_circuit(neo4j_driver, circuit, database=db)
    write_circuit(neo4j_driver, circuit, database=db)  # a re-delivered job writes again
    back = read_circuit(neo4j_driver, circuit.id, database=db)
    assert back is not None
    assert {n.name for n in back.nodes} == {n.name for n in circuit.nodes}
    assert {(e.name, e.score) for e in back.edges} == {(e.name, e.score) for e in circuit.edges}
    assert back.provenance == circuit.provenance and back.metrics == circuit.metrics
    records, _, _ = neo4j_driver.execute_query(
        "MATCH (c:Circuit {id: $id}) OPTIONAL MATCH ()-[f:FEEDS {circuit: $id}]->() "
        "RETURN count(DISTINCT c) AS circuits, count(f) AS feeds", id=circuit.id, database_=db,
    )
    assert (records[0]["circuits"], records[0]["feeds"]) == (1, 4)
    assert read_circuit(neo4j_driver, "no-such-circuit", database=db) is None
    assert delete_circuit(neo4j_driver, circuit.id, database=db)
    assert read_circuit(neo4j_driver, circuit.id, database=db) is None
