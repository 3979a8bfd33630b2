"""The job record's state changes against the real Redis: claims, beats, cancels, races, the
per-key index, and the sweep's two checks (stale heartbeats, lost messages)."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import free_port
from workers.jobs import ACTIVE, UNACKED, JobStore, key_active
from workers.sweep import Sweeper


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


def test_times_are_redis_clock_and_a_beat_is_stale_only_after_since(jobs):
    make(jobs)
    assert abs(float(jobs.get("j1")["created_at"]) - jobs.now()) < 5
    assert jobs.redis_started() < jobs.now()
    jobs.claim("j1", "r1", stale_s=10)
    time.sleep(0.35)
    # Connectivity came back just now (since): the old beat proves nothing yet.
    assert jobs.requeue_stale(0.25, since=jobs.now()) == []
    assert jobs.claim("j1", "r2", stale_s=0.25, since=jobs.now()) == "busy"
    assert [r["id"] for r in jobs.requeue_stale(0.25, since=0)] == ["j1"]


def test_each_key_pages_its_own_jobs(jobs):
    make(jobs, "a1", key="a")
    make(jobs, "b1", key="b")
    make(jobs, "a2", key="a")
    total, page = jobs.page(offset=0, limit=10, key_id="a")
    assert total == 2 and [r["id"] for r in page] == ["a2", "a1"]
    assert jobs.page(offset=0, limit=10)[0] == 3  # everyone's, for an admin


def _message(task_id: str, job_id: str) -> str:
    """What kombu's Redis transport keeps for a Celery message (the fields we look at)."""
    return json.dumps({"headers": {"id": task_id, "task": "atlas.discover", "argsrepr": f"['{job_id}']"},
                       "body": "e30=", "properties": {"delivery_tag": task_id}})


def test_lost_queued_jobs_are_found_once_and_waiting_ones_never(jobs):
    for job_id in ("waiting", "delivered", "lost", "running"):
        make(jobs, job_id)
        jobs.set_task(job_id, f"task-{job_id}")
    jobs.redis.lpush("cpu", _message("task-waiting", "waiting"))
    jobs.redis.hset(UNACKED, "tag-1", json.dumps([_message("task-delivered", "delivered"), "", "cpu"]))
    jobs.claim("running", "r1", stale_s=10)
    assert jobs.lost_queued(0.3) == []  # all sent just now: within the grace period
    time.sleep(0.4)
    assert [r["id"] for r in jobs.lost_queued(0.3)] == ["lost"]
    assert jobs.get("lost")["resent"] == "1"
    assert jobs.lost_queued(0.3) == []  # sent_at moved on: not handed out twice


def test_sweeper_distrusts_staleness_across_its_own_outage(jobs, settings):
    sent: list[str] = []
    broken = JobStore.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    sweeper = Sweeper(jobs, lambda r: sent.append(r["id"]) or f"task-{len(sent)}", stale_s=0.3, resend_s=100)
    make(jobs)
    jobs.claim("j1", "r1", stale_s=10)
    time.sleep(0.4)  # the beat is stale now ...
    assert sweeper.probe() and sweeper.sweep() == ([], [])  # ... but this sweeper just arrived
    sweeper.jobs = broken
    assert not sweeper.probe()  # an outage of its own
    sweeper.jobs = jobs
    time.sleep(0.35)
    assert sweeper.probe() and sweeper.sweep() == ([], [])  # trust restarts after the outage
    time.sleep(0.35)
    assert sweeper.probe() and sweeper.sweep() == (["j1"], [])
    assert sent == ["j1"] and jobs.get("j1")["state"] == "queued" and jobs.get("j1")["task_id"] == "task-1"


def test_a_part_is_recorded_once_swept_like_any_job_and_in_no_listing(jobs):
    """A fan-out job's part (workers.fanout): created once (a parent that runs again after a crash
    finds its parts as they were), in the active set the sweep reads, not in any key's listing
    or under its cap."""
    make(jobs, "parent", key="k")
    assert jobs.create_part("parent.step-1", parent="parent", spec={"step": 1}, key_id="k", queue="cpu",
                            kind="timeline-checkpoint")
    assert jobs.claim("parent.step-1", "r1", stale_s=0.5) == "ok"
    assert not jobs.create_part("parent.step-1", parent="parent", spec={"step": 2}, key_id="k", queue="cpu",
                                kind="timeline-checkpoint")  # exists: left as it was
    record = jobs.get("parent.step-1")
    assert record["state"] == "running" and json.loads(record["spec"]) == {"step": 1}
    assert record["parent"] == "parent" and record["kind"] == "timeline-checkpoint"
    assert jobs.redis.sismember(ACTIVE, "parent.step-1")
    assert not jobs.redis.sismember(key_active("k"), "parent.step-1")
    total, records = jobs.page(offset=0, limit=10, key_id="k")
    assert total == 1 and [r["id"] for r in records] == ["parent"]
    time.sleep(0.6)
    assert [r["id"] for r in jobs.requeue_stale(0.5)] == ["parent.step-1"]  # swept like any job
    assert jobs.finish("parent.step-1", "", "succeeded") == "ok"
    assert not jobs.redis.sismember(ACTIVE, "parent.step-1")
