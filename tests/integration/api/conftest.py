"""Fixtures of the API tests: one real uvicorn server for the session (with its own keys, a small
body cap, a short Cypher timeout and a small row cap, so the tests see the settings at work), and
two real circuits discovered on the shipped ``multitask`` model and stored in Neo4j under a model
id of this run (``multitask@api-<hex>``), deleted at the end."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import httpx
import pytest

from discovery.circuit import Circuit
from graphstore.store import delete_circuit, ensure_schema, list_circuits, write_circuit
from tests.conftest import ApiServer

WRITE_KEY = "test-writer-key"
READ_KEY = "test-reader-key"
ADMIN_KEY = "test-admin-key"
BODY_CAP = 4096
ROW_CAP = 5
SERVER_ENV = {
    "ATLAS_API_KEYS": f"{WRITE_KEY}:write,{READ_KEY}:read,{ADMIN_KEY}:admin",
    "ATLAS_AUTH_FAIL_LIMIT": "100000",  # the guard tests send many bad keys; test_keys.py has its own server
    "ATLAS_MAX_BODY_BYTES": str(BODY_CAP),
    "ATLAS_CYPHER_TIMEOUT_S": "1",
    "ATLAS_CYPHER_ROW_CAP": str(ROW_CAP),
}
#: The two stored circuits: one ACDC circuit per task.
TASKS = ("ioi", "greater_than")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[ApiServer]:
    api = ApiServer(tmp_path_factory.mktemp("api"), SERVER_ENV)
    yield api
    api.stop()


@pytest.fixture(scope="session")
def reader(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": READ_KEY}) as client:
        yield client


@pytest.fixture(scope="session")
def writer(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": WRITE_KEY}) as client:
        yield client


@pytest.fixture(scope="session")
def anonymous(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _discover(model_id: str) -> dict[str, Circuit]:
    import torch

    from discovery.discover import DiscoveryRequest, discover
    from discovery.models import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared two-core machine: one thread is fastest
    try:
        model = load_model("multitask", device="cpu")
        found = {}
        for task in TASKS:
            circuit = discover(DiscoveryRequest(model="multitask", task=task, method="acdc",
                                                device="cpu"), model=model)
            found[task] = dataclasses.replace(
                circuit, provenance=dataclasses.replace(circuit.provenance, model=model_id))
        return found
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def stored(neo4j_driver, settings) -> Iterator[dict[str, Circuit]]:
    """One real ACDC circuit per task of :data:`TASKS`, stored; everything of their model id is
    deleted afterwards."""
    db = settings.neo4j_database
    model_id = f"multitask@api-{uuid.uuid4().hex[:10]}"
    ensure_schema(neo4j_driver, database=db)
    circuits = _discover(model_id)
    try:
        for circuit in circuits.values():
            write_circuit(neo4j_driver, circuit, database=db)
        yield circuits
    finally:
        for summary in list_circuits(neo4j_driver, database=db, model=model_id, limit=10_000):
            delete_circuit(neo4j_driver, summary.id, database=db)
