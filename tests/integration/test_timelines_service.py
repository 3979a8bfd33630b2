"""Formation timelines end to end: the tiny CI recipe trained with checkpoints by the real CLI,
timelines submitted over REST, discovered by two real Celery worker processes (one part per
checkpoint, a Celery group), stored once in Neo4j, read back over REST and through the cookbook
queries; a worker killed mid-run; a cancel; bad input.

Its own API and workers on Redis database 9 (the session's worker never takes these jobs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api.ops.process import stop_group
from discovery.timeline import Timeline, pair_analysis
from graphstore.timelines import (
    circuit_sizes,
    delete_timeline,
    first_step_in_circuit,
    list_timelines,
    moved_components,
)
from tests.conftest import ROOT
from tests.integration.test_jobs import Stack, finished, wait

pytestmark = pytest.mark.slow
CHECKPOINTS = 5
#: EAP's top 8 edges: on the tiny model ACDC's KL threshold keeps no edge at any step, so its
#: circuits would all be empty (and equal); these differ between checkpoints.
BODY = {"tasks": ["induction", "ioi"], "method": "eap", "top_n": 8, "n_prompts": 8}
#: ~4 s a checkpoint (the reference ACDC): long enough to be caught mid-run
SLOW = {"method": "acdc-reference", "top_n": None, "n_prompts": 20}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, neo4j_driver, settings) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("tiny-run") / "tiny"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "api.cli", "train", "--recipe", "tiny", "--out", str(out),
                           "--checkpoints", str(CHECKPOINTS)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "run.json").exists()
    yield out
    db = settings.neo4j_database  # what the tests stored: every timeline of this run, its circuits
    for timeline in list_timelines(neo4j_driver, database=db, run=str(out.resolve())):
        delete_timeline(neo4j_driver, timeline.id, database=db, circuits=True)


def _ready(worker: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while "ready" not in worker.log.read_text():
        assert worker.poll() is None and time.monotonic() < deadline, worker.log.read_text()[-3000:]
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(settings, neo4j_driver, tmp_path_factory):
    url = settings.redis_url.rsplit("/", 1)[0] + "/9"
    redis.Redis.from_url(url).flushdb()
    s = Stack(tmp_path_factory.mktemp("timelines"), url)
    s.second = s.start_worker()
    for worker in (s.worker, s.second):
        _ready(worker)
    yield s
    stop_group(s.second)
    s.stop()


def count(driver, settings, query: str, **params) -> int:
    records, _, _ = driver.execute_query(query, database_=settings.neo4j_database, **params)
    return records[0]["n"]


def submit(client, run_dir: Path, **extra) -> str:
    response = client.post("/v1/timelines", json={"run": str(run_dir), **BODY, **extra})
    assert response.status_code == 202, response.text
    assert response.json()["kind"] == "timeline"
    return response.json()["id"]


@pytest.fixture(scope="module")
def first(stack, run_dir) -> dict:
    seen = []
    with stack.client() as client:
        job_id = submit(client, run_dir)
        job = wait(client, job_id, lambda j: seen.append(j) or finished(j), timeout=300)
        assert job["state"] == "succeeded", job
        parts = [client.get(f"/v1/jobs/{p}").raise_for_status().json() for p in job["parts"]]
        data = client.get(f"/v1/timelines/{job['result_id']}").raise_for_status().json()
    return {"job": job, "seen": seen, "parts": parts, "data": data}


def test_timeline_through_rest_two_workers_and_neo4j(first, run_dir, neo4j_driver, settings):
    job, data, parts = first["job"], first["data"], first["parts"]
    steps = sorted({r["step"] for r in data["rows"]})
    assert len(steps) == CHECKPOINTS and len(data["rows"]) == CHECKPOINTS * 2
    assert data["id"] == job["id"] and data["run_dir"] == str(run_dir.resolve())
    assert "circuits" not in data  # only with ?circuits=true
    # one part per checkpoint, each run by a worker process; the two workers shared them
    assert len(parts) == CHECKPOINTS and all(p["kind"] == "timeline-checkpoint" for p in parts)
    assert all(p["parent"] == job["id"] and p["state"] == "succeeded" for p in parts)
    assert len({p["worker"] for p in parts}) == 2, [p["worker"] for p in parts]
    progress = [j["progress"] for j in first["seen"] if j["state"] == "running"]
    assert any(p["total"] == CHECKPOINTS * 2 and 0 < (p["percent"] or 0) < 100 for p in progress), progress
    # stored once: one timeline, its circuits linked per (step, task), the run's checkpoints ordered
    assert count(neo4j_driver, settings, "MATCH (t:Timeline {id: $id}) RETURN count(t) AS n", id=job["id"]) == 1
    assert count(neo4j_driver, settings, "MATCH (:Timeline {id: $id})-[a:AT]->(:Circuit) RETURN count(a) AS n",
                 id=job["id"]) == CHECKPOINTS * 2
    assert count(neo4j_driver, settings, "MATCH (c:Circuit) WHERE c.id STARTS WITH $id RETURN count(c) AS n",
                 id=job["id"] + ".") == CHECKPOINTS * 2
    assert count(neo4j_driver, settings, "MATCH (:Model)-[c:CHECKPOINT_OF]->(:Run {id: $run}) "
                 "RETURN count(c) AS n", run=data["run_dir"]) == CHECKPOINTS


def test_stored_timeline_answers_the_cookbook_queries(stack, first, neo4j_driver, settings):
    data, db = first["data"], settings.neo4j_database
    with stack.client() as client:
        whole = client.get(f"/v1/timelines/{data['id']}", params={"circuits": "true"}).raise_for_status().json()
    timeline = Timeline.from_dict({k: v for k, v in whole.items() if k != "id"})
    run = data["run_dir"]
    components = sorted({n for r in timeline.rows for n in r.nodes} - {"embed", "logits"})
    assert components, "no component in any circuit: the cookbook would be vacuous"
    for task in timeline.tasks:
        for component in components:
            assert first_step_in_circuit(neo4j_driver, run=run, task=task, component=component, database=db,
                                         timeline_id=data["id"]) == timeline.joined(task, component)
    expected = pair_analysis(timeline, "induction", "ioi")["first_to_second"]
    assert moved_components(neo4j_driver, run=run, first="induction", second="ioi", database=db,
                            timeline_id=data["id"]) == expected
    sizes = {(r["task"], r["step"]): r["n_edges"]
             for r in circuit_sizes(neo4j_driver, run=run, database=db, timeline_id=data["id"])}
    assert sizes == {(r.task, r.step): r.n_edges for r in timeline.rows}
    with stack.client() as client:
        listed = client.get("/v1/timelines", params={"run": run}).raise_for_status().json()
    assert data["id"] in [t["id"] for t in listed["timelines"]]


def _parts(client, job_id: str, run_dir: Path) -> dict[str, dict]:
    """The job's parts by id (one per checkpoint, ``{job}.step-{step}``), as the API shows them."""
    steps = [c["step"] for c in json.loads((run_dir / "run.json").read_text())["checkpoints"]]
    records = {f"{job_id}.step-{s}": client.get(f"/v1/jobs/{job_id}.step-{s}") for s in steps}
    return {pid: r.json() for pid, r in records.items() if r.status_code == 200}


