"""Celery tasks: thin glue from a job id to discovery and the graph store, progress out.

Loaded only in worker processes (``include`` in :func:`workers.app.run_worker`), so torch loads
there and never in the API.

A job runs under a *claim* (:class:`workers.jobs.JobStore`): a heartbeat thread keeps it fresh and
watches for a cancel. If the worker dies, the beat stops; the sweep every worker runs re-queues
the job and some worker runs it again. The circuit's id is the job's id and the store replaces on
write, so however often a job runs, one circuit is stored.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import replace
from functools import lru_cache

from celery import shared_task
from celery.signals import worker_ready
from neo4j import Driver, GraphDatabase

from graphstore.store import delete_circuit, ensure_schema, write_circuit
from workers.app import DISCOVER_TASK, PING_TASK
from workers.jobs import JobStore
from workers.jobspec import JobSpec
from workers.settings import get_settings

log = logging.getLogger(__name__)
BEAT_S = 1.0  # heartbeat period; a cancel is seen within this


class JobCancelled(Exception):
    """Raised inside the discovery loop when the job's cancel flag is seen."""


@lru_cache(maxsize=1)
def _driver() -> Driver:
    """One Neo4j driver per worker process, with the schema ensured once."""
    settings = get_settings()
    driver = GraphDatabase.driver(
        settings.neo4j_uri, auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value()),
        notifications_min_severity="WARNING",  # not "index already exists" on every start
    )
    ensure_schema(driver, database=settings.neo4j_database)
    return driver


@lru_cache(maxsize=1)
def _jobs() -> JobStore:
    return JobStore.from_url(get_settings().redis_url)


@lru_cache(maxsize=4)
def _model(name: str, device: str):  # noqa: ANN202 - LoadedModel, imported lazily with torch
    """The worker process's model cache: a model is loaded once per process and device."""
    from discovery.models import load_model

    return load_model(name, device=device)


@shared_task(name=PING_TASK)
def ping(payload: dict | None = None) -> dict:
    """Echo ``payload`` with the identity of the process that ran it (proves a real worker)."""
    return {"payload": payload, "pid": os.getpid(), "ppid": os.getppid(), "host": socket.gethostname()}


class _Run:
    """One attempt at a job: its heartbeat thread and its progress reports."""

    def __init__(self, jobs: JobStore, job_id: str, runner: str):
        self.jobs, self.job_id, self.runner = jobs, job_id, runner
        self.cancelled, self.lost, self._stop = threading.Event(), threading.Event(), threading.Event()
        self.fields: dict[str, object] = {}
        self.started = None
        self._thread = threading.Thread(target=self._beat_loop, daemon=True)

    def __enter__(self) -> _Run:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat_loop(self) -> None:
        while not self._stop.wait(BEAT_S):
            self.beat()

    def beat(self) -> None:
        answer = self.jobs.beat(self.job_id, self.runner, **self.fields)
        if answer == "1":
            self.cancelled.set()
        elif answer == "lost":
            self.lost.set()

    def stage(self, name: str) -> None:
        """Enter a stage (``loading model``, ``searching`` ...); a cancel stops the job here."""
        self.check()
        self.fields["stage"] = name
        self.beat()
        self.check()

    def check(self) -> None:
        if self.cancelled.is_set() or self.lost.is_set():
            raise JobCancelled

    def progress(self, done: int, total: int) -> None:
        """The discovery loop's report: edges done of total, percent and ETA, published at the next
        beat (no Redis round trip here)."""
        self.check()
        now = time.monotonic()
        if self.started is None:
            self.started = (now, done)
        t0, d0 = self.started
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else None
        self.fields.update(done=done, total=total, percent=round(100 * done / total, 1) if total else 0,
                           eta_s=round((total - done) / rate, 1) if rate else "")


