"""Circuits of different models compared through the real API and CLI, against the real Neo4j:
``GET /v1/compare/models`` and ``circuits compare`` on circuits of two models whose structure is
built by hand, so every profile number below is counted from the circuit by hand (see the edge
lists), not by the code under test; its 4xx errors; and the one-model overlap of
``GET /v1/compare`` unchanged beside it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance
from graphstore.overlap import compare
from graphstore.store import delete_circuit, ensure_schema, list_circuits, write_circuit
from tests.conftest import ROOT, ApiServer

READ_KEY = "compare-models-reader"
RUN = uuid.uuid4().hex[:8]
GPT = f"seq@cmp-{RUN}"  # 2 layers x 2 heads, attention then MLP in each layer
NEOX = f"par@cmp-{RUN}"  # 3 layers x 4 heads, parallel blocks

# Model GPT, circuit "a": edges numbered for the counts in EXPECTED_A.
EDGES_A = (
    ("embed", "a0.h0", "v"),     # 1
    ("embed", "a0.h1", "q"),     # 2
    ("a0.h0", "m0", "mlp"),      # 3  MLP end
    ("a0.h0", "a1.h1", "k"),     # 4  K-composition out of layer 0
    ("a0.h1", "a1.h1", "q"),     # 5  Q-composition
    ("m0", "a1.h1", "v"),        # 6  MLP end (not composition: the source is an MLP)
    ("a1.h1", "m1", "mlp"),      # 7  MLP end
    ("m1", "logits", "logits"),  # 8  MLP end, MLP into logits
    ("a1.h1", "logits", "logits"),  # 9  layer-1 head into logits
    ("embed", "logits", "logits"),  # 10
)
EXPECTED_A = {
    "n_layers": 2, "n_heads": 2, "parallel": False, "n_nodes": 7, "n_edges": 10, "heads": 3,
    "mlps": 2, "head_fraction_per_layer": [1.0, 0.5],
    "edge_share": {"q": 0.2, "k": 0.1, "v": 0.2, "mlp": 0.2, "logits": 0.3},
    "mlp_edge_share": 0.4, "composition": {"q": 1, "k": 1, "v": 0},
    "k_composition_from_layer0": 1, "logit_heads_per_layer": [0, 1], "logit_mlps": 1,
    # embed -> a0.h0 -> m0 -> a1.h1 -> m1 -> logits; the graph allows 2 * 2 + 1.
    "longest_path": 5, "max_path": 5,
    "faithfulness_task": 0.75, "faithfulness_search": 0.9, "metric": "logit_diff",
    "search_metric": "kl", "task": "ioi", "architecture": "GPT2LMHeadModel",
}
# Model NEOX, circuit "b".
EDGES_B = (
    ("embed", "a0.h2", "q"),
    ("embed", "m0", "mlp"),       # MLP end
    ("a0.h2", "a2.h3", "v"),      # V-composition
    ("m0", "a2.h3", "k"),         # MLP end
    ("a2.h3", "logits", "logits"),
    ("m0", "logits", "logits"),   # MLP end, MLP into logits
)
EXPECTED_B = {
    "n_layers": 3, "n_heads": 4, "parallel": True, "n_nodes": 5, "n_edges": 6, "heads": 2,
    "mlps": 1, "head_fraction_per_layer": [0.25, 0.0, 0.25],
    "edge_share": {"q": 1 / 6, "k": 1 / 6, "v": 1 / 6, "mlp": 1 / 6, "logits": 2 / 6},
    "mlp_edge_share": 0.5, "composition": {"q": 0, "k": 0, "v": 1},
    "k_composition_from_layer0": 0, "logit_heads_per_layer": [0, 0, 1], "logit_mlps": 1,
    # embed -> a0.h2 -> a2.h3 -> logits; parallel blocks allow n_layers + 1.
    "longest_path": 3, "max_path": 4,
    "faithfulness_task": 0.75, "faithfulness_search": 0.9, "metric": "logit_diff",
    "search_metric": "kl", "task": "ioi", "architecture": "GPTNeoXForCausalLM",
}


def _circuit(cid: str, model: str, edges: tuple, graph: GraphShape, architecture: str) -> Circuit:
    names = list(dict.fromkeys(n for e in edges for n in e[:2]))
    # task faithfulness (2.5 - 1) / (3 - 1) = 0.75; search (KL) (0.2 - 2) / (0 - 2) = 0.9
    metrics = Metrics(full=3.0, empty=1.0, circuit=2.5, name="logit_diff", search_metric="kl",
                      search_full=0.0, search_empty=2.0, search_circuit=0.2)
    return Circuit(
        id=cid, nodes=tuple(Node.parse(n) for n in names),
        edges=tuple(Edge(src, dst, inp, score=0.1 * (i + 1)) for i, (src, dst, inp) in enumerate(edges)),
        metrics=metrics, graph=graph,
        provenance=Provenance(model=model, task="ioi", method="acdc", architecture=architecture,
                              threshold=0.01, search_metric="kl"),
    )


@pytest.fixture(scope="module")
def circuits(neo4j_driver, settings) -> Iterator[dict[str, Circuit]]:
    db = settings.neo4j_database
    ensure_schema(neo4j_driver, database=db)
    gpt, neox = GraphShape(2, 2), GraphShape(3, 4, parallel=True)
    made = {
        "a": _circuit(f"cmp-a-{RUN}", GPT, EDGES_A, gpt, "GPT2LMHeadModel"),
        "a2": _circuit(f"cmp-a2-{RUN}", GPT, EDGES_A[:3] + EDGES_A[7:8] + (("a0.h0", "logits", "logits"),),
                       gpt, "GPT2LMHeadModel"),
        "b": _circuit(f"cmp-b-{RUN}", NEOX, EDGES_B, neox, "GPTNeoXForCausalLM"),
    }
    try:
        for c in made.values():
            write_circuit(neo4j_driver, c, database=db)
        yield made
    finally:
        for model in (GPT, NEOX):
            for s in list_circuits(neo4j_driver, database=db, model=model, limit=100):
                delete_circuit(neo4j_driver, s.id, database=db)


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> Iterator[httpx.Client]:
    server = ApiServer(tmp_path_factory.mktemp("cmp"), {"ATLAS_API_KEYS": f"{READ_KEY}:read"})
    try:
        with httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": READ_KEY}) as c:
            yield c
    finally:
        server.stop()


def _assert_profile(got: dict, expected: dict) -> None:
    for key, want in expected.items():
        if isinstance(want, float):
            assert got[key] == pytest.approx(want), key
        elif key in ("edge_share", "head_fraction_per_layer"):
            assert got[key] == pytest.approx(want), key
        else:
            assert got[key] == want, key


def test_profiles_across_models(reader, circuits):
    a, b = circuits["a"], circuits["b"]
    body = reader.get("/v1/compare/models", params={"ids": f"{a.id},{b.id},{a.id}"})
    assert body.status_code == 200, body.text
    data = body.json()
    assert data["circuits"] == [a.id, b.id] and data["models"] == [GPT, NEOX]
    _assert_profile(data["profiles"][0], EXPECTED_A | {"id": a.id, "model": GPT, "method": "acdc"})
    _assert_profile(data["profiles"][1], EXPECTED_B | {"id": b.id, "model": NEOX, "method": "acdc"})
    assert sum(data["profiles"][1]["edge_share"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize(("ids", "code", "text"), [
    ("only-one", 400, "ids: give at least 2"),
    ("x,x", 400, "ids: give at least 2"),
    (",".join(f"c{i}" for i in range(21)), 400, "ids: at most 20"),
    ("nope-1,nope-2", 404, "no stored circuit with id 'nope-1', 'nope-2'"),
])
def test_profile_refusals(reader, circuits, ids, code, text):
    response = reader.get("/v1/compare/models", params={"ids": ids})
    assert response.status_code == code and text in response.json()["detail"]
    missing = reader.get("/v1/compare/models")
    assert missing.status_code == 422 and "ids" in str(missing.json()["detail"])


def test_one_model_overlap_unchanged(reader, circuits, neo4j_driver, settings):
    a, a2, b = circuits["a"], circuits["a2"], circuits["b"]
    body = reader.get("/v1/compare", params={"ids": f"{a.id},{a2.id}"}).json()
    expected = compare(neo4j_driver, [a.id, a2.id], database=settings.neo4j_database)
    assert set(body) == {"model", "circuits", "summaries", "nodes_union", "nodes_shared",
                         "node_jaccard", "edges_union", "edges_shared", "edge_jaccard", "weighted",
                         "unique_nodes", "unique_edges", "layers", "shared"}
    assert body["model"] == GPT and body["circuits"] == [a.id, a2.id]
    # a2 keeps edges 1-3 and 8 of a, plus a0.h0 -> logits: 4 shared of 10 + 1.
    assert (body["edges_shared"], body["edges_union"]) == (4, 11) == \
        (expected.edges_shared, expected.edges_union)
    assert body["node_jaccard"] == expected.node_jaccard
    across = reader.get("/v1/compare", params={"ids": f"{a.id},{b.id}"})
    assert across.status_code == 400
    assert "different models" in across.json()["detail"] and "/v1/compare/models" in across.json()["detail"]


def test_cli_prints_the_profile_table(circuits):
    a, b = circuits["a"], circuits["b"]
    out = subprocess.run([sys.executable, "-m", "api.cli", "compare", a.id, b.id],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {line.split("  ")[0]: line for line in out.stdout.splitlines()}
    assert rows["longest path / most possible"].split()[-6:] == ["5", "/", "5", "3", "/", "4"]
    assert rows["heads kept per layer (fraction)"].split()[-5:] == ["1", "0.5", "0.25", "0", "0.25"]
    assert rows["composition q/k/v"].split()[-2:] == ["1/1/0", "0/0/1"]
