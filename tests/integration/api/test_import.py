"""POST /v1/circuits against a real server and Neo4j: an EAP-IG-layout file (written as EAP-IG
writes it) imports, stores with its provenance, reads back, and compares with one of our stored
circuits through /v1/compare and Cypher; one file imported twice is one circuit; a GPT-2-small-sized
file fits the default body cap; bad files are 422s naming the field, with nothing stored."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from discovery.circuit import GraphShape
from graphstore.store import delete_circuit
from tests.conftest import ApiServer
from tests.integration.api.conftest import BODY_CAP, SERVER_ENV, WRITE_KEY
from tests.unit.test_interop import eapig_file


@pytest.fixture(scope="module")
def big_server(tmp_path_factory) -> Iterator[httpx.Client]:
    """The API with its default body cap (the session server's is tiny)."""
    env = {k: v for k, v in SERVER_ENV.items() if k != "ATLAS_MAX_BODY_BYTES"}
    api = ApiServer(tmp_path_factory.mktemp("import-api"), env)
    try:
        with httpx.Client(base_url=api.url, timeout=120, headers={"X-API-Key": WRITE_KEY}) as client:
            yield client
    finally:
        api.stop()


@pytest.fixture
def cleanup(neo4j_driver, settings) -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    for cid in ids:
        delete_circuit(neo4j_driver, cid, database=settings.neo4j_database)


def _count(neo4j_driver, settings, cid: str) -> int:
    rows, _, _ = neo4j_driver.execute_query("MATCH (c:Circuit {id: $id}) RETURN count(c) AS n", id=cid,
                                            database_=settings.neo4j_database)
    return rows[0]["n"]


def test_an_eapig_file_imports_and_compares_with_ours(big_server, stored, neo4j_driver, settings, cleanup):
    ours = stored["ioi"]
    model = ours.provenance.model
    mine = [e.name for e in ours.edges]
    theirs = mine[: len(mine) // 2] + ["embed->a0.h0<q>", "a0.h0->logits"]  # half ours, two of their own
    theirs = list(dict.fromkeys(theirs))
    body = {"circuit": eapig_file(theirs, ours.graph, d_model=64), "model": model, "task": "ioi",
            "method": "eap-ig-inputs", "source": "MIB circuits/ioi-eap-ig.json"}
    first = big_server.post("/v1/circuits", json=body)
    assert first.status_code == 201, first.text
    made = first.json()
    cleanup.append(made["id"])
    assert (made["format"], made["model"], made["n_edges"]) == ("eap-ig", model, len(theirs))
    assert made["n_scored"] == len(ours.graph.edges())
    again = big_server.post("/v1/circuits", json=body).raise_for_status().json()
    assert again["id"] == made["id"] and _count(neo4j_driver, settings, made["id"]) == 1

    back = big_server.get(f"/v1/circuits/{made['id']}").raise_for_status().json()
    assert {e["src"] + "->" + e["dst"] + (f"<{e['input']}>" if e["input"] in "qkv" else "")
            for e in back["edges"]} == set(theirs)
    assert back["provenance"]["params"]["imported"]["source"] == "MIB circuits/ioi-eap-ig.json"
    assert back["metrics"]["name"] == "unmeasured" and back["metrics"]["faithfulness"] is None

    overlap = big_server.get("/v1/compare", params={"ids": f"{ours.id},{made['id']}"}).raise_for_status().json()
    shared = set(mine) & set(theirs)
    assert overlap["edges_shared"] == len(shared)
    assert overlap["edge_jaccard"] == pytest.approx(len(shared) / len(set(mine) | set(theirs)))
    rows = big_server.post("/v1/cypher", json={
        "query": "MATCH (a:Circuit {id: $a})-[:INCLUDES]->(h:AttentionHead)<-[:INCLUDES]-(b:Circuit {id: $b}) "
                 "RETURN count(h) AS n", "params": {"a": ours.id, "b": made["id"]}}).raise_for_status().json()
    heads = lambda edges: {n for e in edges for n in e.split("<")[0].split("->") if n.startswith("a")}  # noqa: E731
    assert rows["rows"][0][0] == len(heads(mine) & heads(theirs))


def test_a_gpt2_small_sized_file_fits_the_default_cap(big_server, cleanup):
    gpt2 = GraphShape(12, 12)
    kept = ["embed->a0.h1<q>", "a0.h1->a9.h9<v>", "a9.h9->logits"]
    data = eapig_file(kept, gpt2, d_model=768)
    body = {"circuit": data, "model": "gpt2", "task": "ioi", "method": "eap-ig-inputs"}
    size = len(httpx.Request("POST", "http://x", json=body).content)
    assert size > 2_000_000 and size > 100 * BODY_CAP
    made = big_server.post("/v1/circuits", json=body)
    assert made.status_code == 201, made.text[:500]
    cleanup.append(made.json()["id"])
    assert made.json()["n_scored"] == 32_491 and made.json()["n_edges"] == 3


@pytest.mark.parametrize(("change", "words"), [
    ({"method": None}, "method: a eap-ig file does not say"),
    ({"circuit": {"cfg": {}, "edges": {"input->a0.h0<x>": {"in_graph": True}}}}, "eap-ig file"),
    ({"circuit": ["A0.0->MLP 0", "A9.0->MLP 9"], "model": "multitask"}, "not an edge of the model's graph"),
    ({"circuit": {"A0.0->MLP 0": 1.0}}, "top_n"),
    ({"circuit": {"nothing": "here"}}, "unrecognised circuit file"),
    ({"format": "graphml"}, "format"),
    ({"circuit": ["A0.0->MLP 0"], "model": "elsewhere", "graph": {"n_layers": 1, "n_heads": 1, "parallel": 0}},
     "parallel"),
    ({"circuit": ["A0.0->MLP 3"], "model": "elsewhere", "graph": {"n_layers": 2, "n_heads": 2}},
     "not an edge of the model's graph"),
    ({"colour": "red"}, "colour"),
])
def test_bad_imports_are_422_naming_the_field(big_server, neo4j_driver, settings, change, words):
    body = {"circuit": eapig_file(), "model": "multitask", "task": "ioi", "method": "eap-ig", **change}
    body = {k: v for k, v in body.items() if v is not None}
    before = neo4j_driver.execute_query("MATCH (c:Circuit) RETURN count(c) AS n",
                                        database_=settings.neo4j_database)[0][0]["n"]
    response = big_server.post("/v1/circuits", json=body)
    assert response.status_code == 422, response.text
    assert words in str(response.json()["detail"])
    after = neo4j_driver.execute_query("MATCH (c:Circuit) RETURN count(c) AS n",
                                       database_=settings.neo4j_database)[0][0]["n"]
    assert after == before


def _cli(server_url: str, *args: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "ATLAS_API_URL": server_url, "ATLAS_API_KEY": WRITE_KEY}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_imports_a_file_and_exports_a_study_in_mib_layout(big_server, stored, neo4j_driver, settings,
                                                               cleanup, tmp_path):
    import json
    import uuid

    from graphstore.studies import StudyLink, delete_study, write_study

    ours = stored["ioi"]
    model = ours.provenance.model
    path = tmp_path / "theirs.json"
    path.write_text(json.dumps(eapig_file([e.name for e in ours.edges][:5], ours.graph)))
    url = str(big_server.base_url)
    done = _cli(url, "import", str(path), "--model", model, "--task", "ioi", "--method", "eap-ig-inputs")
    assert done.returncode == 0, done.stderr
    cid = done.stdout.split(" as circuit ")[1].split(":")[0]
    cleanup.append(cid)
    assert "(eap-ig)" in done.stdout and "5 edges" in done.stdout
    assert big_server.get(f"/v1/circuits/{cid}").json()["provenance"]["params"]["imported"]["source"] == "theirs.json"
    bad = _cli(url, "import", str(path), "--task", "ioi", "--method", "x")
    assert bad.returncode == 1 and "model" in bad.stderr and "Traceback" not in bad.stderr

    study_id = f"study-{uuid.uuid4().hex[:8]}"
    links = [StudyLink(c.id, task, "acdc", 0.01) for task, c in stored.items()]
    spec = {"model": model, "tasks": list(stored), "methods": ["acdc"]}
    write_study(neo4j_driver, study_id=study_id, model=model, spec=spec, summary={}, links=links,
                database=settings.neo4j_database)
    try:
        out = tmp_path / "submission"
        done = _cli(url, "export-mib", "--study", study_id, "--out", str(out))
        assert done.returncode == 0, done.stderr
    finally:
        delete_study(neo4j_driver, study_id, database=settings.neo4j_database, circuits=False)
    safe = model.replace("@", "-")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("importances.json"))
    assert files == sorted(f"acdc/{t.replace('_', '-')}_{safe}/importances.json" for t in stored)
    data = json.loads((out / files[0]).read_text())
    assert data["cfg"]["d_model"] == 64 and len(data["edges"]) == len(ours.graph.edges())
    kept = {k.replace("input", "embed", 1) for k, v in data["edges"].items() if v["in_graph"]}
    first = stored[files[0].split("/")[1].split("_")[0].replace("-", "_")]
    assert kept == {e.name for e in first.edges}


def test_an_auto_circuit_list_of_a_model_not_shipped_here_takes_its_graph(big_server, cleanup):
    body = {"circuit": ["Resid Start->A0.1.Q", "A0.1->MLP 1", "MLP 1->Resid End"], "model": "elsewhere-2l",
            "task": "ioi", "method": "acdc-auto-circuit", "graph": {"n_layers": 2, "n_heads": 2}}
    made = big_server.post("/v1/circuits", json=body)
    assert made.status_code == 201, made.text
    cleanup.append(made.json()["id"])
    back = big_server.get(f"/v1/circuits/{made.json()['id']}").raise_for_status().json()
    assert back["graph"]["n_layers"] == 2 and {e["dst"] for e in back["edges"]} == {"a0.h1", "m1", "logits"}
