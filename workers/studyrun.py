"""What the two kinds of study job run (their entries are ``study`` and ``study-piece`` in
:data:`workers.kinds.KINDS`): a piece discovers one (task, method)'s circuits and the chosen
circuit's faithfulness curve and returns them in its record; the study sends its pieces as one
Celery group (:class:`workers.fanout.FanOut`), runs those no worker took, then stores every circuit
once and the study node with its summary. Ids are deterministic, so a study that runs again after
a crash stores each circuit exactly once."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from typing import Any

from neo4j import Driver

from workers.fanout import FanOut, Part, part_id
from workers.machinery import JobRun, cached_model, with_store
from workers.settings import Settings
from workers.studyspec import PieceSpec, StudySpec, piece_name, study_circuit_id, study_circuit_ids


def _request(spec: PieceSpec, device: str, settings: Settings):  # noqa: ANN202 - DiscoveryRequest (torch)
    from discovery.discover import DiscoveryRequest

    study = spec.study
    return DiscoveryRequest(model=study.model, task=spec.task, method=spec.method,
                            threshold=study.chosen(spec.method), ablation=study.ablation,
                            n_prompts=study.n_prompts, seed=study.seed, device=device,
                            max_batch_memory=settings.max_batch_memory, edge_order=study.edge_order)


def run_piece(spec: PieceSpec, job_id: str, run: JobRun, settings: Settings) -> dict[str, Any]:
    """One (task, method): its circuit at every point (the chosen one first, with its curve on
    held-out prompts attached), returned in the record (``payload``, JSON); nothing is stored."""
    from discovery.curves import held_out_curve
    from discovery.discover import discover, discover_sweep
    from discovery.models import resolve_device

    where, study = f"{spec.task} x {spec.method}", spec.study
    run.stage(f"{where}: loading model")
    device = resolve_device(study.device)
    model = cached_model(study.model, device)
    request = _request(spec, device, settings)
    points = study.points(spec.method)
    run.stage(f"{where}: searching" + (f" at {len(points)} thresholds" if len(points) > 1 else ""))
    if len(points) == 1:
        found = [discover(request, progress=run.progress, model=model)]
    else:  # one search shared by every threshold where the method allows
        found = discover_sweep(request, points, progress=run.progress, model=model)
    run.stage(f"{where}: faithfulness curve")
    curve = held_out_curve(model, request, found[0].edge_scores, study.fractions)  # prompts: seed + 1
    chosen = replace(found[0], id=study_circuit_id(spec.parent, spec.task, spec.method), curve=curve.to_dict())
    if study.stability:
        from discovery.stability import stability

        run.stage(f"{where}: stability ({study.stability} edge orders, {study.stability} prompt draws)")
        chosen = replace(chosen, stability=stability(request, chosen, orders=study.stability,
                                                     resamples=study.stability, model=model,
                                                     progress=run.progress))
    circuits = [chosen]
    circuits += [replace(c, id=study_circuit_id(spec.parent, spec.task, spec.method, t))
                 for c, t in zip(found[1:], points[1:], strict=True)]
    payload = {"task": spec.task, "method": spec.method, "circuits": [c.to_dict() for c in circuits]}
    return {"result_id": job_id, "payload": json.dumps(payload),
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


def study_parts(spec: StudySpec, study_id: str) -> list[Part]:
    """One part per (task, method), task-major; each part's job id is its chosen circuit's id."""
    return [Part(part_id(study_id, piece_name(task, method)),
                 PieceSpec(parent=study_id, task=task, method=method, study=spec), units=1)
            for task in spec.tasks for method in spec.methods]


def _collect(spec: StudySpec, parts: list[Part], records: dict[str, dict[str, str]]):  # noqa: ANN202
    """(pieces for the summary, every circuit to store, the study's links) from the parts' records."""
    from discovery.circuit import Circuit
    from discovery.study import Piece
    from graphstore.studies import StudyLink

    pieces, circuits, links = [], [], []
    for part in parts:
        payload = json.loads(records[part.id]["payload"])
        found = [Circuit.from_dict(c) for c in payload["circuits"]]
        task, method = payload["task"], payload["method"]
        pieces.append(Piece(task, method, found[0], tuple(c.id for c in found[1:])))
        circuits += found
        links += [StudyLink(c.id, task, method, c.provenance.threshold, chosen=i == 0) for i, c in enumerate(found)]
    return pieces, circuits, links


def run_study(spec: StudySpec, job_id: str, run: JobRun, settings: Settings) -> dict[str, Any]:
    """Every piece (in parallel where several workers run), then the summary, every circuit and
    the study node stored (the node in one transaction, after its circuits)."""
    from discovery.study import summarize
    from graphstore.store import write_circuit
    from graphstore.studies import ensure_study_schema, write_study

    parts = study_parts(spec, job_id)
    fan = FanOut(run, "study-piece", parts, units_done=lambda fields: 0)  # progress: pieces done
    fan.start()
    run.stage("discovering")
    records = fan.wait()
    run.stage("summarising")
    pieces, circuits, links = _collect(spec, parts, records)
    summary = summarize(spec.model, spec.tasks, spec.methods, pieces)
    run.stage("storing")
    db = settings.neo4j_database

    def store(driver: Driver) -> None:
        ensure_study_schema(driver, database=db)
        for circuit in circuits:  # each replaces an earlier write of its id: stored once
            write_circuit(driver, circuit, database=db)
        write_study(driver, study_id=job_id, model=spec.model, spec=spec.model_dump(), summary=summary,
                    links=links, database=db)

    with_store(run, settings, store, what="study")
    return {"result_id": job_id, "parts": ",".join(p.id for p in parts),
            "circuit_ids": ",".join(r["circuit_id"] for r in summary["rows"]),
            "workers": ",".join(sorted({records[p.id].get("worker", "") for p in parts}))}


def undo_study(driver: Driver, spec: StudySpec, job_id: str, settings: Settings) -> None:
    """Delete the study node and every circuit it stored (also those stored before its node)."""
    from graphstore.studies import delete_study

    delete_study(driver, job_id, database=settings.neo4j_database, also=study_circuit_ids(spec, job_id))
