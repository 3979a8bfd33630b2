"""A custom task named like a built-in task lives in its own namespace: its circuit is stored
under ``custom:<name>`` and the built-in Task node keeps every property it had."""

from __future__ import annotations

import redis

from discovery.tasks import get_task
from graphstore.store import delete_circuit
from tests.integration.test_jobs import Stack, finished, wait

TASK_PROPS = "MATCH (t:Task {id: $id}) RETURN properties(t) AS props"
CIRCUIT_TASK = "MATCH (:Circuit {id: $id})-[:FOR_TASK]->(t:Task) RETURN t.id AS task, t.metric AS metric"


def _task_props(driver, task_id: str, database: str) -> dict | None:
    records, _, _ = driver.execute_query(TASK_PROPS, id=task_id, database_=database)
    return records[0]["props"] if records else None


def _custom_induction(n: int = 8) -> dict:
    """Real induction pairs, renamed ``induction`` and judged by another metric (kl), so a
    clobbered built-in Task node would show it."""
    data = get_task("induction").generate(n, seed=3)
    return {"name": "induction", "metric": "kl",
            "pairs": [{"clean": p.clean, "corrupt": p.corrupt, "answer": list(p.answers)}
                      for p in data.pairs]}


def test_custom_task_named_induction_leaves_the_builtin_task_alone(settings, neo4j_driver, tmp_path):
    url = settings.redis_url.rsplit("/", 1)[0] + "/9"
    redis.Redis.from_url(url).flushdb()
    db = settings.neo4j_database
    stack = Stack(tmp_path, url)
    created: list[str] = []
    try:
        with stack.client() as client:
            builtin = client.post("/v1/jobs", json={"model": "multitask", "task": "induction",
                                                    "method": "eap", "top_n": 5, "n_prompts": 8})
            first = wait(client, builtin.json()["id"], finished)
            created.append(first["id"])
            assert first["state"] == "succeeded", first
            before = _task_props(neo4j_driver, "induction", db)
            custom = client.post("/v1/jobs", json={"model": "multitask", "task": _custom_induction(),
                                                   "method": "eap", "top_n": 5})
            assert custom.status_code == 202, custom.text
            job = wait(client, custom.json()["id"], finished)
            created.append(job["id"])
            records, _, _ = neo4j_driver.execute_query(CIRCUIT_TASK, id=job["id"], database_=db)
            after = _task_props(neo4j_driver, "induction", db)
    finally:
        stack.stop()
        for circuit_id in created:
            delete_circuit(neo4j_driver, circuit_id, database=db)
    assert job["state"] == "succeeded", job
    assert before is not None and before["metric"] == "logprob"
    assert after == before  # the built-in Task node: not one property changed
    assert job["spec"]["task"]["name"] == "induction"
    assert [(r["task"], r["metric"]) for r in records] == [("custom:induction", "kl")]
