"""The one job machinery every kind of job runs on: a claim with a heartbeat thread that watches
for a cancel, progress with percent and ETA, outages of Redis and Neo4j waited out, failures put in
plain words. :mod:`workers.kinds` says what each kind of job does; :mod:`workers.tasks` is the
Celery entry point.

Outages are waited out, not turned into failures: the heartbeat survives Redis errors (it retries
with a backoff capped well below the stale period), the outcome is recorded once Redis answers
again, and storing is retried while Neo4j is unreachable for up to ``ATLAS_STORE_RETRY_S`` before
the job fails with a message in plain words (nothing stored).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import redis
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

from graphstore.store import ensure_schema
from workers.jobs import JobStore
from workers.settings import Settings, get_settings

log = logging.getLogger(__name__)
BEAT_S = 1.0  # heartbeat period; a cancel is seen within this

#: What an unreachable (stopped, restarting, partitioned) Neo4j raises: retried, never a failure at once.
STORE_OUTAGES = (ServiceUnavailable, SessionExpired, TransientError, ConnectionAcquisitionTimeoutError)


class JobCancelled(Exception):
    """Raised inside a job's work when its cancel flag is seen (or another runner took it over)."""


class StoreUnavailable(RuntimeError):
    """Neo4j stayed unreachable for the whole retry window; the message is for the job's user."""


@lru_cache(maxsize=1)
def driver() -> Driver:
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
def job_store() -> JobStore:
    """The worker's job records. Socket timeouts bound every call; the callers retry (the beat
    loop, :meth:`JobRun.finish`), so the client itself retries once, at once (a dead pooled socket)."""
    wait = get_settings().redis_timeout_s
    return JobStore.from_url(get_settings().redis_url, socket_timeout=wait, socket_connect_timeout=wait,
                             retry=Retry(NoBackoff(), 1))


@lru_cache(maxsize=4)
def cached_model(name: str, device: str):  # noqa: ANN202 - LoadedModel, imported lazily with torch
    """The worker process's model cache: a model is loaded once per process and device."""
    from discovery.models import load_model

    return load_model(name, device=device)


class JobRun:
    """One attempt at a job: its heartbeat thread, its progress reports, its outcome."""

    def __init__(self, jobs: JobStore, job_id: str, runner: str, settings: Settings, *,
                 parent: JobRun | None = None, watch: Callable[[JobRun], None] | None = None):
        """``parent``: the job this one runs inside (a part of a fan-out job run in its process):
        its cancel stops this one too, and its loss leaves this one to the sweep. ``watch`` is
        called after each progress report (the parent's progress follows its part's)."""
        self.jobs, self.job_id, self.runner, self.settings = jobs, job_id, runner, settings
        self.parent, self.watch = parent, watch
        self.cancelled, self.lost, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._wake = threading.Event()  # set by a cancel or a loss: ends a retry's wait early
        self.fields: dict[str, object] = {}
        self.started = None
        # Retries while Redis is down never wait longer than this, so a beat lands well within a
        # stale period of Redis answering again.
        self.backoff_cap = max(0.1, min(2.0, settings.job_stale_s / 4))
        self._thread = threading.Thread(target=self._beat_loop, name=f"atlas-beat-{job_id}", daemon=True)

    def __enter__(self) -> JobRun:
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
        self.started = None  # the ETA is per stage (a stage's own progress reports reset the rest)
        self.beat()
        self.check()

    def check(self) -> None:
        if self.parent is not None and self.parent.lost.is_set():
            self.lost.set()  # not a cancel: whoever runs the parent now runs this part again
        if self.cancelled.is_set() or self.lost.is_set():
            raise JobCancelled
        if self.parent is not None:
            self.parent.check()

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
        if self.watch is not None:
            self.watch(self)

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


def with_store(run: JobRun, settings: Settings, action: Callable[[Driver], Any], *, stoppable: bool = True,
               what: str = "circuit") -> Any:
    """``action(driver)``, retried with backoff while Neo4j is unreachable, for up to
    ``ATLAS_STORE_RETRY_S``; the job's stage says so meanwhile. Raises StoreUnavailable after, or
    JobCancelled at a cancel while waiting (unless not ``stoppable``: undoing for a cancel)."""
    deadline, wait, attempt = time.monotonic() + settings.store_retry_s, 1.0, 0
    stage = run.fields.get("stage", "storing")
    while True:
        try:
            return action(driver())
        except STORE_OUTAGES as exc:
            attempt += 1
            left = deadline - time.monotonic()
            log.warning("job %s: Neo4j unreachable (%s: %s); attempt %d", run.job_id, type(exc).__name__, exc, attempt)
            if left <= 0:
                raise StoreUnavailable(
                    f"could not store the {what}: the circuit store (Neo4j) stayed unreachable for "
                    f"{settings.store_retry_s:g} s (ATLAS_STORE_RETRY_S), so nothing was stored. Submit "
                    "the job again once Neo4j is back (GET /health shows it)") from None
            run.fields["stage"] = f"{stage}: Neo4j unreachable, retrying (attempt {attempt})"
            run.beat()
            if stoppable:
                run.sleep(min(wait, left))
            else:
                time.sleep(min(wait, left))
            wait = min(wait * 2, 10.0)


def failure(exc: Exception, stage: str, what: str = "circuit") -> str:
    """A failure in words for the job's user; the traceback stays in the worker's log."""
    if isinstance(exc, Neo4jError):
        return (f"the circuit store (Neo4j) refused the {what} ({exc.code}); nothing was stored. "
                "The worker's log has the details")
    return f"the job failed unexpectedly while {stage} ({type(exc).__name__}); the worker's log has the details"


