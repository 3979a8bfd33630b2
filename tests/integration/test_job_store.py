"""The job record's state changes against the real Redis: claims, beats, cancels, races."""

from __future__ import annotations

import time

import pytest

from workers.jobs import ACTIVE, JobStore, key_active


@pytest.fixture
def jobs(settings):
    store = JobStore.from_url(settings.redis_url.rsplit("/", 1)[0] + "/9")
    store.redis.flushdb()
    yield store
    store.redis.flushdb()


def make(jobs: JobStore, job_id: str = "j1", key: str = "k") -> None:
    assert jobs.create(job_id, spec={"x": 1}, key_id=key, queue="cpu", cap=10)


def test_claim_is_exclusive_until_the_beat_goes_stale(jobs):
    make(jobs)
    assert jobs.claim("j1", "r1", stale_s=0.5) == "ok"
    assert jobs.claim("j1", "r2", stale_s=0.5) == "busy"
    time.sleep(0.6)
    assert jobs.claim("j1", "r2", stale_s=0.5) == "ok"  # r1 stopped beating: taken over
    assert jobs.beat("j1", "r1") == "lost"
    assert jobs.finish("j1", "r1", "succeeded") == "lost"
    assert jobs.get("j1")["attempts"] == "2"


def test_success_that_races_a_cancel_is_refused(jobs):
    make(jobs)
    jobs.claim("j1", "r1", stale_s=10)
    assert jobs.cancel("j1") == "cancelling"
    assert jobs.beat("j1", "r1", done=3) == "1"  # the worker learns of it at its next beat
    assert jobs.finish("j1", "r1", "succeeded", circuit_id="j1") == "cancel"
    assert jobs.get("j1")["state"] == "running"
    assert jobs.finish("j1", "r1", "cancelled") == "ok"
    assert jobs.get("j1")["state"] == "cancelled" and not jobs.redis.sismember(ACTIVE, "j1")


def test_queued_cancel_ends_at_once_and_claim_then_skips(jobs):
    make(jobs)
    assert jobs.cancel("j1") == "stopped"
    assert jobs.claim("j1", "r1", stale_s=10) == "cancelled"  # the message arrives later: skipped
    assert jobs.cancel("j1") == "cancelled" and jobs.cancel("nope") == "missing"


def test_stale_running_jobs_are_requeued_once(jobs):
    make(jobs, "a")
    make(jobs, "b")
    jobs.claim("a", "r1", stale_s=10)
    jobs.claim("b", "r2", stale_s=10)
    time.sleep(0.3)
    jobs.beat("b", "r2")
    requeued = jobs.requeue_stale(0.25)
    assert [r["id"] for r in requeued] == ["a"] and jobs.get("a")["state"] == "queued"
    assert jobs.requeue_stale(0.25) == []  # a is queued now, b beat recently


def test_per_key_cap_counts_active_jobs_only(jobs):
    for i in range(2):
        assert jobs.create(f"j{i}", spec={}, key_id="k", queue="cpu", cap=2)
    assert not jobs.create("j2", spec={}, key_id="k", queue="cpu", cap=2)
    assert jobs.get("j2") is None  # nothing half-written
    jobs.cancel("j0")
    assert jobs.create("j2", spec={}, key_id="k", queue="cpu", cap=2)
    assert jobs.redis.scard(key_active("k")) == 2
    total, page = jobs.page(offset=0, limit=2)
    assert total == 3 and [r["id"] for r in page] == ["j2", "j1"]
