"""The read side of the API on a real server over real Neo4j: list, read (JSON and every export
format), delete, compare, the overlap matrix, hubs, models, tasks, Cypher; each answer checked
against what the graph store or the library says directly."""

from __future__ import annotations

import dataclasses
import json
import uuid
import xml.etree.ElementTree as ET

import pytest

from discovery.catalog import model_summary, shipped_models
from discovery.circuit import Circuit
from discovery.export import from_graphml, to_dot
from discovery.tasks import TASKS
from graphstore.overlap import compare, hubs, overlap_matrix
from graphstore.store import read_circuit, write_circuit
from tests.integration.api.conftest import ROW_CAP


def _model(stored: dict[str, Circuit]) -> str:
    return next(iter(stored.values())).provenance.model


def test_health_and_docs_need_no_key(anonymous):
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/docs").status_code == 200
    spec = anonymous.get("/openapi.json").json()
    assert {"/v1/circuits", "/v1/circuits/{circuit_id}", "/v1/compare", "/v1/cypher", "/v1/models",
            "/v1/models/{model}/overlap", "/v1/models/{model}/hubs", "/v1/tasks"} <= set(spec["paths"])
    assert spec["paths"]["/v1/circuits/{circuit_id}"]["delete"]["responses"]["404"]


def test_list_filters_and_pages(reader, stored):
    model = _model(stored)
    page = reader.get("/v1/circuits", params={"model": model}).json()
    assert {c["id"] for c in page["items"]} == {c.id for c in stored.values()}
    assert page["next_offset"] is None
    ioi = stored["ioi"]
    row = next(c for c in page["items"] if c["id"] == ioi.id)
    assert row == {"id": ioi.id, "model": model, "task": "ioi", "method": "acdc",
                   "threshold": ioi.provenance.threshold, "metric": ioi.metrics.name,
                   "faithfulness": ioi.metrics.faithfulness, "n_nodes": len(ioi.nodes),
                   "n_edges": len(ioi.edges), "created_at": ioi.provenance.created_at,
                   "faithfulness_task": ioi.metrics.faithfulness_task,
                   "search_metric": "kl", "faithfulness_search": ioi.metrics.faithfulness_search}
    assert row["faithfulness_search"] is not None and row["faithfulness_search"] <= 1.0
    only = reader.get("/v1/circuits", params={"model": model, "task": "greater_than"}).json()["items"]
    assert [c["id"] for c in only] == [stored["greater_than"].id]
    lowest = min(c.metrics.faithfulness for c in stored.values())
    above = reader.get("/v1/circuits", params={"model": model, "min_faithfulness": lowest + 1e-9})
    assert len(above.json()["items"]) == 1
    assert reader.get("/v1/circuits", params={"model": model, "method": "eap"}).json()["items"] == []
    first = reader.get("/v1/circuits", params={"model": model, "limit": 1}).json()
    second = reader.get("/v1/circuits", params={"model": model, "limit": 1, "offset": 1}).json()
    assert first["next_offset"] == 1 and second["next_offset"] is None
    assert [first["items"][0]["id"], second["items"][0]["id"]] == [c["id"] for c in page["items"]]
    bad = reader.get("/v1/circuits", params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "limit"]


@pytest.mark.parametrize("key", ["faithfulness_task", "faithfulness_search"])
def test_list_sorts_and_filters_by_either_faithfulness(reader, stored, key):
    model = _model(stored)
    values = {c.id: getattr(c.metrics, key) for c in stored.values()}
    page = reader.get("/v1/circuits", params={"model": model, "sort": key}).json()["items"]
    assert [c["id"] for c in page] == sorted(values, key=lambda i: -values[i])
    assert [c[key] for c in page] == sorted(values.values(), reverse=True)
    bound = {"faithfulness_task": "min_faithfulness_task",
             "faithfulness_search": "min_faithfulness_search"}[key]
    above = reader.get("/v1/circuits", params={"model": model, bound: min(values.values()) + 1e-9})
    assert {c["id"] for c in above.json()["items"]} == {i for i, v in values.items()
                                                       if v > min(values.values())}
    high = bound.replace("min_", "max_")
    below = reader.get("/v1/circuits", params={"model": model, high: min(values.values())})
    assert [c["id"] for c in below.json()["items"]] == [min(values, key=values.get)]


