"""``circuits store | list | compare | matrix | hubs | cypher | delete`` as a user runs them, in
real processes against the real Neo4j, and their errors: one line on stderr, exit 1."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from . import reference
from .conftest import leftovers, purge_model

ROOT = Path(__file__).resolve().parents[3]


def circuits(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def cli_files(discovered, store, db, tmp_path):
    """The IOI and induction circuits as JSON files, under a model and ids of their own."""
    model = f"cli@test-{uuid.uuid4().hex[:10]}"
    out = {}
    for task in ("ioi", "induction"):
        c = discovered[task]
        c = dataclasses.replace(c, id=f"{model}-{task}",
                                provenance=dataclasses.replace(c.provenance, model=model))
        path = tmp_path / f"{task}.json"
        path.write_text(c.to_json())
        out[task] = (path, c)
    yield model, out
    purge_model(store, db, model)


def test_store_list_compare_cypher_delete(cli_files, store, db):
    model, files = cli_files
    (ioi_path, ioi), (ind_path, ind) = files["ioi"], files["induction"]

    stored = circuits("store", str(ioi_path), str(ind_path))
    assert stored.returncode == 0, stored.stderr
    assert f"stored {ioi.id}" in stored.stdout and f"stored {ind.id}" in stored.stdout

    listed = circuits("list", "--model", model, "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["id"] for r in json.loads(listed.stdout)) == sorted([ioi.id, ind.id])

    compared = circuits("compare", ioi.id, ind.id)
    assert compared.returncode == 0, compared.stderr
    ref = reference.overlap([ioi, ind])
    lines = compared.stdout.splitlines()
    components = next(line.split() for line in lines if line.startswith("components"))
    assert components[1:] == [str(ref.nodes_union), str(ref.nodes_shared),
                              f"{ref.nodes_shared / ref.nodes_union:.3f}"]
    assert f"score-weighted edge overlap: {ref.weighted:.3f}" in compared.stdout
    assert f"shared by all ({ref.nodes_shared})" in compared.stdout

    query = "MATCH (c:Circuit)-[:OF_MODEL]->(:Model {id: $model}) RETURN c.id AS id ORDER BY id"
    rows = circuits("cypher", query, "--param", f"model={model}", "--json")
    assert rows.returncode == 0, rows.stderr
    assert json.loads(rows.stdout) == {"columns": ["id"], "rows": [[ind.id], [ioi.id]],
                                       "truncated": False}
    table = circuits("cypher", query, "--param", f"model={model}", "--limit", "1")
    assert table.returncode == 0 and ind.id in table.stdout and ioi.id not in table.stdout
    assert "more rows were left out" in table.stdout

    matrix = circuits("matrix", "--model", model)
    assert matrix.returncode == 0 and f"{ref.edges_shared / ref.edges_union:.3f}" in matrix.stdout
    hubs = circuits("hubs", "--model", model, "--kinds", "attention", "--limit", "3")
    assert hubs.returncode == 0 and hubs.stdout.count("attention") == 3

    deleted = circuits("delete", ioi.id, ind.id)
    assert deleted.returncode == 0, deleted.stderr
    assert leftovers(store, db, model) == 0


@pytest.mark.parametrize(("args", "message"), [
    (["store", "/no/such/circuit.json"], "does not exist"),
    (["compare", "no-such-a", "no-such-b"], "no stored circuit with id 'no-such-a', 'no-such-b'"),
    (["cypher", "CREATE (:Intruder)"], "refuses writes"),
    (["cypher", "MATCH (n RETURN n"], "Cypher syntax error"),
    (["cypher", "RETURN $x"], "--param NAME=VALUE"),
    (["cypher", "RETURN 1", "--param", "novalue"], "write NAME=VALUE"),
    (["cypher", "UNWIND range(1, 1000000000) AS x RETURN sum(x)", "--timeout", "0.5"], "timeout"),
    (["delete", "no-such-circuit"], "no stored circuit"),
])
def test_errors_are_one_clear_line(args, message):
    done = circuits(*args)
    assert done.returncode == 1
    assert message in done.stderr and done.stderr.startswith("error: ")
    assert "Traceback" not in done.stderr


def test_a_file_that_is_not_a_circuit_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"id": "x", "nodes": []}))
    done = circuits("store", str(bad))
    assert done.returncode == 1 and f"{bad} is not a circuit JSON file" in done.stderr
    assert "missing field" in done.stderr and "Traceback" not in done.stderr


def _with_dead_edge(circuit):
    """``circuit`` plus an edge out of a head nothing in the circuit feeds (a no-op edge)."""
    from discovery.circuit import Edge, Node

    used = {n.name for n in circuit.nodes}
    head = next(f"a3.h{h}" for h in range(4) if f"a3.h{h}" not in used)
    return dataclasses.replace(circuit, nodes=circuit.nodes + (Node.parse(head),),
                               edges=circuit.edges + (Edge.parse(f"{head}->logits"),))


def test_store_and_prune_stored_remove_dangling_edges(cli_files, store, db, tmp_path):
    from graphstore.store import read_circuit

    model, files = cli_files
    path, ioi = files["ioi"]
    dead = _with_dead_edge(ioi)
    path.write_text(dead.to_json())
    kept = circuits("store", "--keep-dangling", str(path))
    assert kept.returncode == 0, kept.stderr
    assert len(read_circuit(store, ioi.id, database=db).edges) == len(ioi.edges) + 1

    dry = circuits("prune-stored", "--model", model, "--dry-run")
    assert "would change 1" in dry.stdout and len(read_circuit(store, ioi.id, database=db).edges) == len(ioi.edges) + 1
    done = circuits("prune-stored", "--model", model)
    assert done.returncode == 0 and "changed 1" in done.stdout, done.stdout + done.stderr
    cleaned = read_circuit(store, ioi.id, database=db)
    assert [e.name for e in cleaned.edges] == [e.name for e in ioi.edges]
    assert {n.name for n in cleaned.nodes} == {n.name for n in ioi.nodes}
    earlier = ioi.provenance.params["dangling_removed"]["edges"]  # what discovery removed already
    assert cleaned.provenance.params["dangling_removed"]["edges"] == earlier + 1
    assert cleaned.metrics == ioi.metrics  # the removal is exact: the metrics stand
    assert "changed 0" in circuits("prune-stored", "--model", model).stdout  # idempotent

    again = circuits("store", str(path))  # storing the file again cleans it on the way in
    assert "removed 1 dangling edge(s) and 1 node(s)" in again.stdout
    assert len(read_circuit(store, ioi.id, database=db).edges) == len(ioi.edges)


def test_list_sorts_and_filters_by_either_faithfulness(cli_files):
    model, files = cli_files
    assert circuits("store", *(str(p) for p, _ in files.values())).returncode == 0
    search = {c.id: c.metrics.faithfulness_search for _, c in files.values()}
    assert all(v is not None for v in search.values())
    rows = json.loads(circuits("list", "--model", model, "--sort", "faithfulness_search", "--json").stdout)
    assert [r["id"] for r in rows] == sorted(search, key=search.get, reverse=True)
    best = max(search.values())
    only = json.loads(circuits("list", "--model", model, "--min-faithfulness-search", str(best - 1e-9),
                               "--json").stdout)
    assert [r["id"] for r in only] == [max(search, key=search.get)]
    shown = circuits("list", "--model", model).stdout
    assert "faithfulness (search metric)" in shown and "(kl)" in shown