def test_killed_mid_run_is_stored_once_after_a_restart(stack, run_dir, neo4j_driver, settings):
    with stack.client() as client:
        job_id = submit(client, run_dir, **SLOW)
        deadline = time.monotonic() + 300
        while True:  # kill once one part finished and another is running
            states = {p: r["state"] for p, r in _parts(client, job_id, run_dir).items()}
            if "succeeded" in states.values() and "running" in states.values():
                break
            assert time.monotonic() < deadline and client.get(f"/v1/jobs/{job_id}").json()["state"] == "running"
            time.sleep(0.1)
        for worker in (stack.worker, stack.second):
            os.killpg(worker.pid, signal.SIGKILL)  # every worker: main processes and pools
            worker.wait()
        at_kill = {p: r for p, r in _parts(client, job_id, run_dir).items()}
        time.sleep(1)
        stack.worker = stack.start_worker()
        job = wait(client, job_id, finished, timeout=400)
        stack.second = stack.start_worker()  # for the tests after this one
        _ready(stack.second)
        after = _parts(client, job_id, run_dir)
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    for pid, before in at_kill.items():  # finished parts kept their results; killed ones ran again
        assert after[pid]["state"] == "succeeded"
        if before["state"] == "succeeded":
            assert after[pid]["attempts"] == before["attempts"] == 1, (pid, before, after[pid])
        elif before["state"] == "running":
            assert after[pid]["attempts"] == before["attempts"] + 1, (pid, before, after[pid])
    assert count(neo4j_driver, settings, "MATCH (t:Timeline {id: $id}) RETURN count(t) AS n", id=job_id) == 1
    assert count(neo4j_driver, settings, "MATCH (c:Circuit) WHERE c.id STARTS WITH $id RETURN count(c) AS n",
                 id=job_id + ".") == CHECKPOINTS * 2
    assert count(neo4j_driver, settings, "MATCH (:Timeline {id: $id})-[a:AT]->() RETURN count(a) AS n",
                 id=job_id) == CHECKPOINTS * 2


