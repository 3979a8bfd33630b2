"""Competition experiments end to end: REST -> Redis -> a real Celery worker -> Neo4j -> REST.

Its own API and worker on Redis database 8 (the session's worker never takes these jobs, and the
worker killed here is the only one that had the job). Circuits are discovered inside the first
experiment and reused by id in the others, so each experiment after the first skips discovery.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance
from graphstore.store import delete_circuit, write_circuit
from tests.integration.test_jobs import Stack, finished, wait

pytestmark = pytest.mark.slow
FAST = {"n_prompts": 24, "n_conflicts": 24}  # small batches: the numbers still come from real passes


@pytest.fixture(scope="module")
def stack(settings, neo4j_driver, tmp_path_factory):
    url = settings.redis_url.rsplit("/", 1)[0] + "/8"
    redis.Redis.from_url(url).flushdb()
    s = Stack(tmp_path_factory.mktemp("experiments"), url)
    yield s
    s.stop()


def count(driver, settings, query: str, **params) -> int:
    records, _, _ = driver.execute_query(query, database_=settings.neo4j_database, **params)
    return records[0]["n"]


def run_to_end(client, body: dict, timeout: float = 300) -> tuple[dict, list[dict]]:
    """Submit ``body``; the finished job and the running snapshots seen on the way."""
    response = client.post("/v1/experiments", json=body)
    assert response.status_code == 202, response.text
    job_id, seen = response.json()["id"], []

    def done(job: dict) -> bool:
        if job["state"] == "running":
            seen.append(job)
        return finished(job)

    return wait(client, job_id, done, timeout=timeout), seen


@pytest.fixture(scope="module")
def first(stack) -> dict:
    """ioi x induction on multitask, circuits discovered by the job itself."""
    with stack.client() as client:
        job, seen = run_to_end(client, {"model": "multitask", "tasks": ["ioi", "induction"], **FAST})
        assert job["state"] == "succeeded", job
        experiment = client.get(f"/v1/experiments/{job['result_id']}").raise_for_status().json()
    return {"job": job, "seen": seen, "experiment": experiment}


def test_ioi_x_induction_through_rest_worker_and_neo4j(stack, first, neo4j_driver, settings):
    job, exp = first["job"], first["experiment"]
    assert job["kind"] == "experiment" and job["result_id"] == job["id"] == exp["id"]
    assert set(exp["circuits"]) == {"ioi", "induction"} and job["circuit_ids"] == [
        exp["circuits"]["ioi"], exp["circuits"]["induction"]]
    staged = [s for s in first["seen"] if s["progress"]["percent"] is not None]
    assert staged, "no progress was ever published while the job ran"
    node_cells = [c for c in exp["ablations"] if c["kind"] == "nodes"]
    assert {(c["set_name"], c["task"]) for c in node_cells} == {
        (s, t) for s in ("ioi", "induction", "ioi&induction", "ioi-induction", "induction-ioi")
        for t in ("ioi", "induction")}
    for cell in exp["ablations"]:
        control, state = cell["control"], cell["verdict"]["state"]
        if control is None:  # an empty set, or no random set of its size and kind exists
            assert state == "inconclusive" and cell["verdict"]["detail"], cell
        else:  # 20 or more draws, or every set there is (an exact p)
            assert control["n"] >= 20 or control["distinct"] == control["n"], cell
            assert 0 < control["p_value"] <= 1 and state in ("supported", "not supported", "inconclusive")
    assert any(c["control"] and c["control"]["n"] >= 20 for c in exp["ablations"])
    conflict = exp["conflicts"][0]
    assert conflict["pair"] == "ioi|induction" and conflict["source"].startswith("builtin")
    assert abs(sum(conflict["win_rate"].values()) - 1) < 1e-6 or conflict["logit_diff_mean"] is not None
    assert [len(d["points"]) for d in exp["dose"]] == [6, 6]
    with stack.client() as client:
        for cid in exp["circuits"].values():  # the discovered circuits are stored beside it
            assert client.get(f"/v1/circuits/{cid}").status_code == 200
        listed = client.get("/v1/experiments", params={"task": "ioi", "model": "multitask"}).json()
        assert exp["id"] in [e["id"] for e in listed["experiments"]]
        by_circuit = client.get("/v1/experiments", params={"circuit": exp["circuits"]["induction"]}).json()
        assert [e["id"] for e in by_circuit["experiments"]] == [exp["id"]]
    assert count(neo4j_driver, settings, "MATCH (e:Experiment {id: $id})-[:TESTS]->(c:Circuit) "
                 "RETURN count(c) AS n", id=exp["id"]) == 2


@pytest.fixture(scope="module")
def successor_circuit(stack) -> str:
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json={"model": "multitask", "task": "successor"}).json()["id"]
        job = wait(client, job_id, finished, timeout=120)
    assert job["state"] == "succeeded", job
    return job["circuit_id"]


def _numbers(exp: dict) -> dict:
    """Everything measured, without what differs between two runs by design."""
    drop = {"id", "provenance"}
    return {k: v for k, v in exp.items() if k not in drop}


def test_second_pair_on_given_circuits_twice_gives_identical_numbers(stack, first, successor_circuit):
    body = {"model": "multitask", "tasks": ["successor", "induction"],
            "circuits": [successor_circuit, first["experiment"]["circuits"]["induction"]], **FAST}
    with stack.client() as client:
        runs = []
        for _ in range(2):
            job, _ = run_to_end(client, body)
            assert job["state"] == "succeeded", job
            runs.append(client.get(f"/v1/experiments/{job['result_id']}").raise_for_status().json())
    assert runs[0]["circuits"] == {"successor": successor_circuit,
                                   "induction": first["experiment"]["circuits"]["induction"]}
    assert runs[0]["id"] != runs[1]["id"]
    assert _numbers(runs[0]) == _numbers(runs[1])


def test_killed_mid_run_completes_once_after_a_restart(stack, first, neo4j_driver, settings):
    ids = [first["experiment"]["circuits"]["ioi"], first["experiment"]["circuits"]["induction"]]
    body = {"model": "multitask", "tasks": ["ioi", "induction"], "circuits": ids, "n_controls": 60,
            **FAST}  # ~15 s: long enough to be caught mid-run
    with stack.client() as client:
        job_id = client.post("/v1/experiments", json=body).raise_for_status().json()["id"]
        wait(client, job_id, lambda j: j["progress"]["stage"] == "controls" and not finished(j), timeout=120)
        os.killpg(stack.worker.pid, signal.SIGKILL)  # the whole worker: main process and pool
        stack.worker.wait()
        time.sleep(1)
        stack.worker = stack.start_worker()
        job = wait(client, job_id, finished, timeout=400)
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    assert count(neo4j_driver, settings, "MATCH (e:Experiment {id: $id}) RETURN count(e) AS n", id=job_id) == 1
    assert count(neo4j_driver, settings, "MATCH (e:Experiment {id: $id})-[r:TESTS]->() RETURN count(r) AS n",
                 id=job_id) == 2


@pytest.fixture()
def foreign_circuit(neo4j_driver, settings):
    """A stored circuit of another model (induction-gt) for task ioi."""
    circuit = Circuit(id="experiments-foreign-model", nodes=(Node.parse("embed"), Node.parse("logits")),
                      edges=(Edge.parse("embed->logits"),), metrics=Metrics(1.0, 0.0, 1.0, "logit_diff"),
                      provenance=Provenance(model="induction-gt", task="ioi", method="acdc"),
                      graph=GraphShape(2, 2, mlp=False))
    write_circuit(neo4j_driver, circuit, database=settings.neo4j_database)
    yield circuit.id
    delete_circuit(neo4j_driver, circuit.id, database=settings.neo4j_database)


BASE = {"model": "multitask", "tasks": ["ioi", "induction"]}


@pytest.mark.parametrize("body, field, words", [
    ({**BASE, "circuits": ["no-such-circuit-1", "no-such-circuit-2"]}, "circuits", "no stored circuit"),
    ({**BASE, "tasks": ["ioi"]}, "tasks", "at least two"),
    ({**BASE, "conflicts": {"ioi|induction": []}}, "conflicts", "empty"),
    ({**BASE, "alphas": [i / 4 for i in range(13)]}, "alphas", "at most 12"),
    ({**BASE, "conflicts": {"ioi|induction": [{"prompt": "When Zebulon and Mary went to", "answers":
                                               {"ioi": "Mary", "induction": "John"}}]}},
     "conflicts", "Zebulon"),
    ({**BASE, "conflicts": {"ioi|pronoun": [{"prompt": "x", "answers": {"ioi": "a", "pronoun": "b"}}]}},
     "conflicts", "not a pair"),
    ({**BASE, "tasks": ["ioi", "pronoun"]}, "conflicts", "no built-in conflict prompts"),
])
def test_bad_experiments_name_the_field_and_queue_nothing(stack, body, field, words):
    with stack.client() as client:
        before = client.get("/v1/jobs").json()["total"]
        response = client.post("/v1/experiments", json=body)
        after = client.get("/v1/jobs").json()["total"]
    assert response.status_code == 422, response.text
    text = response.text
    assert field in text and words in text, text
    assert "Traceback" not in text and before == after


def test_circuits_of_another_model_are_refused(stack, first, foreign_circuit):
    body = {**BASE, "circuits": [foreign_circuit, first["experiment"]["circuits"]["induction"]]}
    with stack.client() as client:
        response = client.post("/v1/experiments", json=body)
        missing = client.get("/v1/experiments/no-such-experiment")
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "circuits", 0] and "induction-gt" in detail["msg"]
    assert missing.status_code == 404 and "no experiment" in missing.json()["detail"]


def test_circuits_compete_waits_prints_and_writes_the_report(stack, first, successor_circuit, tmp_path):
    """The CLI against the real API and worker: progress, the headline tables, PNG + markdown + JSON."""
    import json
    import subprocess
    import sys

    from discovery.experiments.result import Experiment
    from tests.conftest import ROOT

    ids = f"{successor_circuit},{first['experiment']['circuits']['induction']}"
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "compete", "--api", stack.api.url, "--key", "atlas-dev-write",
         "--model", "multitask", "--tasks", "successor,induction", "--circuits", ids,
         "--n-prompts", "24", "--n-conflicts", "24", "--wait", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, **stack.env})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "successor|induction" in done.stdout and "dose" in done.stdout.lower()
    written = {p.suffix: p for p in tmp_path.iterdir()}
    assert set(written) == {".png", ".md", ".json"}
    assert written[".png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    experiment = Experiment.from_json(written[".json"].read_text())
    assert experiment.circuits["successor"] == successor_circuit
    assert "What it does not show" in written[".md"].read_text()
    assert json.loads(written[".json"].read_text())["id"] == experiment.id


def test_cancel_a_running_experiment_stores_nothing(stack, neo4j_driver, settings):
    from discovery.experiments.result import discovered_circuit_id

    body = {"model": "multitask", "tasks": ["ioi", "induction"], "n_controls": 60, **FAST}
    with stack.client() as client:
        job_id = client.post("/v1/experiments", json=body).raise_for_status().json()["id"]
        wait(client, job_id, lambda j: j["progress"]["stage"] in ("ablation matrix", "controls"), timeout=120)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 202
        job = wait(client, job_id, finished, timeout=30)
    assert job["state"] == "cancelled", job
    assert count(neo4j_driver, settings, "MATCH (e:Experiment {id: $id}) RETURN count(e) AS n", id=job_id) == 0
    ids = [discovered_circuit_id(job_id, t) for t in ("ioi", "induction")]
    assert count(neo4j_driver, settings, "MATCH (c:Circuit) WHERE c.id IN $ids RETURN count(c) AS n", ids=ids) == 0
