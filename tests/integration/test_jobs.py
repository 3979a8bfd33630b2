"""Discovery jobs end to end: real uvicorn, real Celery worker processes, real Redis and Neo4j.

The module runs its own API and workers on Redis database 7, so the session's worker (database 0)
never takes its jobs, and a worker killed here is the only one that had the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from api.ops.process import spawn, stop_group
from tests.conftest import ROOT, ApiServer

WRITE = {"X-API-Key": "atlas-dev-write"}
READ = {"X-API-Key": "atlas-dev-read"}
SLOW = {"model": "multitask", "task": "ioi", "method": "acdc-reference"}  # ~10-20 s on this machine


class Stack:
    """An API and one worker sharing a private Redis database."""

    def __init__(self, tmp: Path, redis_url: str):
        self.tmp, self.env = tmp, {"ATLAS_REDIS_URL": redis_url, "ATLAS_JOB_STALE_S": "4",
                                   "ATLAS_MAX_QUEUED_PER_KEY": "60"}
        self.api = ApiServer(tmp, self.env)
        self.worker = self.start_worker()

    def start_worker(self) -> subprocess.Popen:
        log = self.tmp / f"worker-{time.monotonic_ns()}.log"
        proc = spawn([sys.executable, "-m", "api.cli", "worker", "--queues", "cpu"], log, env=self.env, cwd=ROOT)
        proc.log = log  # type: ignore[attr-defined]
        return proc

    def client(self, headers: dict[str, str] = WRITE) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, timeout=30, headers=headers)

    def stop(self) -> None:
        stop_group(self.worker)
        self.api.stop()


@pytest.fixture(scope="module")
def stack(settings, neo4j_driver, tmp_path_factory):
    url = settings.redis_url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    s = Stack(tmp_path_factory.mktemp("jobs"), url)
    yield s
    s.stop()


def wait(client: httpx.Client, job_id: str, until, timeout: float = 180) -> dict:
    """Poll a job until ``until(job)``; fails with the job's last state on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck: {job}"
        time.sleep(0.25)


def finished(job: dict) -> bool:
    return job["state"] in ("succeeded", "failed", "cancelled")


def searching(job: dict) -> bool:
    assert not finished(job), job
    return job["state"] == "running" and (job["progress"]["done"] or 0) > 0


def stored(neo4j_driver, settings, circuit_id: str) -> int:
    records, _, _ = neo4j_driver.execute_query("MATCH (c:Circuit {id: $id}) RETURN count(c) AS n",
                                              id=circuit_id, database_=settings.neo4j_database)
    return records[0]["n"]


def test_ioi_and_induction_found_stored_compared_and_queried(stack):
    with stack.client() as client:
        ids = {task: client.post("/v1/jobs", json={"model": "multitask", "task": task}).json()["id"]
               for task in ("ioi", "induction")}
        jobs = {task: wait(client, job_id, finished) for task, job_id in ids.items()}
        assert all(j["state"] == "succeeded" for j in jobs.values()), jobs
        assert all(j["progress"]["percent"] == 100 and j["progress"]["total"] > 0 for j in jobs.values())
        circuits = {t: client.get(f"/v1/circuits/{j['circuit_id']}").raise_for_status().json()
                    for t, j in jobs.items()}
        heads = {t: {n["name"] for n in c["nodes"] if n["kind"] == "attention"} for t, c in circuits.items()}
        overlap = client.get("/v1/compare", params={"ids": f"{ids['ioi']},{ids['induction']}"}).raise_for_status().json()
        rows = client.post("/v1/cypher", json={
            "query": "MATCH (a:Circuit {id: $a})-[:INCLUDES]->(h:AttentionHead)<-[:INCLUDES]-(b:Circuit {id: $b}) "
                     "RETURN h.name AS head",
            "params": {"a": ids["ioi"], "b": ids["induction"]}}).raise_for_status().json()["rows"]
    assert circuits["ioi"]["id"] == ids["ioi"]  # the circuit is stored under its job's id
    assert {r[0] for r in rows} == heads["ioi"] & heads["induction"]
    nodes = [{n["name"] for n in circuits[t]["nodes"]} for t in ("ioi", "induction")]
    assert overlap["node_jaccard"] == pytest.approx(len(nodes[0] & nodes[1]) / len(nodes[0] | nodes[1]))


def test_killed_worker_job_runs_again_and_is_stored_once(stack, neo4j_driver, settings):
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=SLOW).raise_for_status().json()["id"]
        wait(client, job_id, searching, timeout=120)
        os.killpg(stack.worker.pid, signal.SIGKILL)  # the whole worker: main process and pool
        stack.worker.wait()
        stack.worker = stack.start_worker()
        job = wait(client, job_id, finished, timeout=240)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    assert stored(neo4j_driver, settings, job_id) == 1


