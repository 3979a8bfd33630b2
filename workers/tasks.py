"""Celery tasks: thin glue from a JSON job spec to discovery and the graph store.

Loaded only in worker processes (``include`` in :func:`workers.app.run_worker`).
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from functools import lru_cache

from celery import shared_task
from neo4j import Driver, GraphDatabase

from discovery.circuit import Circuit, Edge, Metrics, Node, Provenance
from graphstore.store import ensure_schema, write_circuit
from workers.app import DEMO_TASK, PING_TASK
from workers.settings import get_settings


@lru_cache(maxsize=1)
def _driver() -> Driver:
    """One Neo4j driver per worker process, with the schema ensured once."""
    settings = get_settings()
    driver = GraphDatabase.driver(
        settings.neo4j_uri, auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value())
    )
    ensure_schema(driver, database=settings.neo4j_database)
    return driver


@shared_task(name=PING_TASK)
def ping(payload: dict | None = None) -> dict:
    """Echo ``payload`` with the identity of the process that ran it (proves a real worker)."""
    return {"payload": payload, "pid": os.getpid(), "ppid": os.getppid(),
            "host": socket.gethostname()}


def placeholder_circuit(circuit_id: str) -> Circuit:
    """A small hand-written graph (previous-token head feeding an induction head).

    A placeholder for the demo until the discovery engine lands: it is labelled ``placeholder`` in
    its method and provenance so nobody mistakes it for a discovered circuit.
    """
    names = ["embed", "a0.h0", "a1.h0", "logits"]
    edges = [
        Edge.parse("embed->a0.h0<q>"), Edge.parse("embed->a0.h0<k>"),
        Edge.parse("a0.h0->a1.h0<k>"), Edge.parse("embed->a1.h0<q>"),
        Edge.parse("embed->a1.h0<v>"), Edge.parse("a1.h0->logits"),
    ]
    return Circuit(
        id=circuit_id,
        nodes=tuple(Node.parse(n) for n in names),
        edges=tuple(edges),
        metrics=Metrics(full=1.0, empty=0.0, circuit=1.0, name="placeholder"),
        provenance=Provenance(
            model="placeholder", task="placeholder", method="placeholder",
            params={"note": "hand-written demo graph, not discovered"},
            created_at=datetime.now(UTC).isoformat(),
        ),
    )


@shared_task(name=DEMO_TASK, bind=True)
def demo_job(self) -> dict:  # noqa: ANN001 - Celery's bound task
    """Write the placeholder circuit under the job's id (a re-delivered job rewrites the same one)."""
    settings = get_settings()
    circuit = placeholder_circuit(self.request.id)
    write_circuit(_driver(), circuit, database=settings.neo4j_database)
    return {"circuit_id": circuit.id, "n_nodes": len(circuit.nodes), "n_edges": len(circuit.edges)}
