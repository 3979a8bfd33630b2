"""Studies end to end: a 5-task x 3-method study on ``multitask`` submitted over REST, its 15 pieces
run by two real Celery worker processes (a Celery group; the study job runs the pieces no worker
took), every circuit stored once under the study in Neo4j with the summary; one worker SIGKILLed
mid-study; a cancel; bad input; the CLI.

Its own API and workers on Redis database 12 (the session's worker never takes these jobs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from api.ops.process import stop_group
from graphstore.studies import delete_study
from tests.conftest import ROOT
from tests.integration.test_jobs import Stack
from tests.integration.test_timelines_service import _ready, count

pytestmark = pytest.mark.slow
TASKS = ["ioi", "greater_than", "induction", "successor", "pronoun"]
METHODS = ["acdc", "eap", "eap-ig"]
BODY = {"model": "multitask", "tasks": "all", "methods": METHODS, "n_prompts": 10}
#: ~1-3 s a piece: long enough to be caught with some pieces done and others running
SLOW = {**BODY, "n_prompts": 60}
TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def stack(settings, neo4j_driver, tmp_path_factory):
    url = settings.redis_url.rsplit("/", 1)[0] + "/12"
    redis.Redis.from_url(url).flushdb()
    s = Stack(tmp_path_factory.mktemp("studies"), url)
    s.second = s.start_worker()
    s.submitted = []
    for worker in (s.worker, s.second):
        _ready(worker)
    yield s
    stop_group(s.second)
    s.stop()
    for study_id in s.submitted:  # whatever the tests stored
        delete_study(neo4j_driver, study_id, database=settings.neo4j_database,
                     also=[f"{study_id}.{t}.{m}" for t in TASKS for m in METHODS])


def submit(stack, client, body: dict) -> str:
    response = client.post("/v1/studies", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["kind"] == "study"
    stack.submitted.append(response.json()["id"])
    return response.json()["id"]


def follow(client, study_id: str, until, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        study = client.get(f"/v1/studies/{study_id}").raise_for_status().json()
        if until(study):
            return study
        assert time.monotonic() < deadline, f"study {study_id} stuck: {study}"
        time.sleep(0.1)


def done(study: dict) -> bool:
    return study["state"] in TERMINAL


def expected_ids(study_id: str) -> set[str]:
    return {f"{study_id}.{t}.{m}" for t in TASKS for m in METHODS}


def linked(driver, settings, study_id: str) -> list[str]:
    records, _, _ = driver.execute_query("MATCH (:Study {id: $id})-[:HAS_CIRCUIT]->(c:Circuit) RETURN c.id AS id",
                                         id=study_id, database_=settings.neo4j_database)
    return [r["id"] for r in records]


def assert_stored_once(driver, settings, study_id: str) -> None:
    """One Study node, 15 circuits linked (each once, ids as expected), none other under its id."""
    assert count(driver, settings, "MATCH (s:Study {id: $id}) RETURN count(s) AS n", id=study_id) == 1
    ids = linked(driver, settings, study_id)
    assert len(ids) == 15 and set(ids) == expected_ids(study_id), sorted(ids)
    assert count(driver, settings, "MATCH (c:Circuit) WHERE c.id STARTS WITH $p RETURN count(c) AS n",
                 p=study_id + ".") == 15


@pytest.fixture(scope="module")
def first(stack) -> dict:
    seen = []
    with stack.client() as client:
        study_id = submit(stack, client, BODY)
        study = follow(client, study_id, lambda s: seen.append(s) or done(s))
        job = client.get(f"/v1/jobs/{study_id}").raise_for_status().json()
    return {"id": study_id, "study": study, "seen": seen, "job": job}


def test_study_through_rest_two_workers_and_neo4j(first, neo4j_driver, settings):
    study, job, study_id = first["study"], first["job"], first["id"]
    assert study["state"] == "succeeded", study
    assert study["spec"]["tasks"] == TASKS  # "all": the model's five tasks
    # one piece per (task, method), each a job run by a worker process; the two workers shared them
    pieces = study["pieces"]
    assert [(p["task"], p["method"]) for p in pieces] == [(t, m) for t in TASKS for m in METHODS]
    assert all(p["state"] == "succeeded" and p["id"] == f"{study_id}.{p['task']}.{p['method']}" for p in pieces)
    assert len({p["worker"] for p in pieces}) == 2, [p["worker"] for p in pieces]
    assert sorted(job["parts"]) == sorted(p["id"] for p in pieces) and len(job["circuit_ids"]) == 15
    # progress of the whole study while it ran, and of its pieces
    running = [s for s in first["seen"] if s["state"] == "running"]
    assert any(s["progress"]["total"] == 15 and 0 < (s["progress"]["percent"] or 0) < 100 for s in running)
    assert any(p["state"] == "running" for s in running for p in s["pieces"])
    # the summary: 15 rows at the chosen point, per-method means
    rows = study["summary"]["rows"]
    assert len(rows) == 15 and {r["circuit_id"] for r in rows} == expected_ids(study_id)
    for row in rows:
        assert row["threshold"] == 0.01 and row["n_edges"] >= 0
        assert row["cpr"] is not None and row["cmd"] is not None and row["faithfulness"] is not None, row
    assert [m["method"] for m in study["summary"]["means"]] == METHODS
    assert {c["id"] for c in study["circuits"]} == expected_ids(study_id)
    assert_stored_once(neo4j_driver, settings, study_id)


def test_a_stored_circuit_carries_its_curve(stack, first):
    with stack.client() as client:
        circuit = client.get(f"/v1/circuits/{first['id']}.ioi.eap-ig").raise_for_status().json()
        listed = client.get("/v1/studies", params={"model": "multitask"}).raise_for_status().json()
    row = next(r for r in first["study"]["summary"]["rows"] if r["task"] == "ioi" and r["method"] == "eap-ig")
    assert circuit["curve"]["cpr"] == pytest.approx(row["cpr"]) and len(circuit["curve"]["points"]) == 10
    assert first["id"] in [s["id"] for s in listed["studies"]]


def test_a_study_in_another_edge_order_scores_stability(stack):
    """edge_order and stability reach every piece: the chosen circuits are found in that order,
    carry a stability score, and the summary rows hold its means."""
    body = {"model": "multitask", "tasks": ["ioi"], "methods": ["acdc"], "n_prompts": 10,
            "edge_order": "auto-circuit", "stability": 1}
    with stack.client() as client:
        study_id = submit(stack, client, body)
        study = follow(client, study_id, done)
        assert study["state"] == "succeeded", study
        circuit = client.get(f"/v1/circuits/{study_id}.ioi.acdc").raise_for_status().json()
    assert circuit["provenance"]["params"]["edge_order"] == "auto-circuit"
    score = circuit["stability"]
    assert score["edge_order"] == "auto-circuit" and score["orders"]["n"] == score["prompts"]["n"] == 1
    row = study["summary"]["rows"][0]
    assert row["stability_orders"] == pytest.approx(score["orders"]["jaccard_mean"])
    assert row["stability_prompts"] == pytest.approx(score["prompts"]["jaccard_mean"])


def _records(stack, study_id: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The study's job record and its pieces' (by id), straight from Redis: runners included."""
    r = redis.Redis.from_url(stack.env["ATLAS_REDIS_URL"], decode_responses=True)
    pieces = {f"{study_id}.{t}.{m}": r.hgetall(f"atlas:job:{study_id}.{t}.{m}") for t in TASKS for m in METHODS}
    return r.hgetall(f"atlas:job:{study_id}"), pieces


