"""Studies in Neo4j (issue 15; Cypher in :mod:`graphstore.queries.studies`).

A study's circuits are stored one by one with :func:`graphstore.store.write_circuit` (each its own
transaction, replacing an earlier write of its id), then :func:`write_study` writes the
``(:Study)`` node, its spec and summary (JSON) and its ``HAS_CIRCUIT`` links in ONE write
transaction. Ids are deterministic (``{study}.{task}.{method}`` ...), so a study that runs twice
stores each circuit and its node exactly once. Torch-free: the summary is a plain dict
(:func:`discovery.study.summarize`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neo4j import Driver, ManagedTransaction

from graphstore import store as circuit_store
from graphstore.queries import studies as q


@dataclass(frozen=True)
class StudyLink:
    """One circuit of a study: its id, piece (task, method), threshold, and whether it is the
    piece's chosen point (False: a grid point)."""

    circuit: str
    task: str
    method: str
    threshold: float | None
    chosen: bool = True


@dataclass(frozen=True)
class StudyRow:
    """One row of :func:`list_studies`."""

    id: str
    model: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    n_circuits: int
    created_at: float | None


def ensure_study_schema(driver: Driver, *, database: str) -> None:
    """The Study id constraint, IF NOT EXISTS (safe at every start)."""
    for statement in q.STUDY_SCHEMA:
        driver.execute_query(statement, database_=database)


def _read(driver: Driver, database: str, query: str, **params: Any) -> list[dict[str, Any]]:
    """The rows of one read query, in a read transaction (READ routing)."""
    def work(tx: ManagedTransaction) -> list[dict[str, Any]]:
        return [record.data() for record in tx.run(query, **params)]

    with driver.session(database=database, default_access_mode="READ") as session:
        return session.execute_read(work)


def _write_tx(tx: ManagedTransaction, study: dict[str, Any], rows: list[dict[str, Any]]) -> int:
    return tx.run(q.MERGE_STUDY, study=study, rows=rows).single()["written"]


def write_study(driver: Driver, *, study_id: str, model: str, spec: dict[str, Any],
                summary: dict[str, Any], links: Sequence[StudyLink], database: str) -> str:
    """Store the study node linked to ``links``' circuits (already stored) in one transaction,
    replacing an earlier write of ``study_id``; RuntimeError when a linked circuit is missing
    (nothing is written then). Returns the id."""
    if not study_id or not isinstance(study_id, str):
        raise ValueError("study_id: must be a non-empty string (the study job's id)")
    ids = [link.circuit for link in links]
    if len(set(ids)) != len(ids):
        raise ValueError("links: a circuit is linked twice; link each once")
    study = {"id": study_id, "model": model, "spec": json.dumps(spec, sort_keys=True),
             "summary": json.dumps(summary, sort_keys=True)}
    rows = [{"circuit": link.circuit, "task": link.task, "method": link.method,
             "threshold": link.threshold, "chosen": link.chosen} for link in links]

    def tx_fn(tx: ManagedTransaction) -> None:
        written = _write_tx(tx, study, rows)
        if written != len(rows):  # raising rolls the transaction back: no half-linked study
            raise RuntimeError(f"study {study_id}: linked {written} of {len(rows)} circuits; store "
                               "every circuit before the study")

    with driver.session(database=database) as session:
        session.execute_write(tx_fn)
    return study_id


def read_study(driver: Driver, study_id: str, *, database: str) -> dict[str, Any] | None:
    """``{id, model, spec, summary, created_at, circuits: [{id, task, method, threshold, chosen}]}``
    (circuits by task, method, chosen first), or None."""
    records = _read(driver, database, q.READ_STUDY, study_id=study_id)
    if not records:
        return None
    r = records[0]
    circuits = sorted(r["circuits"], key=lambda c: (c["task"], c["method"], not c["chosen"], c["id"]))
    return {"id": r["id"], "model": r["model"], "spec": json.loads(r["spec"]),
            "summary": json.loads(r["summary"]), "created_at": r["created_at"], "circuits": circuits}


def list_studies(driver: Driver, *, database: str, model: str | None = None, offset: int = 0,
                 limit: int = 20) -> tuple[int, list[StudyRow]]:
    """(total, a page of stored studies, newest first), of ``model`` when given."""
    total = _read(driver, database, q.COUNT_STUDIES, model=model)
    records = _read(driver, database, q.LIST_STUDIES, model=model, offset=offset, limit=limit)
    rows = []
    for r in records:
        spec = json.loads(r["spec"])
        rows.append(StudyRow(id=r["id"], model=r["model"], tasks=tuple(spec.get("tasks") or ()),
                             methods=tuple(spec.get("methods") or ()), n_circuits=r["n_circuits"],
                             created_at=r["created_at"]))
    return total[0]["n"], rows


def _delete_tx(tx: ManagedTransaction, study_id: str, circuits: bool, also: list[str]) -> bool:
    ids = [r["id"] for r in tx.run(q.STUDY_CIRCUITS, study_id=study_id, also=also)] if circuits else []
    found = tx.run(q.DELETE_STUDY, study_id=study_id).single() is not None
    for circuit_id in ids:  # each as delete_circuit deletes it, in this one transaction
        circuit_store._delete_tx(tx, circuit_id)
    return found or bool(ids)


def delete_study(driver: Driver, study_id: str, *, database: str, circuits: bool = True,
                 also: Sequence[str] = ()) -> bool:
    """Remove the study and (by default) its circuits, plus the circuits ``also`` names (those a
    study stored before its node, when a cancel undoes it). False when nothing was there."""
    with driver.session(database=database) as session:
        return session.execute_write(_delete_tx, study_id, circuits, list(also))
