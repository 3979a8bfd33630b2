"""Studies in the real Neo4j (graphstore.studies): the Study node with its spec and summary linked
to its circuits in one transaction, a rewrite that replaces the links, a write naming a missing
circuit that leaves the earlier version intact, listing, and a delete that takes the circuits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from discovery.circuit import Circuit, Edge, Metrics, Node, Provenance
from graphstore.store import read_circuit, write_circuit
from graphstore.studies import (
    StudyLink,
    delete_study,
    ensure_study_schema,
    list_studies,
    read_study,
    write_study,
)

from .conftest import leftovers
from .reference import SMALL


def _circuit(cid: str, model: str, task: str, head: str, threshold: float) -> Circuit:
    edges = (Edge.parse(f"embed->{head}<q>", 0.5), Edge.parse(f"{head}->logits", 0.4))
    return Circuit(id=cid, nodes=tuple(Node.parse(n) for n in ("embed", head, "logits")), edges=edges,
                   metrics=Metrics(full=2.0, empty=0.1, circuit=1.5, name="logit_diff"),
                   provenance=Provenance(model=model, task=task, method="eap", threshold=threshold),
                   graph=SMALL, curve={"cpr": 0.9, "cmd": 0.1, "points": []})


@pytest.fixture
def study(store, db) -> Iterator[tuple[str, str, list[Circuit]]]:
    """(study id, its model, three stored circuits: ioi at the chosen point and a grid point, induction)."""
    ensure_study_schema(store, database=db)
    sid, model = f"st-{uuid.uuid4().hex[:10]}", f"studymodel-{uuid.uuid4().hex[:6]}"
    circuits = [_circuit(f"{sid}.ioi.eap", model, "ioi", "a0.h1", 0.01),
                _circuit(f"{sid}.ioi.eap.t0.1", model, "ioi", "a0.h1", 0.1),
                _circuit(f"{sid}.induction.eap", model, "induction", "a0.h2", 0.01)]
    for c in circuits:
        write_circuit(store, c, database=db)
    yield sid, model, circuits
    delete_study(store, sid, database=db, also=[c.id for c in circuits])
    assert leftovers(store, db, model) == 0


def _links(circuits: list[Circuit]) -> list[StudyLink]:
    return [StudyLink(c.id, c.provenance.task, "eap", c.provenance.threshold, chosen=not c.id.endswith("t0.1"))
            for c in circuits]


def _count(store, db: str, sid: str) -> int:
    return store.execute_query("MATCH (:Study {id: $id})-[h:HAS_CIRCUIT]->() RETURN count(h) AS n",
                               id=sid, database_=db)[0][0]["n"]


def test_write_reads_back_and_lists(store, db, study):
    sid, model, circuits = study
    spec, summary = {"model": model, "tasks": ["ioi", "induction"], "methods": ["eap"]}, {"rows": [1, 2]}
    assert write_study(store, study_id=sid, model=model, spec=spec, summary=summary, links=_links(circuits),
                       database=db) == sid
    back = read_study(store, sid, database=db)
    assert back["spec"] == spec and back["summary"] == summary and back["model"] == model
    assert [c["id"] for c in back["circuits"]] == [f"{sid}.induction.eap", f"{sid}.ioi.eap", f"{sid}.ioi.eap.t0.1"]
    assert [c["chosen"] for c in back["circuits"]] == [True, True, False]
    total, rows = list_studies(store, database=db, model=model)
    assert total == 1 and rows[0].id == sid and rows[0].n_circuits == 3 and rows[0].methods == ("eap",)


def test_rewrite_replaces_links_and_a_missing_circuit_writes_nothing(store, db, study):
    sid, model, circuits = study
    write_study(store, study_id=sid, model=model, spec={}, summary={"v": 1}, links=_links(circuits), database=db)
    write_study(store, study_id=sid, model=model, spec={}, summary={"v": 2}, links=_links(circuits[:1]), database=db)
    assert _count(store, db, sid) == 1 and read_study(store, sid, database=db)["summary"] == {"v": 2}
    missing = [*_links(circuits), StudyLink(f"{sid}.nope.eap", "nope", "eap", 0.01)]
    with pytest.raises(RuntimeError, match="linked 3 of 4 circuits"):
        write_study(store, study_id=sid, model=model, spec={}, summary={"v": 3}, links=missing, database=db)
    assert _count(store, db, sid) == 1 and read_study(store, sid, database=db)["summary"] == {"v": 2}
    with pytest.raises(ValueError, match="linked twice"):
        write_study(store, study_id=sid, model=model, spec={}, summary={}, links=_links(circuits) * 2, database=db)


def test_delete_takes_the_circuits_linked_and_named(store, db, study):
    sid, model, circuits = study
    write_study(store, study_id=sid, model=model, spec={}, summary={}, links=_links(circuits[:2]), database=db)
    # the third is not linked (stored before a cancel): named in ``also``, it goes too
    assert delete_study(store, sid, database=db, also=[circuits[2].id]) is True
    assert read_study(store, sid, database=db) is None
    assert all(read_circuit(store, c.id, database=db) is None for c in circuits)
    assert delete_study(store, sid, database=db) is False
