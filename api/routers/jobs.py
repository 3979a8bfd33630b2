"""``/v1/jobs``: submit discovery jobs, follow jobs of every kind, list them, cancel them.

A job is recorded in Redis (:class:`workers.jobs.JobStore`) before its task is sent to Celery by
name (the API never imports torch). The record, not Celery's result, is what clients read: it
carries the state, the progress and ETA, the error and the circuit id.

A key sees and cancels its own jobs; a key with the admin scope sees and cancels all of them. Any
other key's job answers 404, as if it did not exist. With Redis unreachable every route answers
503 with a JSON ``detail`` within ``ATLAS_REDIS_TIMEOUT_S`` or so (``api.errors``).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Annotated, Any

import redis
from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel

from api.deps import ResourcesDep
from api.openapi import Problem
from api.routers.circuits import MAX_OFFSET
from api.security import Caller, ReadCaller, WriteCaller
from workers.app import JOB_TASK
from workers.jobspec import JobSpec

log = logging.getLogger(__name__)
JobId = Annotated[str, Path(min_length=1, max_length=100, description="a job's id")]

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class Progress(BaseModel):
    stage: str | None = None
    done: int | None = None
    total: int | None = None
    percent: float | None = None
    eta_s: float | None = None


class JobPublic(BaseModel):
    """A job of any kind. ``result_id``: what it stored once succeeded (a circuit's id for a
    discovery, an experiment's for an experiment, a timeline's for a timeline; all equal the job's
    id); ``circuit_id`` is kept for discovery jobs, ``circuit_ids`` lists an experiment's circuits.
    A timeline runs as ``parts`` (one job per checkpoint, kind ``timeline-checkpoint``, ``parent``
    its timeline job, ``worker`` the process that ran it), readable here like any job."""

    id: str
    kind: str = "discovery"  # discovery, experiment, timeline, timeline-checkpoint, study, study-piece
    state: str  # queued, running, succeeded, failed, cancelled
    spec: dict[str, Any]
    queue: str
    progress: Progress
    attempts: int = 0
    cancel_requested: bool = False
    circuit_id: str | None = None
    result_id: str | None = None
    circuit_ids: list[str] | None = None
    parent: str | None = None
    parts: list[str] | None = None
    worker: str | None = None
    error: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None


class JobPage(BaseModel):
    total: int
    offset: int
    limit: int
    jobs: list[JobPublic]


def _num(value: str | None, kind: type = float) -> Any:
    return kind(float(value)) if value not in (None, "") else None


def _public(record: dict[str, str]) -> JobPublic:
    return JobPublic(
        id=record["id"], kind=record.get("kind") or "discovery", state=record["state"], spec=json.loads(record["spec"]), queue=record["queue"],
        progress=Progress(stage=record.get("stage"), done=_num(record.get("done"), int),
                          total=_num(record.get("total"), int), percent=_num(record.get("percent")),
                          eta_s=_num(record.get("eta_s"))),
        attempts=_num(record.get("attempts"), int) or 0, cancel_requested=record.get("cancel") == "1",
        circuit_id=record.get("circuit_id") or None,
        result_id=record.get("result_id") or record.get("circuit_id") or None,
        circuit_ids=record["circuit_ids"].split(",") if record.get("circuit_ids") else None,
        parent=record.get("parent") or None,
        parts=record["parts"].split(",") if record.get("parts") else None,
        worker=record.get("worker") or None,
        error=record.get("error") or None,
        created_at=float(record["created_at"]), started_at=_num(record.get("started_at")),
        finished_at=_num(record.get("finished_at")),
    )


def _record(res: ResourcesDep, job_id: str, caller: Caller) -> dict[str, str]:
    """The job's record, if ``caller`` may see it (its own job, or an admin key); else 404."""
    record = res.jobs.get(job_id)
    if record is None or not (record.get("key_id") == caller.key_id or "admin" in caller.scopes):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with id {job_id!r}")
    return record


def _send(res: ResourcesDep, job_id: str, queue: str) -> None:
    """Send the job's message; when that fails (Redis went away just after the record was
    written), mark the job failed so it never runs behind the client's back, then re-raise (503).
    Should the mark fail too, the job stays queued and the workers' sweep sends it later."""
    try:
        result = res.celery.send_task(JOB_TASK, args=[job_id], queue=queue)
    except Exception:
        try:
            res.jobs.finish(job_id, "", "failed", stage="failed",
                            error="not queued: the job queue (Redis) became unreachable; submit it again")
        except redis.RedisError:
            log.warning("job %s recorded but not sent; the sweep will send it", job_id)
        raise
    res.jobs.set_task(job_id, result.id)


def submit_job(res: ResourcesDep, caller: Caller, kind: str, spec: Any) -> JobPublic:
    """Record a job of ``kind`` (a key of :data:`workers.kinds.KINDS`) and send it; what every
    submit route does. 429 when the key has too many jobs active."""
    job_id = str(uuid.uuid4())
    queue = spec.queue(res.settings.auto_queue)
    cap = res.settings.max_queued_per_key
    if not res.jobs.create(job_id, spec=spec.model_dump(), key_id=caller.key_id, queue=queue, cap=cap,
                           kind=kind):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            detail=f"this API key already has {cap} jobs queued or running; wait for "
                                   "some to finish or cancel them (ATLAS_MAX_QUEUED_PER_KEY)")
    _send(res, job_id, queue)
    return _public(_record(res, job_id, caller))


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
def submit(spec: JobSpec, res: ResourcesDep, caller: WriteCaller) -> JobPublic:
    """Queue a discovery job; 202 with its id. The job goes to the ``gpu`` queue for device cuda,
    ``cpu`` for cpu, and the configured queue for auto. Experiments: POST /v1/experiments."""
    return submit_job(res, caller, "discovery", spec)


@router.get("", response_model=JobPage)
def list_jobs(res: ResourcesDep, caller: ReadCaller, offset: int = Query(0, ge=0, le=MAX_OFFSET),
              limit: int = Query(20, ge=1, le=200)) -> JobPage:
    """This key's jobs (every key's for an admin key), newest first."""
    key = None if "admin" in caller.scopes else caller.key_id
    total, records = res.jobs.page(offset=offset, limit=limit, key_id=key)
    return JobPage(total=total, offset=offset, limit=limit, jobs=[_public(r) for r in records])


@router.get("/{job_id}", response_model=JobPublic)
def get(job_id: JobId, res: ResourcesDep, caller: ReadCaller) -> JobPublic:
    """One job of this key (of any key, for an admin key)."""
    return _public(_record(res, job_id, caller))


@router.delete("/{job_id}", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED,
               responses={409: {"model": Problem, "description": "The job already finished"}})
def cancel(job_id: JobId, res: ResourcesDep, caller: WriteCaller) -> JobPublic:
    """Cancel: a queued job ends at once; a running one stops within seconds (its state turns
    ``cancelled`` then; ``cancel_requested`` is true meanwhile). 409 for a finished job."""
    _record(res, job_id, caller)  # 404 unless the caller may see it
    outcome = res.jobs.cancel(job_id)
    if outcome == "missing":
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with id {job_id!r}")
    record = _record(res, job_id, caller)
    if outcome not in ("stopped", "cancelling"):
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"job {job_id} already {outcome}; nothing to cancel")
    if outcome == "stopped" and record.get("task_id"):
        try:
            res.celery.control.revoke(record["task_id"])  # workers drop the message unseen
        except Exception:  # noqa: BLE001 - the claim skips a cancelled job anyway; revoke only saves work
            log.warning("could not revoke the message of cancelled job %s", job_id)
    return _public(record)
