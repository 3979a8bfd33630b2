"""A finished job's record survives a Redis restart (the append-only file), and so does a queued
job: the worker started after the restart runs it."""

from __future__ import annotations

import sys
import time

import httpx

from api.ops.process import spawn, stop_group
from api.ops.redis_local import RedisLocal
from tests.conftest import ROOT, ApiServer, free_port
from tests.integration.test_jobs import WRITE, finished, wait


def test_job_records_survive_a_redis_restart(tmp_path, reaper, neo4j_driver):
    redis = RedisLocal(home=tmp_path / "redis", port=free_port())
    reaper(redis)
    redis.up()
    env = {"ATLAS_REDIS_URL": redis.url()}
    api = ApiServer(tmp_path, env)
    worker = spawn([sys.executable, "-m", "api.cli", "worker"], tmp_path / "worker.log", env=env, cwd=ROOT)
    try:
        with httpx.Client(base_url=api.url, headers=WRITE, timeout=30) as client:
            body = {"model": "multitask", "task": "greater_than", "method": "eap", "top_n": 10, "n_prompts": 8}
            done = wait(client, client.post("/v1/jobs", json=body).json()["id"], finished, timeout=180)
            stop_group(worker)  # nobody takes the next job until after the restart
            queued = client.post("/v1/jobs", json=body).json()["id"]
            redis.down()
            time.sleep(0.5)
            redis.up()
            after = client.get(f"/v1/jobs/{done['id']}").json()
            worker = spawn([sys.executable, "-m", "api.cli", "worker"], tmp_path / "worker2.log", env=env, cwd=ROOT)
            second = wait(client, queued, finished, timeout=180)
    finally:
        stop_group(worker)
        api.stop()
        redis.down()
    assert done["state"] == "succeeded"
    assert after == done  # the whole record, circuit id included
    assert second["state"] == "succeeded" and second["circuit_id"] == queued
