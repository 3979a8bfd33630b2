"""Celery tasks: the one entry point every kind of job runs through, and the recovery sweep.

Loaded only in worker processes (``include`` in :func:`workers.app.run_worker`), so torch loads
there and never in the API.

A job runs under a *claim* (:class:`workers.jobs.JobStore`): a heartbeat thread keeps it fresh and
watches for a cancel (:class:`workers.machinery.JobRun`). If the worker dies, the beat stops; the
sweep every worker runs (:mod:`workers.sweep`) re-queues the job and some worker runs it again.
What a job stores carries the job's id and the store replaces on write, so however often a job
runs, one copy is stored. The record's ``kind`` picks the entry of :data:`workers.kinds.KINDS`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from celery import group, shared_task
from celery.signals import worker_ready

from workers.app import DISCOVER_TASK, JOB_TASK, PING_TASK
from workers.kinds import JobKind, kind_of
from workers.machinery import (
    BEAT_S,
    JobCancelled,
    JobRun,
    StoreUnavailable,
    failure,
    job_store,
    with_store,
)
from workers.settings import Settings, get_settings
from workers.sweep import Sweeper

log = logging.getLogger(__name__)


@shared_task(name=PING_TASK)
def ping(payload: dict | None = None) -> dict:
    """Echo ``payload`` with the identity of the process that ran it (proves a real worker)."""
    return {"payload": payload, "pid": os.getpid(), "ppid": os.getppid(), "host": socket.gethostname()}


def _attempt(job_id: str, kind: JobKind, record: dict[str, str], run: JobRun,
             settings: Settings) -> tuple[str | None, dict[str, Any]]:
    """Run the job; (state to record, fields), or (None, {}) when another runner owns it now."""
    try:
        spec = kind.spec.model_validate_json(record["spec"])
        fields = kind.run(spec, job_id, run, settings)
        return "succeeded", {**fields, "stage": "done", "percent": 100}
    except JobCancelled:
        return (None, {}) if run.lost.is_set() else ("cancelled", {"stage": "cancelled"})
    except StoreUnavailable as exc:
        return "failed", {"error": str(exc), "stage": f"failed: {kind.what} store unreachable"}
    except ValueError as exc:  # bad input found late (a custom task the tokenizer rejects ...)
        return "failed", {"error": str(exc), "stage": "failed"}
    except Exception as exc:  # noqa: BLE001 - recorded on the job; the traceback goes to the log
        log.exception("job %s failed", job_id)
        return "failed", {"error": failure(exc, str(run.fields.get("stage", "starting")), kind.what),
                          "stage": "failed"}


def run_job(task_id: str, job_id: str, *, parent: JobRun | None = None,
            watch: Callable[[JobRun], None] | None = None) -> dict:
    """Run job ``job_id`` of any kind: claim it, run its kind's work, finish. ``parent`` and
    ``watch``: a part of a fan-out job run inside its parent (:class:`JobRun`'s)."""
    settings, jobs = get_settings(), job_store()
    runner = f"{task_id}/{uuid.uuid4().hex[:8]}"
    claim = jobs.claim(job_id, runner, stale_s=settings.job_stale_s, since=jobs.redis_started())
    if claim != "ok":  # finished, cancelled, or alive elsewhere: a stale delivery, nothing to do
        return {"job_id": job_id, "skipped": claim}
    with JobRun(jobs, job_id, runner, settings, parent=parent, watch=watch) as run:
        record = run.redis_call(lambda: jobs.get(job_id))
        kind = kind_of(record)
        state, fields = _attempt(job_id, kind, record, run, settings)
        if state is None or (answer := run.finish(state, **fields)) == "lost":
            return {"job_id": job_id, "skipped": "lost"}
        if answer == "cancel":  # success refused: a cancel arrived while storing
            return _undo_for_cancel(job_id, kind, record, run, settings)
    return {"job_id": job_id, "state": state, "result_id": fields.get("result_id")}


@shared_task(name=JOB_TASK, bind=True)
def job(self, job_id: str) -> dict:  # noqa: ANN001 - Celery's bound task
    return run_job(self.request.id, job_id)


@shared_task(name=DISCOVER_TASK, bind=True)
def discover_job(self, job_id: str) -> dict:  # noqa: ANN001 - Celery's bound task
    """The task name discovery jobs were sent under before job kinds: messages still queued
    under it run like any job."""
    return run_job(self.request.id, job_id)


def send_parts(job_ids: list[str], queue: str) -> None:
    """Send the parts of a fan-out job as one Celery group, so idle workers take them in parallel
    (each part's record says which message carries it, as for any job)."""
    jobs = job_store()
    sent = group(job.signature(args=(job_id,), queue=queue) for job_id in job_ids).apply_async()
    for job_id, result in zip(job_ids, sent.results, strict=True):
        jobs.set_task(job_id, result.id)


def _undo_for_cancel(job_id: str, kind: JobKind, record: dict[str, str], run: JobRun,
                     settings: Settings) -> dict:
    """A cancel arrived while the result was being stored: delete it, then record the cancel."""
    error = ""
    spec = kind.spec.model_validate_json(record["spec"])
    try:
        with_store(run, settings, lambda d: kind.undo(d, spec, job_id, settings), stoppable=False,
                   what=kind.what)
    except StoreUnavailable:
        error = (f"cancelled after its {kind.what} was stored; Neo4j was unreachable, so the "
                 f"{kind.what} is still there: delete it with {kind.delete_route}/{job_id}")
    run.finish("cancelled", stage="cancelled", error=error)
    return {"job_id": job_id, "state": "cancelled"}


def sweeper(app=None) -> Sweeper:  # noqa: ANN001 - a Celery app; the task's own by default
    """A :class:`workers.sweep.Sweeper` that sends through ``app``."""
    settings, celery_app = get_settings(), app or job.app

    def send(record: dict[str, str]) -> str:
        return celery_app.send_task(JOB_TASK, args=[record["id"]], queue=record["queue"]).id

    return Sweeper(job_store(), send, stale_s=settings.job_stale_s, resend_s=settings.job_resend_s,
                   probe_s=min(BEAT_S, settings.job_stale_s / 4))


@worker_ready.connect
def _start_sweep(sender=None, **_: object) -> None:  # noqa: ANN001
    """Every worker sweeps for abandoned and lost jobs, from its start on, in a daemon thread."""
    sweep = sweeper(getattr(sender, "app", None))
    threading.Thread(target=sweep.run, args=(threading.Event(),), name="atlas-job-sweep", daemon=True).start()
