"""Fixtures of the graph-store tests: real circuits discovered once per session on the shipped
``multitask`` model, and a namespace per test run so that nothing collides with other data.

Every circuit is stored under a model id unique to this run (``multitask@test-<hex>``); the
fixtures delete what they stored and check that nothing of the namespace is left.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest

from discovery.circuit import Circuit
from graphstore.store import delete_circuit, ensure_schema, list_circuits, write_circuit

#: Tasks of the shipped multitask model; each gets one ACDC circuit with neurons.
TASKS = ("ioi", "induction", "greater_than", "successor", "pronoun")


@pytest.fixture(scope="session")
def db(settings) -> str:
    return settings.neo4j_database


@pytest.fixture(scope="session")
def store(neo4j_driver, db):
    ensure_schema(neo4j_driver, database=db)
    return neo4j_driver


def leftovers(driver, db: str, model: str) -> int:
    """Nodes of ``model`` still in the store: its components, circuits and the model itself."""
    records, _, _ = driver.execute_query(
        "OPTIONAL MATCH (n:Component {model: $model}) WITH count(n) AS components "
        "OPTIONAL MATCH (c:Circuit)-[:OF_MODEL]->(:Model {id: $model}) WITH components, count(c) AS circuits "
        "OPTIONAL MATCH (m:Model {id: $model}) WITH components, circuits, count(m) AS models "
        "RETURN components + circuits + models AS n",
        model=model, database_=db,
    )
    return records[0]["n"]


def purge_model(driver, db: str, model: str) -> None:
    for summary in list_circuits(driver, database=db, model=model, limit=10_000):
        delete_circuit(driver, summary.id, database=db)


@pytest.fixture
def scratch_model(store, db) -> Iterator[str]:
    """A model id no other test uses; everything stored under it is deleted afterwards."""
    model = f"scratch@test-{uuid.uuid4().hex[:10]}"
    yield model
    purge_model(store, db, model)
    assert leftovers(store, db, model) == 0


@pytest.fixture(scope="session")
def discovered() -> dict[str, Circuit]:
    """One real ACDC circuit (neuron granularity) per task of ``multitask``, found on the CPU,
    moved into this run's namespace (model id ``multitask@test-<hex>``)."""
    import torch

    from discovery.discover import DiscoveryRequest, discover
    from discovery.models import load_model

    # One thread: the model is tiny, and on a shared two-core machine a second OpenMP thread
    # that has to wait for a busy core makes discovery ten times slower, not faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_model("multitask", device="cpu")
        namespace = f"multitask@test-{uuid.uuid4().hex[:10]}"
        found = {}
        for task in TASKS:
            circuit = discover(DiscoveryRequest(model="multitask", task=task, method="acdc",
                                                threshold=0.01, n_prompts=20, device="cpu",
                                                granularity="neurons"), model=model)
            found[task] = dataclasses.replace(
                circuit, provenance=dataclasses.replace(circuit.provenance, model=namespace))
    finally:
        torch.set_num_threads(threads)
    return found


@pytest.fixture(scope="session")
def real_circuits(store, db, discovered) -> Iterator[dict[str, Circuit]]:
    """The discovered circuits, stored; deleted at the end of the session."""
    model = next(iter(discovered.values())).provenance.model
    for circuit in discovered.values():
        write_circuit(store, circuit, database=db)
    yield discovered
    purge_model(store, db, model)
    assert leftovers(store, db, model) == 0