def test_cancel_a_running_timeline_stores_nothing(stack, run_dir, neo4j_driver, settings):
    with stack.client() as client:
        job_id = submit(client, run_dir, **SLOW)
        wait(client, job_id, lambda j: j["state"] == "running" or finished(j), timeout=120)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 202
        job = wait(client, job_id, finished, timeout=120)
        assert job["state"] == "cancelled", job
        time.sleep(1)
        parts = [client.get(f"/v1/jobs/{p}").json() for p in (job.get("parts") or [])]
    assert all(p["state"] in ("succeeded", "cancelled") for p in parts), parts
    assert count(neo4j_driver, settings, "MATCH (t:Timeline {id: $id}) RETURN count(t) AS n", id=job_id) == 0
    assert count(neo4j_driver, settings, "MATCH (c:Circuit) WHERE c.id STARTS WITH $id RETURN count(c) AS n",
                 id=job_id + ".") == 0


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"run": "/no/such/run", "tasks": ["induction"]}, "run", "run.json"),
    ({"run": "RUN", "tasks": ["inductionx"]}, "tasks", "unknown task"),
    ({"run": "RUN", "tasks": []}, "tasks", "1 to"),
    ({"run": "RUN", "tasks": ["ioi"], "method": "magic"}, "method", "unknown method"),
    ({"run": "RUN", "tasks": ["ioi"], "level": 2}, "level", "less than or equal"),
])
def test_bad_timelines_name_the_field_and_queue_nothing(stack, run_dir, body, field, words):
    body = {k: (str(run_dir) if v == "RUN" else v) for k, v in body.items()}
    with stack.client() as client:
        before = client.get("/v1/jobs").json()["total"]
        response = client.post("/v1/timelines", json=body)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert any(e["loc"][-1] == field and words in e["msg"] for e in detail), detail
        assert client.get("/v1/jobs").json()["total"] == before


def test_cli_timeline_waits_prints_and_draws(stack, run_dir, tmp_path):
    png = tmp_path / "timeline.png"
    env = {**os.environ, "ATLAS_API_URL": stack.api.url, "ATLAS_API_KEY": "atlas-dev-write"}
    done = subprocess.run([sys.executable, "-m", "api.cli", "timeline", "--run", str(run_dir), "--tasks",
                           "induction,ioi", "--method", "eap", "--top-n", "8", "--n-prompts", "8", "--wait",
                           "--png", str(png)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "circuits" in done.stderr and "100%" in done.stderr  # the bar, in circuits done
    out = done.stdout
    assert out.count("induction") >= CHECKPOINTS and "in-context loss: largest drop by step" in out
    assert "induction: edges stable from step" in out or "induction: edges not stable within the run" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    job_id = out.split()[3]  # "submitted timeline job ID ..."
    listed = subprocess.run([sys.executable, "-m", "api.cli", "timelines", "list", "--run", str(run_dir)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and job_id in listed.stdout
    missing = subprocess.run([sys.executable, "-m", "api.cli", "timeline", "--run", "/no/such/run", "--tasks",
                              "induction"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "run:" in missing.stderr and "run.json" in missing.stderr
    assert "Traceback" not in missing.stderr
