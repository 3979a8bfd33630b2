"""Circuit-formation timelines in Neo4j (issue 14; ``graphstore/SCHEMA.md``, section "Timelines").

A timeline (``discovery.timeline.Timeline``: one circuit per checkpoint step and task, the rows
and analyses around them) is stored in ONE write transaction: every circuit exactly as
:func:`graphstore.store.write_circuit` stores it (its transaction function, run inside this
transaction), a ``(:Run {id, recipe, seed, steps, arch})`` node, each checkpoint's ``Model``
linked ``-[:CHECKPOINT_OF {step}]->`` the run, and a ``(:Timeline)`` node holding the whole
``to_dict()`` as JSON, linked to the run and ``-[:AT {step, task}]->`` each circuit. Re-writing
an id replaces it (the timeline's node is locked first, its links rebuilt); a failure anywhere
leaves nothing of it, or the previous version intact.

The checkpoint's Model is the one its circuits already hang off (``provenance.model``, the
checkpoint's directory when discovered by ``discovery.timeline.checkpoints``), so the circuits of a
checkpoint are reached from the run in two hops.

Torch-free and layout-clean: the graph store may import only ``discovery.circuit`` and
``discovery.experiments.result``, and ``discovery.timeline`` imports torch, so this module takes
any object with the Timeline's ``to_dict()``, ``circuits``, ``rows``, ``tasks`` and ``steps``
(:class:`TimelineLike`) and :func:`read_timeline` returns the stored ``to_dict()``; callers that
may import torch rebuild it with ``Timeline.from_dict`` (equal to what was written).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from neo4j import Driver, ManagedTransaction

from discovery.circuit import Circuit
from graphstore import queries, writer
from graphstore import store as circuit_store

#: Properties of the Run node besides its id (None values are left out).
RUN_FIELDS = ("recipe", "seed", "steps", "arch")


class TimelineLike(Protocol):
    """What of ``discovery.timeline.Timeline`` the store uses."""

    tasks: tuple[str, ...]
    method: str
    rows: list[Any]
    circuits: dict[tuple[int, str], Circuit]

    @property
    def steps(self) -> list[int]: ...

    def to_dict(self) -> dict: ...


@dataclass(frozen=True)
class TimelineSummary:
    """One row of :func:`list_timelines`."""

    id: str
    run: str
    tasks: tuple[str, ...]
    steps: tuple[int, ...]
    method: str | None


def _checkpoint_models(timeline: TimelineLike, timeline_id: str) -> list[dict[str, Any]]:
    """``[{model, step}]``: per step the one model id its circuits belong to; ValueError naming
    the (step, task) when a circuit is missing, mislabelled or on another model."""
    where = f"timeline {timeline_id}"
    models: dict[int, str] = {}
    for row in timeline.rows:
        circuit = timeline.circuits.get((row.step, row.task))
        if circuit is None:
            raise ValueError(f"{where}: circuits has no circuit for step {row.step} task {row.task!r}; "
                             "every row needs its circuit")
        if circuit.id != row.circuit_id:
            raise ValueError(f"{where}: rows step {row.step} task {row.task!r}: circuit_id "
                             f"{row.circuit_id!r} but the circuit is {circuit.id!r}")
        model = circuit.provenance.model
        if models.setdefault(row.step, model) != model:
            raise ValueError(f"{where}: step {row.step}: circuits on two models ({models[row.step]!r}, "
                             f"{model!r}); one checkpoint is one model")
    extra = set(timeline.circuits) - {(r.step, r.task) for r in timeline.rows}
    if extra:
        raise ValueError(f"{where}: circuits {sorted(extra)} have no row; give each its Row")
    return [{"model": m, "step": s} for s, m in sorted(models.items())]


def _run_props(run_id: str, timeline: TimelineLike, run: Mapping[str, Any] | None) -> dict[str, Any]:
    run = dict(run or {})
    unknown = set(run) - set(RUN_FIELDS)
    if unknown:
        raise ValueError(f"run: unknown fields {sorted(unknown)}; give only {list(RUN_FIELDS)}")
    run.setdefault("steps", list(timeline.steps))
    return {"id": run_id, **{k: v for k, v in run.items() if v is not None}}


def _write_tx(tx: ManagedTransaction, timeline_id: str, run_props: dict[str, Any],
              checkpoints: list[dict[str, Any]], timeline: TimelineLike, text: str, batch: int) -> None:
    for circuit in timeline.circuits.values():  # each exactly as write_circuit writes it
        writer.write_tx(tx, circuit, batch, None)
    earlier = tx.run(queries.LOCK_TIMELINE, timeline_id=timeline_id).single()
    written = tx.run(queries.MERGE_RUN, run=run_props, checkpoints=checkpoints).single()["written"]
    if written != len(checkpoints):
        raise RuntimeError(f"timeline {timeline_id}: linked {written} of {len(checkpoints)} checkpoints")
    rows = [{"circuit": c.id, "step": s, "task": t} for (s, t), c in sorted(timeline.circuits.items())]
    props = {"id": timeline_id, "run": run_props["id"], "tasks": list(timeline.tasks),
             "steps": list(timeline.steps), "method": timeline.method, "json": text}
    written = tx.run(queries.MERGE_TIMELINE, timeline_id=timeline_id, run_id=run_props["id"],
                     timeline=props, rows=rows).single()["written"]
    if written != len(rows):
        raise RuntimeError(f"timeline {timeline_id}: linked {written} of {len(rows)} circuits")
    tx.run(queries.PRUNE_RUNS, runs=[r for r in earlier["runs"] if r != run_props["id"]]).consume()


def write_timeline(driver: Driver, timeline: TimelineLike, *, run_id: str, database: str,
                   timeline_id: str | None = None, run: Mapping[str, Any] | None = None,
                   batch: int = writer.WRITE_BATCH) -> str:
    """Store ``timeline`` of run ``run_id`` in one transaction, replacing an earlier write of its
    id (default ``run_id``: one timeline per run; give ``timeline_id`` for several). ``run``:
    the Run node's ``recipe``, ``seed``, ``arch`` (and ``steps``, default the timeline's), e.g.
    from the run manifest. Returns the timeline id."""
    if not run_id or not isinstance(run_id, str):
        raise ValueError("run_id: must be a non-empty string, e.g. the run directory's name")
    timeline_id = timeline_id or run_id
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    checkpoints = _checkpoint_models(timeline, timeline_id)
    for circuit in timeline.circuits.values():
        writer.check_circuit(circuit)
    try:
        text = json.dumps(timeline.to_dict(), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"timeline {timeline_id}: not JSON ({exc}); keep plain numbers, strings, "
                         "lists and maps in induction and pairs") from None
    run_props = _run_props(run_id, timeline, run)
    with driver.session(database=database) as session:
        session.execute_write(_write_tx, timeline_id, run_props, checkpoints, timeline, text, batch)
    return timeline_id


def read_timeline(driver: Driver, timeline_id: str, *, database: str) -> dict | None:
    """The stored ``Timeline.to_dict()`` (rebuild with ``Timeline.from_dict``), or None."""
    records, _, _ = driver.execute_query(queries.READ_TIMELINE, timeline_id=timeline_id,
                                         database_=database, routing_="r")
    return json.loads(records[0]["json"]) if records else None


def list_timelines(driver: Driver, *, database: str, run: str | None = None) -> list[TimelineSummary]:
    """Stored timelines (of run ``run`` when given), by id."""
    records, _, _ = driver.execute_query(queries.LIST_TIMELINES, run=run, database_=database,
                                         routing_="r")
    return [TimelineSummary(id=r["id"], run=r["run"], tasks=tuple(r["tasks"] or ()),
                            steps=tuple(r["steps"] or ()), method=r["method"]) for r in records]


def _delete_tx(tx: ManagedTransaction, timeline_id: str, circuits: bool) -> bool:
    ids = [r["id"] for r in tx.run(queries.TIMELINE_CIRCUITS, timeline_id=timeline_id)] if circuits else []
    record = tx.run(queries.DELETE_TIMELINE, timeline_id=timeline_id).single()
    if record is None:
        return False
    tx.run(queries.PRUNE_RUNS, runs=record["runs"]).consume()
    for circuit_id in ids:
        circuit_store._delete_tx(tx, circuit_id)
    return True


def delete_timeline(driver: Driver, timeline_id: str, *, database: str, circuits: bool = False) -> bool:
    """Remove the timeline and its links, and its run when no other timeline uses it;
    ``circuits=True`` also deletes its circuits (as ``delete_circuit`` does). False when there
    was no such timeline."""
    with driver.session(database=database) as session:
        return session.execute_write(_delete_tx, timeline_id, circuits)


def _cookbook(driver: Driver, query: str, database: str, **params: Any) -> list[dict[str, Any]]:
    records, _, _ = driver.execute_query(query, **params, database_=database, routing_="r")
    return [r.data() for r in records]


def first_step_in_circuit(driver: Driver, *, run: str, task: str, component: str, database: str,
                          timeline_id: str | None = None) -> int | None:
    """Cookbook (1): the first step at which ``component`` is in ``task``'s circuit of ``run``."""
    return _cookbook(driver, queries.FIRST_STEP_IN_CIRCUIT, database, run=run, task=task,
                     component=component, timeline_id=timeline_id)[0]["step"]


def moved_components(driver: Driver, *, run: str, first: str, second: str, database: str,
                     timeline_id: str | None = None) -> dict[str, dict[str, int]]:
    """Cookbook (2): ``{component: {"first_at", "moved_at"}}`` (one timeline of the run when
    several: give ``timeline_id``)."""
    rows = _cookbook(driver, queries.MOVED_COMPONENTS, database, run=run, first=first,
                     second=second, timeline_id=timeline_id)
    return {r["component"]: {"first_at": r["first_at"], "moved_at": r["moved_at"]} for r in rows}


def circuit_sizes(driver: Driver, *, run: str, database: str,
                  timeline_id: str | None = None) -> list[dict[str, Any]]:
    """Cookbook (3): ``[{timeline, task, step, circuit, n_nodes, n_edges}]`` by task and step."""
    return _cookbook(driver, queries.CIRCUIT_SIZES, database, run=run, timeline_id=timeline_id)
