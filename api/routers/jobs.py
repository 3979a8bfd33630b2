"""``/v1/jobs``: submit a job (sent to Celery by name through Redis) and follow it.

For now the only job kind is ``placeholder``, which writes a small hand-written graph to Neo4j; the
discovery jobs replace it. Job ids are recorded in Redis at submission so that an unknown id is a
404 rather than Celery's indistinguishable "PENDING".
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict

from api.deps import ResourcesDep
from workers.app import DEMO_TASK

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JOB_KEY = "atlas:job:{id}"
_STATES = {"PENDING": "queued", "RECEIVED": "queued", "STARTED": "running", "RETRY": "running",
           "SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "cancelled"}


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["placeholder"] = "placeholder"


class JobPublic(BaseModel):
    id: str
    state: str
    result: dict[str, Any] | None = None
    error: str | None = None


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
def submit(spec: JobCreate, res: ResourcesDep) -> JobPublic:
    result = res.celery.send_task(DEMO_TASK, queue="cpu")
    res.redis.hset(JOB_KEY.format(id=result.id), mapping={"kind": spec.kind, "queue": "cpu"})
    return JobPublic(id=result.id, state="queued")


@router.get("/{job_id}", response_model=JobPublic)
def get(job_id: str, res: ResourcesDep) -> JobPublic:
    if not res.redis.exists(JOB_KEY.format(id=job_id)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with id {job_id!r}")
    outcome = res.celery.AsyncResult(job_id)
    state = _STATES.get(outcome.state, outcome.state.lower())
    if state == "succeeded":
        return JobPublic(id=job_id, state=state, result=outcome.result)
    if state == "failed":
        return JobPublic(id=job_id, state=state, error=repr(outcome.result))
    return JobPublic(id=job_id, state=state)
