"""The recovery sweep every worker runs: jobs whose worker died are re-queued, and queued jobs whose
broker message was lost are sent again.

Neither may fire because of an outage. A heartbeat looks stale after Redis was down, or after this
worker could not reach it, though the job's worker beat on as soon as it could; so staleness is
measured only over time of good connectivity (:class:`Sweeper` keeps when that began, and Redis's
start counts as such a moment). A job merely waiting in a long queue still has its message in the
broker's list, so it is never re-sent. Whatever slips through is harmless: a duplicate delivery
finds the job claimed (``busy``) or finished, and is skipped.

Knows Redis (through :class:`workers.jobs.JobStore`), not Celery: it is given a ``send`` callable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from workers.jobs import JobStore

log = logging.getLogger(__name__)

#: Sends a job's message (its record given) and returns the new Celery task id.
Send = Callable[[dict[str, str]], str]


class Sweeper:
    """One worker's sweep. ``probe`` (every ``probe_s``) watches this process's own connectivity to
    Redis; ``sweep`` (every half stale period) re-queues and re-sends."""

    def __init__(self, jobs: JobStore, send: Send, *, stale_s: float, resend_s: float,
                 probe_s: float = 1.0) -> None:
        self.jobs, self.send = jobs, send
        self.stale_s, self.resend_s, self.probe_s = stale_s, resend_s, probe_s
        #: Redis time since when this process has seen Redis without a break; 0 before the first look.
        self.trusted_since = 0.0
        self._last_ok: float | None = None  # monotonic time of the last good probe
        self._broken = True  # no look yet: the past is unknown, so it counts as an outage

    def probe(self) -> bool:
        """Look at Redis once. After a failed look, or a gap between good looks far longer than
        the probe period (this process stalled), trust starts again from now."""
        try:
            now = self.jobs.now()
        except redis.RedisError:
            self._broken = True
            return False
        mono = time.monotonic()
        if self._broken or (self._last_ok is not None and mono - self._last_ok > 3 * self.probe_s + 1):
            self.trusted_since = now
            self._broken = False
        self._last_ok = mono
        return True

    def since(self) -> float:
        """From when a missing heartbeat counts: the later of Redis's start and the end of this
        process's last outage."""
        return max(self.trusted_since, self.jobs.redis_started())

    def sweep(self) -> tuple[list[str], list[str]]:
        """Re-queue jobs whose worker stopped beating and re-send lost queued ones; returns the
        ids of each. A job whose send fails stays queued and is re-sent by a later sweep."""
        requeued = [r["id"] for r in self.jobs.requeue_stale(self.stale_s, since=self.since())
                    if self._send(r, "re-queued job %s: its worker stopped beating")]
        resent = [r["id"] for r in self.jobs.lost_queued(self.resend_s)
                  if self._send(r, "re-sent job %s: it was queued but its message was lost")]
        return requeued, resent

    def _send(self, record: dict[str, str], why: str) -> bool:
        try:
            self.jobs.set_task(record["id"], self.send(record))
        except Exception:  # noqa: BLE001 - the job stays queued: the next sweep's lost check sends it
            log.exception("could not send job %s; a later sweep will", record["id"])
            return False
        log.warning(why, record["id"])
        return True

    def run(self, stop: threading.Event) -> None:
        """Probe and sweep until ``stop`` is set; nothing here may end the loop but ``stop``."""
        period, next_sweep = max(self.stale_s / 2, self.probe_s), 0.0
        while not stop.is_set():
            try:
                if self.probe() and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + period
                    self.sweep()
            except Exception:  # noqa: BLE001 - a broken sweep must not kill the worker
                self._broken = True
                log.exception("job sweep failed")
            stop.wait(self.probe_s)
