"""Jobs through outages, on scratch servers of our own (never the shared ones), with a real API and
a real worker process:

- Redis restarted while a job runs, down for longer than the stale period: the job routes answer
  503 meanwhile, and the job finishes once (one attempt, one circuit);
- Neo4j stopped while a job is due to store, started again within the retry window: the job waits,
  says so, and succeeds once; stopped for longer than the window: it fails in plain words, and
  nothing is stored;
- a queued job whose broker message was lost is sent again and runs; a job merely waiting is not;
- with Neo4j down (nothing listening, or a listener that never answers), every store-backed route
  answers 503 within a few seconds.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from neo4j import GraphDatabase

from api.ops.process import spawn, stop_group
from tests.conftest import ROOT, ApiServer, free_port
from tests.integration.faults.conftest import SCRATCH_PASSWORD
from tests.integration.test_jobs import READ, SLOW, WRITE, finished, searching, stored, wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHEAP = {"model": "multitask", "task": "greater_than", "method": "eap", "top_n": 10, "n_prompts": 8}
RAW_DRIVER_WORDS = ("ServiceUnavailable", "Couldn't connect", "Traceback", "Errno", "bolt://")


class Worker:
    """``circuits worker`` in its own process group, one pool process, torch on one thread."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.log = tmp / f"worker-{time.monotonic_ns()}.log"
        self.proc = spawn([sys.executable, "-m", "api.cli", "worker", "--queues", "cpu"], self.log,
                          env={"OMP_NUM_THREADS": "1", **env}, cwd=ROOT)

    def stop(self) -> None:
        stop_group(self.proc)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def stack(tmp_path) -> Iterator:
    """Factory: ``stack(env)`` -> (API, worker) on that environment; both stopped at teardown."""
    started: list = []

    def start(env: dict[str, str], *, worker: bool = True) -> tuple[ApiServer, Worker | None]:
        api = ApiServer(tmp_path, env)
        started.append(api)
        w = Worker(tmp_path, env) if worker else None
        if w:
            started.append(w)
        return api, w

    yield start
    for thing in reversed(started):
        thing.stop()


@pytest.fixture(scope="module")
def neo(scratch_neo4j):
    """One scratch Neo4j for the module's store-outage tests (a start costs seconds)."""
    return scratch_neo4j()


def _stored_in(server, circuit_id: str) -> int:
    with GraphDatabase.driver(server.uri(), auth=("neo4j", SCRATCH_PASSWORD)) as driver:
        records, _, _ = driver.execute_query("MATCH (c:Circuit {id: $id}) RETURN count(c) AS n", id=circuit_id)
    return records[0]["n"]


def test_redis_restarted_mid_job_runs_once(scratch_redis, stack, neo4j_driver, settings):
    server = scratch_redis()
    api, worker = stack({"ATLAS_REDIS_URL": server.url(), "ATLAS_JOB_STALE_S": "3"})
    with api.client() as client:
        client.headers.update(WRITE)
        job_id = client.post("/v1/jobs", json=SLOW).raise_for_status().json()["id"]
        wait(client, job_id, searching, timeout=120)
        server.down()
        down_at = time.monotonic()
        started = time.monotonic()
        during = [client.get(f"/v1/jobs/{job_id}"), client.get("/v1/jobs"), client.post("/v1/jobs", json=CHEAP)]
        answered_in = time.monotonic() - started
        time.sleep(max(0.0, 5.0 - (time.monotonic() - down_at)))  # longer than the stale period
        server.up()
        after = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        job = wait(client, job_id, finished, timeout=180)
    assert [r.status_code for r in during] == [503, 503, 503]
    assert all("Redis" in r.json()["detail"] for r in during) and answered_in < 15
    assert not finished(after), "the job ended before Redis came back: the test needs a slower job"
    assert job["state"] == "succeeded", (job, worker.tail())
    assert job["attempts"] == 1, f"computed twice: {job}\n{worker.tail()}"
    assert stored(neo4j_driver, settings, job_id) == 1
    assert "heartbeat resumed" in worker.log.read_text()


def _neo_env(redis_url: str, neo, retry_s: float) -> dict[str, str]:
    return {"ATLAS_REDIS_URL": redis_url, "ATLAS_NEO4J_URI": neo.uri(), "ATLAS_NEO4J_PASSWORD": SCRATCH_PASSWORD,
            "ATLAS_STORE_RETRY_S": str(retry_s), "ATLAS_NEO4J_TIMEOUT_S": "2"}