def test_cancel_a_running_job_stores_nothing(stack, neo4j_driver, settings):
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=SLOW).raise_for_status().json()["id"]
        wait(client, job_id, searching, timeout=120)
        asked = time.monotonic()
        response = client.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 202 and response.json()["cancel_requested"] is True
        job = wait(client, job_id, finished, timeout=30)
        took = time.monotonic() - asked
        again = client.delete(f"/v1/jobs/{job_id}")
    assert job["state"] == "cancelled" and took < 10
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    assert stored(neo4j_driver, settings, job_id) == 0


def test_cancel_a_queued_job(stack):
    """Behind a slow job on the single worker, the second job is still queued: it ends at once."""
    with stack.client() as client:
        first = client.post("/v1/jobs", json=SLOW).json()["id"]
        second = client.post("/v1/jobs", json={"model": "multitask", "task": "pronoun"}).json()["id"]
        response = client.delete(f"/v1/jobs/{second}")
        client.delete(f"/v1/jobs/{first}")
        wait(client, first, finished, timeout=120)
    assert response.status_code == 202 and response.json()["state"] == "cancelled"


def test_stability_and_edge_order_are_stored_with_the_circuit(stack, neo4j_driver, settings):
    """A job with an edge order and a stability score: both come back on the stored circuit, the
    re-runs show as progress, and the core edges are marked in Neo4j."""
    body = {"model": "multitask", "task": "ioi", "n_prompts": 12, "edge_order": "auto-circuit", "stability": 2}
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=body).raise_for_status().json()["id"]
        job = wait(client, job_id, finished)
        assert job["state"] == "succeeded", job
        circuit = client.get(f"/v1/circuits/{job_id}").raise_for_status().json()
    score = circuit["stability"]
    assert circuit["provenance"]["params"]["edge_order"] == "auto-circuit"
    assert score["edge_order"] == "auto-circuit" and score["orders"]["n"] == score["prompts"]["n"] == 2
    assert score["edges"] == len(circuit["edges"]) and len(score["orders"]["jaccard"]) == 2
    rows, _, _ = neo4j_driver.execute_query(
        "MATCH (c:Circuit {id: $id}) OPTIONAL MATCH ()-[f:FEEDS {circuit: $id}]->() "
        "RETURN c.stability_orders AS so, count(f) AS n, sum(CASE WHEN f.core THEN 1 ELSE 0 END) AS core",
        id=job_id, database_=settings.neo4j_database)
    assert rows[0]["so"] == pytest.approx(score["orders"]["jaccard_mean"])
    assert (rows[0]["n"], rows[0]["core"]) == (len(circuit["edges"]), len(score["core"]))


@pytest.mark.parametrize(("body", "field"), [
    ({"model": "multitask", "task": "ioi", "edge_order": "zigzag"}, "edge_order"),
    ({"model": "multitask", "task": "ioi", "stability": 99}, "stability"),
    ({"model": "gpt-17", "task": "ioi"}, "model"),
    ({"model": "multitask", "task": "tower-of-hanoi"}, "task"),
    ({"model": "multitask", "task": "ioi", "threshold": 0}, "threshold"),
    ({"model": "multitask", "task": "ioi", "threshold": -1}, "threshold"),
    ({"model": "multitask", "task": "ioi", "method": "magic"}, "method"),
    ({"model": "multitask", "task": "ioi", "device": "tpu"}, "device"),
    ({"model": "multitask", "task": {"name": "x", "metric": "logit_diff", "pairs": [{"clean": "a"}]}}, "task"),
    ({"model": "multitask", "task": "ioi", "colour": "red"}, "colour"),
    ({"task": "ioi"}, "model"),
])
def test_bad_job_specs_name_the_field(stack, body, field):
    with stack.client() as client:
        response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert any(field in err["loc"] for err in response.json()["detail"]), response.json()


def test_malformed_json_keys_and_unknown_ids(stack):
    with stack.client() as client:
        bad_json = client.post("/v1/jobs", content=b'{"model": "multitask",', headers={"content-type": "application/json"})
        missing = client.post("/v1/jobs", json=SLOW, headers={"X-API-Key": ""})
        wrong = client.post("/v1/jobs", json=SLOW, headers={"X-API-Key": "guess"})
        read_only = client.post("/v1/jobs", json=SLOW, headers=READ)
        unknown = client.get("/v1/jobs/nope", headers=READ)
    assert bad_json.status_code in (400, 422) and bad_json.json()["detail"]
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"]
    assert wrong.status_code == 401 and read_only.status_code == 403
    assert unknown.status_code == 404


def test_per_key_cap_refuses_with_429(settings, tmp_path):
    url = settings.redis_url.rsplit("/", 1)[0] + "/8"  # no worker: jobs stay queued
    redis.Redis.from_url(url).flushdb()
    api = ApiServer(tmp_path, {"ATLAS_REDIS_URL": url, "ATLAS_MAX_QUEUED_PER_KEY": "2"})
    try:
        with httpx.Client(base_url=api.url, headers=WRITE, timeout=30) as client:
            codes = [client.post("/v1/jobs", json=SLOW).status_code for _ in range(3)]
            refused = client.post("/v1/jobs", json=SLOW).json()
    finally:
        api.stop()
    assert codes == [202, 202, 429] and "ATLAS_MAX_QUEUED_PER_KEY" in refused["detail"]


