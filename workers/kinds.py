"""Every kind of job, as an entry in one table: what its spec is, what it runs, what it stores and
how a cancel that arrives while storing is undone. The claim, heartbeat, progress, cancel, outage
handling and sweep around them are :mod:`workers.machinery`'s, the same for every kind; a new kind
of job is a new entry in :data:`KINDS`, nothing more.

Each ``run`` gets the validated spec, the job id and the :class:`~workers.machinery.JobRun` (for
``stage``/``progress``/``check``), does its work with the graph store through
:func:`~workers.machinery.with_store`, and returns the fields to record on success (``result_id``:
what it stored, under the job's id, so however often a job runs one copy is stored).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from neo4j import Driver
from pydantic import BaseModel

from discovery.experiments.result import discovered_circuit_id
from graphstore.store import delete_circuit, read_circuit, write_circuit
from workers.experimentspec import ExperimentSpec
from workers.fanout import FanOut, Part, part_id
from workers.jobspec import JobSpec
from workers.machinery import JobRun, cached_model, with_store
from workers.settings import Settings
from workers.studyrun import run_piece, run_study, undo_study
from workers.studyspec import PieceSpec, StudySpec
from workers.timelinespec import CheckpointSpec, TimelineSpec


@dataclass(frozen=True)
class JobKind:
    """One kind of job. ``what`` names what it stores, in messages to users."""

    name: str
    spec: type[BaseModel]
    run: Callable[[Any, str, JobRun, Settings], dict[str, Any]]
    undo: Callable[[Driver, Any, str, Settings], None]
    what: str
    #: where a user deletes what it stored, when a cancel could not undo it ("" when it stores nothing)
    delete_route: str = ""


def _device_model(spec: JobSpec | ExperimentSpec, run: JobRun):  # noqa: ANN202 - LoadedModel (torch)
    from discovery.models import resolve_device

    run.stage("loading model")
    device = resolve_device(spec.device)
    return device, cached_model(spec.model, device)


# -- discovery ---------------------------------------------------------------------------------
def run_discovery(spec: JobSpec, job_id: str, run: JobRun, settings: Settings) -> dict[str, Any]:
    from discovery.discover import DiscoveryRequest, discover

    device, model = _device_model(spec, run)
    request = DiscoveryRequest(
        model=spec.model, task=spec.task_name, method=spec.method, threshold=spec.threshold,
        top_n=spec.top_n, metric=spec.metric, ablation=spec.ablation, n_prompts=spec.n_prompts,
        seed=spec.seed, device=device, ig_steps=spec.ig_steps, granularity=spec.granularity,
        dtype=spec.dtype, max_batch_memory=spec.max_batch_memory or settings.max_batch_memory,
        kv_inputs=spec.kv_inputs, edge_order=spec.edge_order,
    )
    run.stage("searching")
    data = spec.custom_task()
    circuit = replace(discover(request, progress=run.progress, model=model, data=data), id=job_id)
    if spec.stability:
        from discovery.stability import stability

        run.stage(f"stability: {spec.stability} edge orders, {spec.stability} prompt draws")
        circuit = replace(circuit, stability=stability(request, circuit, orders=spec.stability,
                                                       resamples=spec.stability, model=model, data=data,
                                                       progress=run.progress))
    run.stage("storing")
    with_store(run, settings, lambda driver: write_circuit(driver, circuit, database=settings.neo4j_database))
    return {"result_id": circuit.id, "circuit_id": circuit.id}


def undo_discovery(driver: Driver, spec: JobSpec, job_id: str, settings: Settings) -> None:
    delete_circuit(driver, job_id, database=settings.neo4j_database)


# -- competition experiments -------------------------------------------------------------------
def _given_circuits(spec: ExperimentSpec, run: JobRun, settings: Settings) -> dict | None:
    """The stored circuits the spec names, by task; ValueError when one was deleted since submit."""
    if spec.circuits is None:
        return None
    run.stage("reading circuits")
    db = settings.neo4j_database
    found = with_store(run, settings, lambda d: {cid: read_circuit(d, cid, database=db) for cid in spec.circuits},
                       what="experiment")
    missing = [f"circuits[{i}] {cid!r}" for i, cid in enumerate(spec.circuits) if found[cid] is None]
    if missing:
        raise ValueError(f"{', '.join(missing)}: no longer stored (deleted after the experiment was "
                         "submitted); submit it again with stored circuits")
    return {task: found[cid] for task, cid in zip(spec.task_names, spec.circuits, strict=True)}


def run_experiment(spec: ExperimentSpec, job_id: str, run: JobRun, settings: Settings) -> dict[str, Any]:
    from discovery.experiments.conflicts import parse_conflicts
    from discovery.experiments.run import ExperimentRequest, compete
    from graphstore.experiments import write_experiment

    device, model = _device_model(spec, run)
    circuits = _given_circuits(spec, run, settings)
    conflicts = {key: parse_conflicts(raw, tuple(key.split("|")), where=f"conflicts.{key}")
                 for key, raw in (spec.conflicts or {}).items()}
    request = ExperimentRequest(
        model=spec.model, tasks=tuple(spec.task_names), ablation=spec.ablation, n_prompts=spec.n_prompts,
        n_controls=spec.n_controls, seed=spec.seed, alphas=tuple(spec.alphas), n_conflicts=spec.n_conflicts,
        device=device, method=spec.method, threshold=spec.threshold, metric=spec.metric,
        ig_steps=spec.ig_steps,
    )
    result = compete(request, circuits=circuits, model=model, task_data=spec.custom_tasks() or None,
                     conflicts=conflicts or None, progress=run.progress, stage=run.stage,
                     experiment_id=job_id)
    run.stage("storing")
    db = settings.neo4j_database

    def store(driver: Driver) -> None:
        for circuit in result.discovered.values():  # the circuits first: the experiment links to them
            write_circuit(driver, circuit, database=db)
        write_experiment(driver, result.experiment, database=db)

    with_store(run, settings, store, what="experiment")
    return {"result_id": job_id, "experiment_id": job_id,
            "circuit_ids": ",".join(result.experiment.circuits[t] for t in result.experiment.tasks)}


def undo_experiment(driver: Driver, spec: ExperimentSpec, job_id: str, settings: Settings) -> None:
    """Delete the experiment, then the circuits it discovered (given circuits stay)."""
    from graphstore.experiments import delete_experiment

    db = settings.neo4j_database
    delete_experiment(driver, job_id, database=db)
    if spec.circuits is None:
        for task in spec.task_names:
            delete_circuit(driver, discovered_circuit_id(job_id, task), database=db)


# -- formation timelines: one part per checkpoint (workers.fanout), stored once by the parent ---
def timeline_circuit_id(timeline_id: str, step: int, task: str) -> str:
    """The id of a timeline's circuit: the same however often the job runs."""
    return f"{timeline_id}.step-{step}.{task}"