def _running_piece(stack, study_id: str, inline: bool) -> str | None:
    """A piece running now in the study job's own process (``inline``) or in the other worker,
    once some piece has finished; None otherwise."""
    _, pieces = _records(stack, study_id)
    if not any(p.get("state") == "succeeded" for p in pieces.values()):
        return None
    return next((pid for pid, p in pieces.items() if p.get("state") == "running"
                 and ("/inline/" in p.get("runner", "")) == inline), None)


@pytest.mark.parametrize("victim", ["the study's worker", "a piece's worker"])
def test_killed_worker_mid_study_loses_no_piece_and_duplicates_none(stack, neo4j_driver, settings, victim):
    """SIGKILL the worker running the study job (its pieces run inline are killed with it: the
    other worker takes the study over after the sweep re-queues it) or the one running a piece
    of the group (the study job takes the stale piece over)."""
    inline = victim == "the study's worker"
    with stack.client() as client:
        study_id = submit(stack, client, SLOW)
        deadline, target = time.monotonic() + 120, None
        while target is None:
            assert time.monotonic() < deadline and not done(client.get(f"/v1/studies/{study_id}").json())
            target = _running_piece(stack, study_id, inline)
            time.sleep(0.05)
        parent_task = _records(stack, study_id)[0]["task_id"]
        runs_study = next(w for w in (stack.worker, stack.second) if f"[{parent_task}] received" in w.log.read_text())
        killed = runs_study if inline else next(w for w in (stack.worker, stack.second) if w is not runs_study)
        at_kill = client.get(f"/v1/studies/{study_id}").json()
        os.killpg(killed.pid, signal.SIGKILL)  # the worker's main process and its pool
        killed.wait()
        cut_short = _records(stack, study_id)[1][target]["state"] == "running"  # not just finished
        study = follow(client, study_id, done, timeout=400)
        replacement = stack.start_worker()  # for the tests after this one
        if killed is stack.worker:
            stack.worker = replacement
        else:
            stack.second = replacement
        _ready(replacement)
        job = client.get(f"/v1/jobs/{study_id}").json()
    assert study["state"] == "succeeded", study
    assert job["attempts"] == (2 if inline else 1), job  # the study job itself ran again only if killed
    before, after = {p["id"]: p for p in at_kill["pieces"]}, {p["id"]: p for p in study["pieces"]}
    for pid, piece in after.items():  # finished pieces kept their results
        assert piece["state"] == "succeeded"
        if before[pid]["state"] == "succeeded":
            assert piece["attempts"] == before[pid]["attempts"] == 1, (piece, before[pid])
    if cut_short:  # the killed piece ran again, once
        assert after[target]["attempts"] == 2, after[target]
    assert len(study["summary"]["rows"]) == 15
    assert_stored_once(neo4j_driver, settings, study_id)


