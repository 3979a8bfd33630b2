"""Key guards on a real server of their own: failed keys from one address are answered 429 for the
window (good keys too, so the block is no oracle), and ``/health`` without a key says up or down
and nothing more (no address, no exception text), while a key holder sees the details."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import free_port

OWN_WRITE = "own-writer-key-0123456789"
LIMIT, WINDOW_S = 3, 3.0
ENV = {"ATLAS_API_KEYS": f"{OWN_WRITE}:write", "ATLAS_AUTH_FAIL_LIMIT": str(LIMIT),
       "ATLAS_AUTH_FAIL_WINDOW_S": str(WINDOW_S)}


def _tasks(client: httpx.Client, key: str | None) -> httpx.Response:
    return client.get("/v1/tasks", headers={"X-API-Key": key} if key is not None else {})


@pytest.mark.slow
def test_failed_keys_are_limited_per_address(api_server):
    with api_server(ENV).client() as client:
        assert _tasks(client, OWN_WRITE).status_code == 200
        started = time.monotonic()
        for guess in range(LIMIT):
            assert _tasks(client, f"guess-{guess}").status_code == 401
        blocked = _tasks(client, "guess-again")
        assert blocked.status_code == 429, blocked.text
        assert blocked.headers["content-type"] == "application/json"
        assert "too many failed API keys" in blocked.json()["detail"]
        assert 1 <= int(blocked.headers["retry-after"]) <= WINDOW_S
        # While blocked, the good key is refused the same way: the answer tells a guesser nothing.
        good = _tasks(client, OWN_WRITE)
        assert good.status_code == 429 and good.json() == {"detail": good.json()["detail"]}
        assert client.get("/health", headers={"X-API-Key": OWN_WRITE}).status_code == 429
        # No key is no guess: still the plain 401, and /health without a key still answers.
        assert _tasks(client, None).status_code == 401
        assert client.get("/health").status_code == 200
        deadline = started + WINDOW_S + 5
        while _tasks(client, OWN_WRITE).status_code == 429:
            assert time.monotonic() < deadline, "the block outlived its window"
            time.sleep(0.2)
        assert time.monotonic() - started >= WINDOW_S - 0.5
        assert _tasks(client, OWN_WRITE).status_code == 200


def test_health_without_a_key_shows_up_or_down_only(api_server):
    dead = free_port()
    env = ENV | {"ATLAS_NEO4J_URI": f"bolt://127.0.0.1:{dead}"}
    with api_server(env).client() as client:
        anonymous = client.get("/health")
        detailed = client.get("/health", headers={"X-API-Key": OWN_WRITE})
        wrong = client.get("/health", headers={"X-API-Key": "not-a-key"})
    assert anonymous.status_code == 503
    assert anonymous.json() == {"status": "degraded", "neo4j": {"reachable": False},
                                "redis": {"reachable": True}}
    assert str(dead) not in anonymous.text and "127.0.0.1" not in anonymous.text
    assert detailed.status_code == 503
    body = detailed.json()
    assert body["neo4j"]["address"] == f"127.0.0.1:{dead}" and body["neo4j"]["error"]
    assert body["redis"]["reachable"] is True and "error" not in body["redis"]
    assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown API key"


def test_health_schema_documents_both_views(api_server):
    with api_server(ENV).client() as client:
        operation = client.get("/openapi.json").json()["paths"]["/health"]["get"]
    assert {"200", "401", "429", "503"} <= set(operation["responses"])
    assert any(p["name"] == "X-API-Key" for p in operation.get("parameters", [])) or operation.get("security")