def test_a_key_sees_and_cancels_only_its_own_jobs_unless_admin(settings, tmp_path):
    url = settings.redis_url.rsplit("/", 1)[0] + "/8"  # no worker: jobs stay queued
    redis.Redis.from_url(url).flushdb()
    keys = "alice-key:write,bob-key:write,reader-key:read,boss-key:admin"
    api = ApiServer(tmp_path, {"ATLAS_REDIS_URL": url, "ATLAS_API_KEYS": keys})
    as_ = {name: {"X-API-Key": f"{name}-key"} for name in ("alice", "bob", "reader", "boss")}
    try:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            alice = [client.post("/v1/jobs", json=SLOW, headers=as_["alice"]).json()["id"] for _ in range(2)]
            bob = client.post("/v1/jobs", json=SLOW, headers=as_["bob"]).json()["id"]
            listed = {who: client.get("/v1/jobs", headers=h).json() for who, h in as_.items()}
            peek = client.get(f"/v1/jobs/{bob}", headers=as_["alice"])
            cancel = client.delete(f"/v1/jobs/{bob}", headers=as_["alice"])
            still = client.get(f"/v1/jobs/{bob}", headers=as_["bob"]).json()
            own = client.get(f"/v1/jobs/{alice[0]}", headers=as_["alice"])
            by_admin = client.delete(f"/v1/jobs/{bob}", headers=as_["boss"])
    finally:
        api.stop()
    assert {j["id"] for j in listed["alice"]["jobs"]} == set(alice) and listed["alice"]["total"] == 2
    assert [j["id"] for j in listed["bob"]["jobs"]] == [bob]
    assert listed["reader"] == {**listed["reader"], "total": 0, "jobs": []}
    assert {j["id"] for j in listed["boss"]["jobs"]} == {*alice, bob} and listed["boss"]["total"] == 3
    # Another key's job does not exist, as far as alice can tell: the same 404 as an unknown id.
    assert peek.status_code == 404 and cancel.status_code == 404
    assert peek.json()["detail"] == f"no job with id {bob!r}"
    assert still["state"] == "queued" and own.status_code == 200
    assert by_admin.status_code == 202 and by_admin.json()["state"] == "cancelled"


def test_fifty_concurrent_submissions_all_finish(stack):
    tasks = ("ioi", "induction", "greater_than", "successor", "pronoun")
    bodies = [{"model": "multitask", "task": tasks[i % 5], "method": "eap", "top_n": 20, "n_prompts": 8,
               "seed": i} for i in range(50)]
    answers: list[httpx.Response] = [None] * 50  # type: ignore[list-item]

    def post(i: int) -> None:
        with stack.client() as client:
            answers[i] = client.post("/v1/jobs", json=bodies[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [202] * 50
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 50
    with stack.client() as client:  # a key sees its own jobs
        jobs = [wait(client, job_id, finished, timeout=300) for job_id in ids]
    assert [j["state"] for j in jobs] == ["succeeded"] * 50


def test_cli_submit_waits_with_progress_and_lists(stack):
    env = {**os.environ, **stack.env, "ATLAS_API_URL": stack.api.url}
    run = subprocess.run([sys.executable, "-m", "api.cli", "submit", "--model", "multitask", "--task",
                          "successor", "--wait"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "succeeded" in run.stdout and "%" in run.stderr  # the bar
    listed = subprocess.run([sys.executable, "-m", "api.cli", "jobs", "--limit", "100"], capture_output=True,
                            text=True, env=env, cwd=ROOT, timeout=60)
    job_id = run.stdout.split()[2]
    assert listed.returncode == 0 and job_id in listed.stdout
    cancel = subprocess.run([sys.executable, "-m", "api.cli", "cancel", "no-such-job"], capture_output=True,
                            text=True, env=env, cwd=ROOT, timeout=60)
    assert cancel.returncode == 1 and "404" in cancel.stderr and "Traceback" not in cancel.stderr


@pytest.mark.parametrize("model, architecture, parallel", [
    ("multitask-llama", "LlamaForCausalLM", False), ("multitask-pythia", "GPTNeoXForCausalLM", True)])
def test_other_architectures_run_end_to_end(stack, model, architecture, parallel):
    """REST -> worker -> Neo4j -> REST for a Llama- and a Pythia-architecture model: the stored
    circuit names its architecture and graph shape."""
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json={"model": model, "task": "ioi"}).raise_for_status().json()["id"]
        job = wait(client, job_id, finished, timeout=180)
        assert job["state"] == "succeeded", job
        circuit = client.get(f"/v1/circuits/{job['circuit_id']}").raise_for_status().json()
    assert circuit["provenance"]["architecture"] == architecture
    assert circuit["graph"]["parallel"] is parallel and circuit["edges"]
    assert circuit["metrics"]["faithfulness_task"] > 0.5