@shared_task(name=DISCOVER_TASK, bind=True)
def discover_job(self, job_id: str) -> dict:  # noqa: ANN001 - Celery's bound task
    """Run job ``job_id``: claim it, discover, store the circuit under the job's id, finish."""
    settings, jobs = get_settings(), _jobs()
    runner = f"{self.request.id}/{uuid.uuid4().hex[:8]}"
    claim = jobs.claim(job_id, runner, stale_s=settings.job_stale_s)
    if claim != "ok":  # finished, cancelled, or alive elsewhere: a stale delivery, nothing to do
        return {"job_id": job_id, "skipped": claim}
    spec = JobSpec.model_validate_json(jobs.get(job_id)["spec"])
    try:
        with _Run(jobs, job_id, runner) as run:
            circuit_id = _discover_and_store(spec, job_id, run, settings)
    except JobCancelled:
        if run.lost.is_set():
            return {"job_id": job_id, "skipped": "lost"}
        jobs.finish(job_id, runner, "cancelled", stage="cancelled")
        return {"job_id": job_id, "state": "cancelled"}
    except ValueError as exc:  # bad input found late (a custom task the tokenizer rejects ...)
        jobs.finish(job_id, runner, "failed", error=str(exc), stage="failed")
        return {"job_id": job_id, "state": "failed"}
    except Exception as exc:  # noqa: BLE001 - recorded on the job; the traceback goes to the log
        log.exception("job %s failed", job_id)
        jobs.finish(job_id, runner, "failed", error=f"{type(exc).__name__}: {exc}", stage="failed")
        return {"job_id": job_id, "state": "failed"}
    if jobs.finish(job_id, runner, "succeeded", circuit_id=circuit_id, stage="done", percent=100) == "cancel":
        delete_circuit(_driver(), circuit_id, database=settings.neo4j_database)
        jobs.finish(job_id, runner, "cancelled", stage="cancelled")
        return {"job_id": job_id, "state": "cancelled"}
    return {"job_id": job_id, "state": "succeeded", "circuit_id": circuit_id}


def _discover_and_store(spec: JobSpec, job_id: str, run: _Run, settings) -> str:  # noqa: ANN001
    from discovery.discover import DiscoveryRequest, discover
    from discovery.models import resolve_device

    run.stage("loading model")
    device = resolve_device(spec.device)
    model = _model(spec.model, device)
    request = DiscoveryRequest(
        model=spec.model, task=spec.task_name, method=spec.method, threshold=spec.threshold,
        top_n=spec.top_n, metric=spec.metric, ablation=spec.ablation, n_prompts=spec.n_prompts,
        seed=spec.seed, device=device, ig_steps=spec.ig_steps, granularity=spec.granularity,
    )
    run.stage("searching")
    circuit = replace(discover(request, progress=run.progress, model=model, data=spec.custom_task()),
                      id=job_id)
    run.stage("storing")
    write_circuit(_driver(), circuit, database=settings.neo4j_database)
    return circuit.id


def sweep_once(app=None) -> list[str]:  # noqa: ANN001
    """Re-queue the jobs whose worker stopped beating; returns their ids."""
    settings, jobs = get_settings(), _jobs()
    sent = []
    for record in jobs.requeue_stale(settings.job_stale_s):
        result = (app or discover_job.app).send_task(DISCOVER_TASK, args=[record["id"]], queue=record["queue"])
        jobs.set_task(record["id"], result.id)
        sent.append(record["id"])
        log.warning("re-queued job %s: its worker stopped beating", record["id"])
    return sent


@worker_ready.connect
def _start_sweep(sender=None, **_: object) -> None:  # noqa: ANN001
    """Every worker sweeps for abandoned jobs, at start and then every half stale period."""
    period = get_settings().job_stale_s / 2
    app = getattr(sender, "app", None)

    def loop() -> None:
        while True:
            try:
                sweep_once(app)
            except Exception:  # noqa: BLE001 - a broken sweep must not kill the worker
                log.exception("job sweep failed")
            time.sleep(period)

    threading.Thread(target=loop, name="atlas-job-sweep", daemon=True).start()
