"""What the API refuses, on a real server: requests without a valid key (401) or with a read key on
a write route (403), bodies over the cap (413, declared or streamed), malformed JSON, bad Cypher
(writes, syntax, timeouts), and an internal failure that must come back as JSON without a
traceback. Every refusal is a JSON body whose ``detail`` says what was wrong."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.integration.api.conftest import ADMIN_KEY, BODY_CAP, READ_KEY, WRITE_KEY

#: Every /v1 route, with a request that reaches it; path values that name nothing are fine (the
#: key is checked first), and the job submitted is invalid, so nothing is queued.
READ_ROUTES = [
    ("GET", "/v1/circuits", None),
    ("GET", "/v1/circuits/{circuit_id}", None),
    ("GET", "/v1/compare?ids=a,b", None),
    ("GET", "/v1/compare/models?ids=a,b", None),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/{model}/overlap", None),
    ("GET", "/v1/models/{model}/hubs", None),
    ("GET", "/v1/tasks", None),
    ("POST", "/v1/cypher", {"query": "RETURN 1 AS one"}),
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/jobs/{job_id}", None),
    ("GET", "/v1/experiments", None),
    ("GET", "/v1/experiments/{experiment_id}", None),
    ("GET", "/v1/timelines", None),
    ("GET", "/v1/timelines/runs", None),
    ("GET", "/v1/timelines/{timeline_id}", None),
    ("GET", "/v1/studies", None),
    ("GET", "/v1/studies/{study_id}", None),
]
WRITE_ROUTES = [
    ("DELETE", "/v1/circuits/{circuit_id}", None),
    ("POST", "/v1/circuits", {"circuit": ["not an edge"], "model": "none", "task": "ioi", "method": "x"}),
    ("POST", "/v1/jobs", {"model": "none", "task": "ioi"}),
    ("DELETE", "/v1/jobs/{job_id}", None),
    ("POST", "/v1/experiments", {"model": "none", "tasks": ["ioi", "induction"]}),
    ("DELETE", "/v1/experiments/{experiment_id}", None),
    ("POST", "/v1/timelines", {"run": "none", "tasks": ["induction"]}),
    ("DELETE", "/v1/timelines/{timeline_id}", None),
    ("POST", "/v1/studies", {"model": "none", "methods": ["acdc"]}),
    ("DELETE", "/v1/studies/{study_id}", None),
]
ALL_ROUTES = READ_ROUTES + WRITE_ROUTES


def _send(client: httpx.Client, method: str, path: str, body: dict | None,
          key: str | None) -> httpx.Response:
    url = path.format(circuit_id=f"none-{uuid.uuid4().hex[:6]}", model="none", job_id="none",
                      experiment_id=f"none-{uuid.uuid4().hex[:6]}",
                      timeline_id=f"none-{uuid.uuid4().hex[:6]}", study_id=f"none-{uuid.uuid4().hex[:6]}")
    headers = {"X-API-Key": key} if key is not None else {}
    return client.request(method, url, json=body, headers=headers)


def test_every_v1_route_is_classified(anonymous):
    """A new route must be added to the tables above, so that its key check is tested."""
    spec = anonymous.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops
              if path.startswith("/v1/")}
    assert routes == {(m, p.split("?")[0]) for m, p, _ in ALL_ROUTES}


@pytest.mark.parametrize(("method", "path", "body"), ALL_ROUTES)
def test_no_key_or_unknown_key_is_401(anonymous, method, path, body):
    for key, text in ((None, "missing X-API-Key"), ("not-a-key", "unknown API key"),
                      ("atlas-dev-write", "unknown API key")):  # the default keys were replaced
        response = _send(anonymous, method, path, body, key)
        assert response.status_code == 401, (key, response.text)
        assert text in response.json()["detail"]
        assert response.headers["www-authenticate"] == "APIKey"


@pytest.mark.parametrize(("method", "path", "body"), WRITE_ROUTES)
def test_read_key_on_write_route_is_403(anonymous, method, path, body):
    response = _send(anonymous, method, path, body, READ_KEY)
    assert response.status_code == 403 and "write key" in response.json()["detail"]
    for key in (WRITE_KEY, ADMIN_KEY):  # admin implies write
        assert _send(anonymous, method, path, body, key).status_code in (404, 422)  # past the key check


@pytest.mark.parametrize(("method", "path", "body"), READ_ROUTES)
def test_every_key_may_read(anonymous, method, path, body):
    for key in (READ_KEY, WRITE_KEY, ADMIN_KEY):
        response = _send(anonymous, method, path, body, key)
        assert response.status_code not in (401, 403), (key, response.text)


def test_body_over_the_cap_is_413(reader):
    query = {"query": "RETURN $x AS x", "params": {"x": "y" * BODY_CAP}}
    declared = reader.post("/v1/cypher", json=query)
    assert declared.status_code == 413
    assert f"{BODY_CAP} bytes" in declared.json()["detail"] and "ATLAS_MAX_BODY_BYTES" in declared.json()["detail"]

    def chunks(total: int, size: int = 1000):
        for start in range(0, total, size):
            yield b" " * min(size, total - start)

    streamed = reader.post("/v1/cypher", content=chunks(3 * BODY_CAP),
                           headers={"Content-Type": "application/json"})
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    assert streamed.status_code == 413 and f"{BODY_CAP} bytes" in streamed.json()["detail"]
    # Just under the cap, streamed, goes through whole.
    small = b'{"query": "RETURN size($x) AS n", "params": {"x": "' + b"y" * 3000 + b'"}}'
    ok = reader.post("/v1/cypher", content=iter([small[:100], small[100:]]),
                     headers={"Content-Type": "application/json"})
    assert ok.status_code == 200 and ok.json()["rows"] == [[3000]]


def test_malformed_json_and_bad_fields(reader):
    broken = reader.post("/v1/cypher", content=b'{"query": "RETURN 1",',
                         headers={"Content-Type": "application/json"})
    assert broken.status_code == 400
    assert "not valid JSON" in broken.json()["detail"]
    missing = reader.post("/v1/cypher", json={"params": {}})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "query"]
    extra = reader.post("/v1/cypher", json={"query": "RETURN 1", "limit": 3})
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "limit"]
    not_object = reader.post("/v1/cypher", json=["RETURN 1"])
    assert not_object.status_code == 422


@pytest.mark.parametrize(("query", "params", "kind", "text"), [
    ("CREATE (n:Intruder) RETURN n", {}, "write", "refuses writes"),
    ("MATCH (n) DETACH DELETE n", {}, "write", "refuses writes"),
    ("LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row", {}, "refused", "LoadCSV"),
    ("MATCH (n RETURN n", {}, "syntax", "Cypher syntax error"),
    ("RETURN $missing AS x", {}, "parameter", "missing"),
    ("UNWIND range(1, 1000000000) AS x RETURN sum(x)", {}, "timeout", "1s timeout"),
])
def test_cypher_refusals_are_400_with_kind(reader, query, params, kind, text):
    response = reader.post("/v1/cypher", json={"query": query, "params": params})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["kind"] == kind and text in body["detail"]


def test_internal_error_is_json_without_traceback(reader, neo4j_driver, settings):
    """A circuit node that cannot be read back (its stored fields are broken) is a server fault."""
    broken = f"api-broken-{uuid.uuid4().hex[:8]}"
    db = settings.neo4j_database
    neo4j_driver.execute_query("CREATE (:Circuit {id: $id, provenance: 'not json'})", id=broken,
                               database_=db)
    try:
        response = reader.get(f"/v1/circuits/{broken}")
    finally:
        neo4j_driver.execute_query("MATCH (c:Circuit {id: $id}) DETACH DELETE c", id=broken,
                                   database_=db)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert detail.startswith("internal error ") and "log" in detail
    assert "Traceback" not in response.text and "KeyError" not in response.text


def test_unknown_path_and_method_are_json(reader):
    assert reader.get("/v1/nothing-here").json() == {"detail": "Not Found"}
    wrong = reader.put("/v1/tasks")
    assert wrong.status_code == 405 and wrong.json() == {"detail": "Method Not Allowed"}
