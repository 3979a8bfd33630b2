"""The FastAPI app served by uvicorn: /health reports real reachability (jobs: test_jobs.py)."""

from __future__ import annotations

import time

from api.ops.redis_local import RedisLocal
from tests.conftest import free_port

KEY = {"X-API-Key": "atlas-dev-read"}


def test_health_ok_with_both_services(api_server):
    with api_server().client() as client:
        response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["neo4j"]["reachable"] and body["redis"]["reachable"]


def test_health_503_when_redis_goes_down(api_server, tmp_path, reaper):
    redis = RedisLocal(home=tmp_path / "redis", port=free_port())
    reaper(redis)
    redis.up()
    try:
        with api_server({"ATLAS_REDIS_URL": redis.url()}).client() as client:
            assert client.get("/health").status_code == 200
            redis.down()
            response = client.get("/health", headers=KEY)  # the reasons are for key holders only
    finally:
        redis.down()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["redis"]["reachable"] is False and body["redis"]["error"]
    assert body["neo4j"]["reachable"] is True


def test_health_503_when_neo4j_unreachable(api_server):
    dead = free_port()
    with api_server({"ATLAS_NEO4J_URI": f"bolt://127.0.0.1:{dead}"}).client() as client:
        started = time.monotonic()
        response = client.get("/health", headers=KEY)
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["neo4j"] == {"reachable": False, "address": f"127.0.0.1:{dead}",
                             "error": body["neo4j"]["error"]}
    assert body["neo4j"]["error"] and body["redis"]["reachable"] is True
    assert elapsed < 15  # bounded by the health timeout, not a hang


def test_unknown_ids(api_server):
    with api_server().client() as client:
        headers = {"X-API-Key": "atlas-dev-read"}
        assert client.get("/v1/jobs/nope", headers=headers).status_code == 404
        assert client.get("/v1/circuits/nope", headers=headers).status_code == 404