def run_checkpoint(spec: CheckpointSpec, job_id: str, run: JobRun, settings: Settings) -> dict[str, Any]:
    """One checkpoint: its circuit of every task and the induction diagnostics, returned in the
    record (``payload``, JSON) for the parent to store; nothing is stored here."""
    from discovery.models import resolve_device
    from discovery.timeline import checkpoint_circuits

    tasks = spec.timeline.tasks
    run.stage(f"step {spec.step}: loading checkpoint")
    run.fields["circuits_done"] = 0

    def searching(i: int, done: int, total: int) -> None:
        if not str(run.fields.get("stage", "")).startswith(f"step {spec.step}: {tasks[i]}"):
            run.stage(f"step {spec.step}: {tasks[i]} ({i + 1} of {len(tasks)})")
        run.progress(done, total)

    def finished(i: int, task: str) -> None:
        run.fields["circuits_done"] = i + 1
        run.progress(i + 1, len(tasks))

    circuits, diagnostics = checkpoint_circuits(
        spec.path, tasks, spec.timeline.params(), device=resolve_device(spec.timeline.device),
        circuit_id=lambda task: timeline_circuit_id(spec.parent, spec.step, task),
        progress=searching, done=finished)
    payload = {"step": spec.step, "circuits": {t: c.to_dict() for t, c in circuits.items()},
               "induction": diagnostics}
    return {"result_id": job_id, "payload": json.dumps(payload),
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


def run_timeline(spec: TimelineSpec, job_id: str, run: JobRun, settings: Settings) -> dict[str, Any]:
    """Every checkpoint of the run as a part (in parallel where several workers run), then the
    timeline assembled from their results and stored in one transaction."""
    from discovery.circuit import Circuit
    from discovery.timeline import assemble
    from graphstore.timelines import write_timeline

    run.stage("reading the run")
    trained = spec.read()
    parts = [Part(part_id(job_id, f"step-{c.step}"),
                  CheckpointSpec(parent=job_id, step=c.step, path=str(c.path), timeline=spec),
                  units=len(spec.tasks)) for c in trained.checkpoints]
    fan = FanOut(run, "timeline-checkpoint", parts,
                 units_done=lambda fields: int(fields.get("circuits_done") or 0))
    fan.start()
    run.stage("discovering")
    records = fan.wait()
    run.stage("assembling")
    circuits, diagnostics = {}, {}
    for part in parts:
        payload = json.loads(records[part.id]["payload"])
        circuits.update({(payload["step"], t): Circuit.from_dict(c) for t, c in payload["circuits"].items()})
        if payload["induction"] is not None:
            diagnostics[payload["step"]] = payload["induction"]
    result = assemble(trained, spec.tasks, spec.params(), circuits, diagnostics)
    run.stage("storing")
    db, about = settings.neo4j_database, {"recipe": trained.recipe, "seed": trained.seed, "arch": trained.arch}
    with_store(run, settings, lambda d: write_timeline(d, result, run_id=spec.run, database=db,
                                                       timeline_id=job_id, run=about), what="timeline")
    return {"result_id": job_id, "parts": ",".join(p.id for p in parts),
            "workers": ",".join(sorted({records[p.id].get("worker", "") for p in parts}))}


def undo_timeline(driver: Driver, spec: TimelineSpec, job_id: str, settings: Settings) -> None:
    from graphstore.timelines import delete_timeline

    delete_timeline(driver, job_id, database=settings.neo4j_database, circuits=True)


def undo_nothing(driver: Driver, spec: Any, job_id: str, settings: Settings) -> None:
    """A part stores nothing (its parent stores the whole)."""


KINDS: dict[str, JobKind] = {
    "discovery": JobKind("discovery", JobSpec, run_discovery, undo_discovery, "circuit",
                         "DELETE /v1/circuits"),
    "experiment": JobKind("experiment", ExperimentSpec, run_experiment, undo_experiment, "experiment",
                          "DELETE /v1/experiments"),
    "timeline": JobKind("timeline", TimelineSpec, run_timeline, undo_timeline, "timeline",
                        "DELETE /v1/timelines"),
    "timeline-checkpoint": JobKind("timeline-checkpoint", CheckpointSpec, run_checkpoint, undo_nothing,
                                   "checkpoint's circuits"),
    "study": JobKind("study", StudySpec, run_study, undo_study, "study", "DELETE /v1/studies"),
    "study-piece": JobKind("study-piece", PieceSpec, run_piece, undo_nothing, "piece's circuits"),
}


def kind_of(record: dict[str, str]) -> JobKind:
    """The kind of a job record (records written before kinds existed are discoveries)."""
    return KINDS[record.get("kind") or "discovery"]
