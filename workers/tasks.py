"""Celery tasks: thin glue from a job id to discovery and the graph store, progress out.

Loaded only in worker processes (``include`` in :func:`workers.app.run_worker`), so torch loads
there and never in the API.

A job runs under a *claim* (:class:`workers.jobs.JobStore`): a heartbeat thread keeps it fresh and
watches for a cancel. If the worker dies, the beat stops; the sweep every worker runs
(:mod:`workers.sweep`) re-queues the job and some worker runs it again. The circuit's id is the
job's id and the store replaces on write, so however often a job runs, one circuit is stored.

Outages are waited out, not turned into failures: the heartbeat survives Redis errors (it retries
with a backoff capped well below the stale period), the outcome is recorded once Redis answers
again, and storing is retried while Neo4j is unreachable for up to ``ATLAS_STORE_RETRY_S`` before
the job fails with a message in plain words (nothing stored).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import Any

import redis
from celery import shared_task
from celery.signals import worker_ready
from neo4j import Driver, GraphDatabase
from neo4j.exceptions import (
    ConnectionAcquisitionTimeoutError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)
from redis.backoff import NoBackoff
from redis.retry import Retry

from graphstore.store import delete_circuit, ensure_schema, write_circuit
from workers.app import DISCOVER_TASK, PING_TASK
from workers.jobs import JobStore
from workers.jobspec import JobSpec
from workers.settings import Settings, get_settings
from workers.sweep import Sweeper

log = logging.getLogger(__name__)
BEAT_S = 1.0  # heartbeat period; a cancel is seen within this

#: What an unreachable (stopped, restarting, partitioned) Neo4j raises: retried, never a failure at once.
STORE_OUTAGES = (ServiceUnavailable, SessionExpired, TransientError, ConnectionAcquisitionTimeoutError)


class JobCancelled(Exception):
    """Raised inside the discovery loop when the job's cancel flag is seen."""


class StoreUnavailable(RuntimeError):
    """Neo4j stayed unreachable for the whole retry window; the message is for the job's user."""


@lru_cache(maxsize=1)
def _driver() -> Driver:
    """One Neo4j driver per worker process, with the schema ensured once. Its waits are bounded
    (``ATLAS_NEO4J_TIMEOUT_S``), not the driver's 30-60 s defaults: the store's own retry loop
    decides how long an outage is waited out, and reports it on the job meanwhile."""
    settings = get_settings()
    wait = settings.neo4j_timeout_s
    driver = GraphDatabase.driver(
        settings.neo4j_uri, auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value()),
        notifications_min_severity="WARNING",  # not "index already exists" on every start
        connection_timeout=wait, connection_acquisition_timeout=wait, max_transaction_retry_time=wait,
    )
    try:
        ensure_schema(driver, database=settings.neo4j_database)
    except BaseException:
        driver.close()  # not cached: the next call tries again
        raise
    return driver