def test_neo4j_back_within_the_retry_window_job_succeeds_once(scratch_redis, stack, neo):
    neo.up()
    api, worker = stack(_neo_env(scratch_redis().url(), neo, 120))
    with api.client() as client:
        client.headers.update(WRITE)
        warm = wait(client, client.post("/v1/jobs", json=CHEAP).json()["id"], finished, timeout=180)
        assert warm["state"] == "succeeded", (warm, worker.tail())  # the worker's driver holds connections
        assert client.get(f"/v1/circuits/{warm['id']}").status_code == 200  # and so does the API's
        neo.down()
        job_id = client.post("/v1/jobs", json=CHEAP).json()["id"]
        waiting = wait(client, job_id, lambda j: "retrying" in (j["progress"]["stage"] or ""), timeout=120)
        neo.up()
        job = wait(client, job_id, finished, timeout=120)
        read_back = client.get(f"/v1/circuits/{job_id}")  # the API's pool outlived the restart
    assert read_back.status_code == 200, read_back.text
    assert waiting["state"] == "running" and "Neo4j unreachable" in waiting["progress"]["stage"]
    assert job["state"] == "succeeded" and job["attempts"] == 1, (job, worker.tail())
    assert _stored_in(neo, job_id) == 1


def test_neo4j_down_past_the_retry_window_fails_plainly_storing_nothing(scratch_redis, stack, neo):
    neo.up()
    api, worker = stack(_neo_env(scratch_redis().url(), neo, 3))
    with api.client() as client:
        client.headers.update(WRITE)
        assert wait(client, client.post("/v1/jobs", json=CHEAP).json()["id"], finished, timeout=180)["state"] == "succeeded"
        neo.down()
        job_id = client.post("/v1/jobs", json=CHEAP).json()["id"]
        job = wait(client, job_id, finished, timeout=120)
    neo.up()
    assert job["state"] == "failed" and job["attempts"] == 1, (job, worker.tail())
    assert "Neo4j" in job["error"] and "ATLAS_STORE_RETRY_S" in job["error"] and "nothing was stored" in job["error"]
    assert not any(word in job["error"] for word in RAW_DRIVER_WORDS), job["error"]
    assert _stored_in(neo, job_id) == 0


def test_queued_job_whose_message_was_lost_is_sent_again(scratch_redis, stack, neo4j_driver, settings):
    server = scratch_redis()
    env = {"ATLAS_REDIS_URL": server.url(), "ATLAS_JOB_RESEND_S": "2"}
    api, _ = stack(env, worker=False)
    broker = redis.Redis.from_url(server.url(), decode_responses=True)
    with api.client() as client:
        client.headers.update(WRITE)
        lost = client.post("/v1/jobs", json=CHEAP).json()["id"]
        assert broker.delete("cpu") == 1  # its message, gone from the broker's list
        kept = client.post("/v1/jobs", json={**CHEAP, "seed": 1}).json()["id"]
        time.sleep(2.5)  # both past the grace period; only one lost its message
        worker = Worker(api.log.parent, env)
        try:
            jobs = [wait(client, job_id, finished, timeout=180) for job_id in (lost, kept)]
        finally:
            worker.stop()
    assert [j["state"] for j in jobs] == ["succeeded", "succeeded"], worker.tail()
    assert [j["attempts"] for j in jobs] == [1, 1]
    assert broker.hget(f"atlas:job:{lost}", "resent") == "1"
    assert broker.hget(f"atlas:job:{kept}", "resent") is None  # waiting in the queue: never re-sent
    assert stored(neo4j_driver, settings, lost) == 1


class SilentListener:
    """Accepts TCP connections and never says a word: a Neo4j that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


STORE_ROUTES = [
    ("GET", "/v1/circuits", None),
    ("GET", "/v1/compare?ids=a,b", None),
    ("GET", "/v1/models/multitask/overlap", None),
    ("POST", "/v1/cypher", {"query": "MATCH (c:Circuit) RETURN c.id AS id LIMIT 1"}),
]


@pytest.mark.parametrize("outage", ["stopped", "hanging"])
def test_store_backed_routes_answer_503_fast_with_neo4j_down(api_server, outage):
    listener = SilentListener() if outage == "hanging" else None
    port = listener.port if listener else free_port()
    try:
        api = api_server({"ATLAS_NEO4J_URI": f"bolt://127.0.0.1:{port}"})
        took, answers = {}, {}

        def call(method: str, path: str, body: dict | None) -> None:
            with httpx.Client(base_url=api.url, headers=READ, timeout=60) as client:
                started = time.monotonic()
                answers[path] = client.request(method, path, json=body)
                took[path] = time.monotonic() - started

        threads = [threading.Thread(target=call, args=route) for route in STORE_ROUTES]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
    finally:
        if listener:
            listener.close()
    assert {p: a.status_code for p, a in answers.items()} == {p: 503 for p in answers}, \
        {p: a.text[:200] for p, a in answers.items()}
    assert all("Neo4j" in a.json()["detail"] for a in answers.values())
    assert max(took.values()) < 6, took  # ATLAS_NEO4J_TIMEOUT_S (3 s) bounds each, not 30-60 s