def test_list_sort_and_bounds_are_validated(reader, stored):
    bad = reader.get("/v1/circuits", params={"sort": "faithfulness"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "sort"]
    both = reader.get("/v1/circuits", params={"min_faithfulness": 0.1, "min_faithfulness_task": 0.2})
    assert both.status_code == 400 and "min_faithfulness_task" in both.json()["detail"]
    same = reader.get("/v1/circuits", params={"min_faithfulness": 0.1, "min_faithfulness_task": 0.1})
    assert same.status_code == 200


def test_get_json_is_the_stored_circuit(reader, stored):
    circuit = stored["ioi"]
    response = reader.get(f"/v1/circuits/{circuit.id}")
    assert response.status_code == 200
    assert Circuit.from_dict(response.json()) == circuit
    missing = reader.get(f"/v1/circuits/{uuid.uuid4()}")
    assert missing.status_code == 404 and "no circuit with id" in missing.json()["detail"]


def test_export_formats(reader, stored):
    circuit = stored["greater_than"]
    path = f"/v1/circuits/{circuit.id}"
    graphml = reader.get(path, params={"format": "graphml"})
    assert graphml.headers["content-type"] == "application/graphml+xml"
    ET.fromstring(graphml.content)
    back = from_graphml(graphml.text)
    assert {e.name for e in back.edges} == {e.name for e in circuit.edges}
    dot = reader.get(path, params={"format": "dot"})
    assert dot.headers["content-type"].startswith("text/vnd.graphviz")
    assert dot.text == to_dot(circuit)
    png = reader.get(path, params={"format": "png"})
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    svg = reader.get(path, params={"format": "svg"})
    assert svg.headers["content-type"] == "image/svg+xml"
    assert ET.fromstring(svg.content).tag.endswith("svg")
    mib = reader.get(path, params={"format": "mib"})
    assert mib.headers["content-type"] == "application/json"
    kept = {name for name, edge in mib.json()["edges"].items() if edge["in_graph"]}
    assert len(kept) == len(circuit.edges)
    assert reader.get(path, params={"format": "bmp"}).status_code == 422


def test_delete_then_404(writer, reader, stored, neo4j_driver, settings):
    copy = dataclasses.replace(stored["ioi"], id=f"api-delete-{uuid.uuid4().hex[:8]}")
    write_circuit(neo4j_driver, copy, database=settings.neo4j_database)
    assert reader.get(f"/v1/circuits/{copy.id}").status_code == 200
    assert reader.delete(f"/v1/circuits/{copy.id}").status_code == 403
    deleted = writer.delete(f"/v1/circuits/{copy.id}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert read_circuit(neo4j_driver, copy.id, database=settings.neo4j_database) is None
    assert reader.get(f"/v1/circuits/{copy.id}").status_code == 404
    again = writer.delete(f"/v1/circuits/{copy.id}")
    assert again.status_code == 404 and copy.id in again.json()["detail"]
    # The circuit it was copied from, sharing every component, is intact.
    assert Circuit.from_dict(reader.get(f"/v1/circuits/{stored['ioi'].id}").json()) == stored["ioi"]


def test_compare_equals_the_graph_store(reader, stored, neo4j_driver, settings):
    ids = [stored["ioi"].id, stored["greater_than"].id]
    body = reader.get("/v1/compare", params={"ids": ",".join(ids)}).json()
    expected = compare(neo4j_driver, ids, database=settings.neo4j_database)
    assert body["circuits"] == ids and body["model"] == expected.model
    for field in ("nodes_union", "nodes_shared", "node_jaccard", "edges_union", "edges_shared",
                  "edge_jaccard", "weighted", "unique_edges"):
        assert body[field] == getattr(expected, field), field
    assert body["unique_nodes"] == {k: list(v) for k, v in expected.unique_nodes.items()}
    assert [(x["layer"], x["union"], x["shared"]) for x in body["layers"]] == \
        [(x.layer, x.union, x.shared) for x in expected.layers]
    assert 0 < body["edge_jaccard"] < 1
    assert [s["task"] for s in body["summaries"]] == ["ioi", "greater_than"]
    shared = {n.name for n in stored["ioi"].nodes} & {n.name for n in stored["greater_than"].nodes}
    assert {s["name"] for s in body["shared"]} == shared


@pytest.mark.parametrize(("ids", "code", "text"), [
    ("only-one", 400, "at least 2"),
    ("a,a", 400, "at least 2"),
    ("nope-1,nope-2", 404, "'nope-1', 'nope-2'"),
])
def test_compare_refusals(reader, ids, code, text):
    response = reader.get("/v1/compare", params={"ids": ids})
    assert response.status_code == code and text in response.json()["detail"]


def test_overlap_matrix_and_hubs(reader, stored, neo4j_driver, settings):
    model, db = _model(stored), settings.neo4j_database
    body = reader.get(f"/v1/models/{model}/overlap").json()
    expected = overlap_matrix(neo4j_driver, model, database=db)
    assert body["tasks"] == list(expected.tasks) and sorted(body["tasks"]) == sorted(stored)
    assert body["edges"] == [list(r) for r in expected.edges]
    assert body["nodes"] == [list(r) for r in expected.nodes]
    assert body["edges"][0][0] == 1.0 and body["edges"][0][1] < 1
    one = reader.get(f"/v1/models/{model}/overlap", params={"tasks": "ioi"}).json()
    assert one["tasks"] == ["ioi"]
    absent = reader.get("/v1/models/no-such-model/overlap")
    assert absent.status_code == 404 and "no-such-model" in absent.json()["detail"]
    found = reader.get(f"/v1/models/{model}/hubs", params={"limit": 3}).json()
    assert [(h["name"], h["tasks"]) for h in found] == \
        [(h.name, h.tasks) for h in hubs(neo4j_driver, model, database=db, limit=3)]
    bad = reader.get(f"/v1/models/{model}/hubs", params={"kinds": "attention,bogus"})
    assert bad.status_code == 400 and "bogus" in bad.json()["detail"]


def test_models_and_tasks(reader):
    models = reader.get("/v1/models").json()
    assert [m["name"] for m in models] == list(shipped_models())
    assert models[0] == model_summary(models[0]["name"])
    tasks = reader.get("/v1/tasks").json()
    assert tasks == [{"name": t.name, "metric": t.metric, "description": t.description}
                     for t in TASKS.values()]


def test_cypher_rows_and_cap(reader, stored):
    model = _model(stored)
    query = ("MATCH (c:Circuit)-[:OF_MODEL]->(:Model {id: $model}) "
             "RETURN c.id AS id, c.n_edges AS edges ORDER BY id")
    body = reader.post("/v1/cypher", json={"query": query, "params": {"model": model}}).json()
    assert body["columns"] == ["id", "edges"] and body["truncated"] is False
    assert body["rows"] == sorted([c.id, len(c.edges)] for c in stored.values())
    capped = reader.post("/v1/cypher", json={"query": "UNWIND range(1, 100) AS x RETURN x"}).json()
    assert capped["rows"] == [[x] for x in range(1, ROW_CAP + 1)]
    assert capped["truncated"] is True and capped["row_cap"] == ROW_CAP
    node = reader.post("/v1/cypher", json={"query": "MATCH (m:Model {id: $m}) RETURN m",
                                           "params": {"m": model}}).json()
    assert node["rows"][0][0]["labels"] == ["Model"]
    assert json.dumps(node)  # plain JSON all the way down