@lru_cache(maxsize=1)
def _jobs() -> JobStore:
    """The worker's job records. Socket timeouts bound every call; the callers retry (the beat
    loop, :meth:`_Run.finish`), so the client itself retries once, at once (a dead pooled socket)."""
    wait = get_settings().redis_timeout_s
    return JobStore.from_url(get_settings().redis_url, socket_timeout=wait, socket_connect_timeout=wait,
                             retry=Retry(NoBackoff(), 1))


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
    """One attempt at a job: its heartbeat thread, its progress reports, its outcome."""

    def __init__(self, jobs: JobStore, job_id: str, runner: str, settings: Settings):
        self.jobs, self.job_id, self.runner, self.settings = jobs, job_id, runner, settings
        self.cancelled, self.lost, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._wake = threading.Event()  # set by a cancel or a loss: ends a retry's wait early
        self.fields: dict[str, object] = {}
        self.started = None
        # Retries while Redis is down never wait longer than this, so a beat lands well within a
        # stale period of Redis answering again.
        self.backoff_cap = max(0.1, min(2.0, settings.job_stale_s / 4))
        self._thread = threading.Thread(target=self._beat_loop, name=f"atlas-beat-{job_id}", daemon=True)

    def __enter__(self) -> _Run:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat_loop(self) -> None:
        """Beat every ``BEAT_S``; while Redis fails, retry after 0.25 s, doubling up to the cap,
        then go on beating as before. Nothing but the run's end stops it."""
        wait, failing = BEAT_S, False
        while not self._stop.wait(wait):
            if self.beat():
                if failing:
                    log.warning("job %s: Redis answers again; heartbeat resumed", self.job_id)
                wait, failing = BEAT_S, False
            else:
                if not failing:
                    log.warning("job %s: Redis unreachable; heartbeat retrying", self.job_id)
                wait, failing = (min(self.backoff_cap, wait * 2) if failing else 0.25), True

    def beat(self) -> bool:
        """Publish the heartbeat and progress; False when Redis could not be reached."""
        try:
            answer = self.jobs.beat(self.job_id, self.runner, **self.fields)
        except redis.RedisError:
            return False
        if answer == "1":
            self.cancelled.set()
            self._wake.set()
        elif answer == "lost":
            self.lost.set()
            self._wake.set()
        return True

    def stage(self, name: str) -> None:
        """Enter a stage (``loading model``, ``searching`` ...); a cancel stops the job here. With
        Redis down, the stage is published by the next beat that gets through."""
        self.check()
        self.fields["stage"] = name
        self.beat()
        self.check()

    def check(self) -> None:
        if self.cancelled.is_set() or self.lost.is_set():
            raise JobCancelled

    def sleep(self, seconds: float) -> None:
        """Wait, but stop at once (JobCancelled) when a cancel or a loss arrives."""
        self._wake.wait(seconds)
        self.check()

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

    def finish(self, state: str, **fields: Any) -> str:
        """Record the outcome (see :meth:`redis_call`)."""
        return self.redis_call(lambda: self.jobs.finish(self.job_id, self.runner, state, **fields))

    def redis_call(self, call: Callable[[], Any]) -> Any:
        """``call()``, retried while Redis is down (the beat goes on meanwhile, so the claim
        holds). Gives up after ``max(ATLAS_STORE_RETRY_S, 30 s)``: the job then looks abandoned
        once beats stop, and the sweep runs it again (the store replaces on write)."""
        deadline, wait = time.monotonic() + max(self.settings.store_retry_s, 30.0), 0.1
        while True:
            try:
                return call()
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(wait)
                wait = min(self.backoff_cap, wait * 2)


def _with_store(run: _Run, settings: Settings, action: Callable[[Driver], Any], *, stoppable: bool = True) -> Any:
    """``action(driver)``, retried with backoff while Neo4j is unreachable, for up to
    ``ATLAS_STORE_RETRY_S``; the job's stage says so meanwhile. Raises StoreUnavailable after, or
    JobCancelled at a cancel while waiting (unless not ``stoppable``: undoing for a cancel)."""
    deadline, wait, attempt = time.monotonic() + settings.store_retry_s, 1.0, 0
    stage = run.fields.get("stage", "storing")
    while True:
        try:
            return action(_driver())
        except STORE_OUTAGES as exc:
            attempt += 1
            left = deadline - time.monotonic()
            log.warning("job %s: Neo4j unreachable (%s: %s); attempt %d", run.job_id, type(exc).__name__, exc, attempt)
            if left <= 0:
                raise StoreUnavailable(
                    f"could not store the circuit: the circuit store (Neo4j) stayed unreachable for "
                    f"{settings.store_retry_s:g} s (ATLAS_STORE_RETRY_S), so nothing was stored. Submit "
                    "the job again once Neo4j is back (GET /health shows it)") from None
            run.fields["stage"] = f"{stage}: Neo4j unreachable, retrying (attempt {attempt})"
            run.beat()
            if stoppable:
                run.sleep(min(wait, left))
            else:
                time.sleep(min(wait, left))
            wait = min(wait * 2, 10.0)


def _failure(exc: Exception, stage: str) -> str:
    """A failure in words for the job's user; the traceback stays in the worker's log."""
    if isinstance(exc, Neo4jError):
        return (f"the circuit store (Neo4j) refused the circuit ({exc.code}); nothing was stored. "
                "The worker's log has the details")
    return f"the job failed unexpectedly while {stage} ({type(exc).__name__}); the worker's log has the details"