def test_cancel_a_running_study_stores_nothing(stack, neo4j_driver, settings):
    with stack.client() as client:
        study_id = submit(stack, client, SLOW)
        follow(client, study_id, lambda s: done(s) or any(p["state"] == "running" for p in s["pieces"]))
        response = client.delete(f"/v1/studies/{study_id}")
        assert response.status_code == 202 and response.json()["cancel_requested"], response.text
        study = follow(client, study_id, done, timeout=120)
        assert study["state"] == "cancelled", study
        # a piece stops at its next check (a fresh worker loading the model checks only after)
        pieces = follow(client, study_id, lambda s: all(p["state"] in TERMINAL for p in s["pieces"]),
                        timeout=60)["pieces"]
    assert all(p["state"] in ("succeeded", "cancelled") for p in pieces), pieces
    assert any(p["state"] == "cancelled" for p in pieces), pieces
    assert count(neo4j_driver, settings, "MATCH (s:Study {id: $id}) RETURN count(s) AS n", id=study_id) == 0
    assert count(neo4j_driver, settings, "MATCH (c:Circuit) WHERE c.id STARTS WITH $p RETURN count(c) AS n",
                 p=study_id + ".") == 0


def test_delete_a_stored_study_deletes_its_circuits(stack, neo4j_driver, settings):
    with stack.client() as client:
        study_id = submit(stack, client, {**BODY, "tasks": ["ioi"], "methods": ["eap"], "thresholds": [0.1]})
        study = follow(client, study_id, done)
        assert study["state"] == "succeeded" and len(study["circuits"]) == 2, study  # chosen + grid point
        assert sorted(c["id"] for c in study["circuits"]) == [f"{study_id}.ioi.eap", f"{study_id}.ioi.eap.t0.1"]
        assert client.delete(f"/v1/studies/{study_id}").status_code == 204
        assert client.get(f"/v1/studies/{study_id}").status_code == 404
        assert client.delete(f"/v1/studies/{study_id}").status_code == 404
    assert count(neo4j_driver, settings, "MATCH (c:Circuit) WHERE c.id STARTS WITH $p RETURN count(c) AS n",
                 p=study_id + ".") == 0


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"tasks": ["ioi", "inductionx"]}, "tasks", "unknown task 'inductionx'"),
    ({"methods": ["acdc", "magic"]}, "methods", "unknown method"),
    ({"model": "nomodel"}, "model", "unknown model"),
    ({"methods": ["acdc", "acdc-reference", "eap", "eap-ig", "eap-ig+acdc"],
      "thresholds": [0.001 * i for i in range(1, 18)]}, "thresholds", "would store 425 circuits"),
    ({"thresholds": [0.1] * 33}, "thresholds", "give 1 to 32"),
    ({"threshold": {"magic": 0.1}}, "threshold", "not among methods"),
])
def test_bad_studies_name_the_field_and_queue_nothing(stack, body, field, words):
    with stack.client() as client:
        before = client.get("/v1/jobs").json()["total"]
        response = client.post("/v1/studies", json={**BODY, **body})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert any(e["loc"][-1] == field and words in e["msg"] for e in detail), detail
        assert client.get("/v1/jobs").json()["total"] == before
        assert client.get("/v1/studies/no-such-study").status_code == 404


def test_cli_study_waits_and_prints_the_table(stack):
    env = {**os.environ, "ATLAS_API_URL": stack.api.url, "ATLAS_API_KEY": "atlas-dev-write", "OMP_NUM_THREADS": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    ran = cli("study", "--model", "multitask", "--tasks", "ioi,induction", "--methods", "acdc,eap",
              "--n-prompts", "8", "--wait")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "4/4 pieces" in ran.stderr and "100%" in ran.stderr  # the bar
    study_id = ran.stdout.split()[2]  # "submitted study ID ..."
    stack.submitted.append(study_id)
    out = ran.stdout
    assert "CPR / CMD" in out and "means over tasks" in out
    assert any(line.split()[:3] == ["method", "ioi", "induction"] for line in out.splitlines()), out
    assert cli("studies", "list").stdout.count(study_id) == 1
    assert "CPR / CMD" in cli("studies", "show", study_id).stdout
    assert cli("studies", "delete", study_id).returncode == 0
    gone = cli("studies", "show", study_id)
    assert gone.returncode == 1 and "404" in gone.stderr and "Traceback" not in gone.stderr
    bad = cli("study", "--model", "multitask", "--methods", "acdc,magic")
    assert bad.returncode == 1 and "methods" in bad.stderr and "unknown method" in bad.stderr
    assert "Traceback" not in bad.stderr
