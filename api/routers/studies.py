"""``/v1/studies``: submit studies (jobs of kind ``study``: one piece per task x method, run by any
number of workers as a Celery group, every circuit stored once under the study), follow them as a
whole and per piece, read and list the stored ones, cancel or delete them.

A submit is validated by :class:`workers.studyspec.StudySpec` (a bad model, task or method, or too
many pieces, is a 422 naming the field and nothing is queued)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel

from api.deps import ResourcesDep
from api.routers.circuits import MAX_OFFSET
from api.routers.jobs import JobPublic, Progress, submit_job
from api.security import Caller, ReadCaller, WriteCaller
from graphstore.studies import delete_study, list_studies, read_study
from workers.fanout import part_id
from workers.jobs import TERMINAL
from workers.studyspec import StudySpec, piece_name, study_circuit_ids

router = APIRouter(prefix="/v1/studies", tags=["studies"])
StudyId = Annotated[str, Path(min_length=1, max_length=100, description="a study's id (its job's)")]


class PiecePublic(BaseModel):
    """One piece (a job of kind ``study-piece``, also at GET /v1/jobs/{id}): its progress, and
    the worker process that ran it once it finished."""

    id: str
    task: str
    method: str
    state: str
    progress: Progress
    attempts: int = 0
    worker: str | None = None


class StudyPublic(BaseModel):
    """A study: while it runs, its state, whole-study progress (pieces done of all, percent, ETA)
    and each piece's; once stored, its ``summary`` (:func:`discovery.study.summarize`: per task x
    method CPR, CMD, edges and faithfulness at the chosen point, per-method means) and circuits."""

    id: str
    state: str  # queued, running, succeeded, failed, cancelled
    model: str
    spec: dict[str, Any]
    progress: Progress | None = None
    cancel_requested: bool = False
    pieces: list[PiecePublic] = []
    summary: dict[str, Any] | None = None
    circuits: list[dict[str, Any]] | None = None
    error: str | None = None


class StudySummaryPublic(BaseModel):
    id: str
    model: str
    tasks: list[str]
    methods: list[str]
    n_circuits: int
    created_at: float | None = None


class StudyPage(BaseModel):
    total: int
    offset: int
    limit: int
    studies: list[StudySummaryPublic]


def _num(value: str | None, kind: type = float) -> Any:
    return kind(float(value)) if value not in (None, "") else None


def _progress(record: dict[str, str]) -> Progress:
    return Progress(stage=record.get("stage"), done=_num(record.get("done"), int),
                    total=_num(record.get("total"), int), percent=_num(record.get("percent")),
                    eta_s=_num(record.get("eta_s")))


def _job(res: ResourcesDep, study_id: str, caller: Caller) -> dict[str, str] | None:
    """The study's job record when ``caller`` may see it (its own, or an admin key)."""
    record = res.jobs.get(study_id)
    if record is None or record.get("kind") != "study":
        return None
    if record.get("key_id") != caller.key_id and "admin" not in caller.scopes:
        return None
    return record


def _pieces(res: ResourcesDep, study_id: str, spec: dict[str, Any]) -> list[PiecePublic]:
    out = []
    for task in spec["tasks"]:
        for method in spec["methods"]:
            pid = part_id(study_id, piece_name(task, method))
            record = res.jobs.get(pid) or {"state": "queued", "stage": "not recorded yet"}
            out.append(PiecePublic(id=pid, task=task, method=method, state=record["state"],
                                   progress=_progress(record), attempts=_num(record.get("attempts"), int) or 0,
                                   worker=record.get("worker") or None))
    return out


def _not_found(study_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no study with id {study_id!r}; list the "
                                                          "stored ones with GET /v1/studies")


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
def submit(spec: StudySpec, res: ResourcesDep, caller: WriteCaller) -> JobPublic:
    """Queue a study; 202 with its job (follow it at GET /v1/studies/{id}, or GET /v1/jobs/{id})."""
    return submit_job(res, caller, "study", spec)


@router.get("", response_model=StudyPage)
def list_(res: ResourcesDep, caller: ReadCaller,
          model: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
          offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
          limit: Annotated[int, Query(ge=1, le=200)] = 20) -> StudyPage:
    """Stored studies, newest first (of one model when ``model`` is given)."""
    total, rows = list_studies(res.neo4j, database=res.settings.neo4j_database, model=model,
                               offset=offset, limit=limit)
    return StudyPage(total=total, offset=offset, limit=limit, studies=[
        StudySummaryPublic(id=r.id, model=r.model, tasks=list(r.tasks), methods=list(r.methods),
                           n_circuits=r.n_circuits, created_at=r.created_at) for r in rows])


@router.get("/{study_id}", response_model=StudyPublic, responses={404: {"description": "No such study"}})
def get(study_id: StudyId, res: ResourcesDep, caller: ReadCaller) -> StudyPublic:
    """One study: its job's state and progress with each piece's while it runs; its summary and
    circuits once stored."""
    record = _job(res, study_id, caller)
    stored = read_study(res.neo4j, study_id, database=res.settings.neo4j_database)
    if stored is None and (record is None or record["state"] == "succeeded"):  # none, or deleted since
        raise _not_found(study_id)
    spec = stored["spec"] if stored else json.loads(record["spec"])
    return StudyPublic(
        id=study_id, state=record["state"] if record else "succeeded", model=spec["model"], spec=spec,
        progress=_progress(record) if record else None,
        cancel_requested=bool(record) and record.get("cancel") == "1",
        pieces=_pieces(res, study_id, spec) if record else [],
        summary=stored["summary"] if stored else None, circuits=stored["circuits"] if stored else None,
        error=(record or {}).get("error") or None)


@router.delete("/{study_id}", status_code=status.HTTP_202_ACCEPTED, response_model=StudyPublic,
               responses={204: {"description": "The stored study and its circuits were deleted"},
                          404: {"description": "No such study"}})
def delete(study_id: StudyId, res: ResourcesDep, caller: WriteCaller) -> Any:
    """Cancel a study that is queued or running (202 with its state: the whole study stops, its
    pieces too, nothing is stored); delete a stored one and its circuits (204)."""
    record = _job(res, study_id, caller)
    if record is not None and record["state"] not in TERMINAL:
        res.jobs.cancel(study_id)
        return get(study_id, res, caller)
    also: list[str] = []
    if record is not None:
        try:  # the circuits a cancelled or failed study may have stored before its node
            also = study_circuit_ids(StudySpec.model_validate(json.loads(record["spec"])), study_id)
        except ValueError:  # its model was removed since: the linked circuits are still found
            also = []
    if not delete_study(res.neo4j, study_id, database=res.settings.neo4j_database, also=also):
        raise _not_found(study_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