def _attempt(job_id: str, run: _Run, settings: Settings) -> tuple[str | None, dict[str, Any]]:
    """Run the job; (state to record, fields), or (None, {}) when another runner owns it now."""
    try:
        spec = JobSpec.model_validate_json(run.redis_call(lambda: run.jobs.get(job_id))["spec"])
        circuit_id = _discover_and_store(spec, job_id, run, settings)
        return "succeeded", {"circuit_id": circuit_id, "stage": "done", "percent": 100}
    except JobCancelled:
        return (None, {}) if run.lost.is_set() else ("cancelled", {"stage": "cancelled"})
    except StoreUnavailable as exc:
        return "failed", {"error": str(exc), "stage": "failed: circuit store unreachable"}
    except ValueError as exc:  # bad input found late (a custom task the tokenizer rejects ...)
        return "failed", {"error": str(exc), "stage": "failed"}
    except Exception as exc:  # noqa: BLE001 - recorded on the job; the traceback goes to the log
        log.exception("job %s failed", job_id)
        return "failed", {"error": _failure(exc, str(run.fields.get("stage", "starting"))), "stage": "failed"}


@shared_task(name=DISCOVER_TASK, bind=True)
def discover_job(self, job_id: str) -> dict:  # noqa: ANN001 - Celery's bound task
    """Run job ``job_id``: claim it, discover, store the circuit under the job's id, finish."""
    settings, jobs = get_settings(), _jobs()
    runner = f"{self.request.id}/{uuid.uuid4().hex[:8]}"
    claim = jobs.claim(job_id, runner, stale_s=settings.job_stale_s, since=jobs.redis_started())
    if claim != "ok":  # finished, cancelled, or alive elsewhere: a stale delivery, nothing to do
        return {"job_id": job_id, "skipped": claim}
    with _Run(jobs, job_id, runner, settings) as run:
        state, fields = _attempt(job_id, run, settings)
        if state is None or (answer := run.finish(state, **fields)) == "lost":
            return {"job_id": job_id, "skipped": "lost"}
        if answer == "cancel":  # success refused: a cancel arrived while storing
            return _undo_for_cancel(job_id, run, settings)
    return {"job_id": job_id, "state": state, "circuit_id": fields.get("circuit_id")}


def _undo_for_cancel(job_id: str, run: _Run, settings: Settings) -> dict:
    """A cancel arrived while the circuit was being stored: delete it, then record the cancel."""
    error = ""
    try:
        _with_store(run, settings, lambda d: delete_circuit(d, job_id, database=settings.neo4j_database),
                    stoppable=False)
    except StoreUnavailable:
        error = (f"cancelled after its circuit was stored; Neo4j was unreachable, so the circuit is "
                 f"still there: delete it with DELETE /v1/circuits/{job_id}")
    run.finish("cancelled", stage="cancelled", error=error)
    return {"job_id": job_id, "state": "cancelled"}


def _discover_and_store(spec: JobSpec, job_id: str, run: _Run, settings: Settings) -> str:
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
    _with_store(run, settings, lambda driver: write_circuit(driver, circuit, database=settings.neo4j_database))
    return circuit.id


def sweeper(app=None) -> Sweeper:  # noqa: ANN001 - a Celery app; the task's own by default
    """A :class:`workers.sweep.Sweeper` that sends through ``app``."""
    settings, celery_app = get_settings(), app or discover_job.app

    def send(record: dict[str, str]) -> str:
        return celery_app.send_task(DISCOVER_TASK, args=[record["id"]], queue=record["queue"]).id

    return Sweeper(_jobs(), send, stale_s=settings.job_stale_s, resend_s=settings.job_resend_s,
                   probe_s=min(BEAT_S, settings.job_stale_s / 4))


@worker_ready.connect
def _start_sweep(sender=None, **_: object) -> None:  # noqa: ANN001
    """Every worker sweeps for abandoned and lost jobs, from its start on, in a daemon thread."""
    sweep = sweeper(getattr(sender, "app", None))
    threading.Thread(target=sweep.run, args=(threading.Event(),), name="atlas-job-sweep", daemon=True).start()
