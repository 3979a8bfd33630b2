"""Timelines in Neo4j (issue 14): one transaction per timeline (circuits as write_circuit stores
them, the run and its checkpoint models, the timeline node), read back equal, replaced on
re-write, deleted; and the three cookbook queries on a hand-built timeline whose answers are known.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from discovery.circuit import Circuit, Edge, Metrics, Node, Provenance
from discovery.timeline import Row, Timeline, pair_analysis
from graphstore import queries
from graphstore.store import delete_circuit
from graphstore.timelines import (
    circuit_sizes,
    delete_timeline,
    first_step_in_circuit,
    list_timelines,
    moved_components,
    read_timeline,
    write_timeline,
)

from .conftest import leftovers
from .reference import SMALL

STEPS = (0, 10, 100)
#: (task, step) -> heads in the circuit (besides embed and logits); answers below follow from it
MEMBERS = {
    ("induction", 0): ("a0.h1",), ("induction", 10): ("a0.h1", "a1.h0"),
    ("induction", 100): ("a0.h0", "a1.h0"),
    ("ioi", 0): ("a0.h2",), ("ioi", 10): ("a0.h2",), ("ioi", 100): ("a0.h1", "a0.h2"),
}


def _circuit(cid: str, model: str, task: str, heads: tuple[str, ...]) -> Circuit:
    edges = tuple(Edge.parse(n, 0.5) for h in heads for n in (f"embed->{h}<q>", f"{h}->logits"))
    names = sorted({e.src for e in edges} | {e.dst for e in edges})
    return Circuit(id=cid, nodes=tuple(Node.parse(n) for n in names), edges=edges,
                   metrics=Metrics(full=2.0, empty=0.1, circuit=1.5, name="logit_diff"),
                   provenance=Provenance(model=model, task=task, method="acdc", threshold=0.01,
                                         params={"n_prompts": 20}, seed=0, versions={"python": "3.11"},
                                         created_at="2026-01-01T00:00:00+00:00"),
                   graph=SMALL, edge_scores={e.name: e.score for e in edges})


def build(run: str, steps: tuple[int, ...] = STEPS) -> Timeline:
    circuits = {(s, t): _circuit(f"{run}-{t}-{s}", f"{run}@{s}", t, MEMBERS[t, s])
                for t in ("induction", "ioi") for s in steps}
    rows = [Row(step=s, task=t, train_loss=1.0 / (s + 1), accuracy=None, metric=None, metric_mean=None,
                n_edges=len(c.edges), n_nodes=len(c.nodes), faithfulness_task=None,
                faithfulness_search=None, jaccard_edges=0.0, jaccard_nodes=0.0,
                nodes=tuple(sorted(n.name for n in c.nodes)), circuit_id=c.id)
            for (s, t), c in sorted(circuits.items())]
    result = Timeline(run_dir=f"/runs/{run}", tasks=("induction", "ioi"), method="acdc", threshold=0.01,
                      top_n=None, n_prompts=20, seed=0, level=0.8, rows=rows, circuits=circuits,
                      stabilisation={"induction": 100, "ioi": 0})
    result.pairs = [pair_analysis(result, "induction", "ioi")]
    return result


def _count(driver, db: str, query: str, **params) -> int:
    return driver.execute_query(query, **params, database_=db)[0][0]["n"]


@pytest.fixture
def run_id(store, db) -> Iterator[str]:
    run = f"tlrun-{uuid.uuid4().hex[:10]}"
    yield run
    for summary in list_timelines(store, database=db, run=run):
        delete_timeline(store, summary.id, database=db, circuits=True)
    assert _count(store, db, "MATCH (r:Run {id: $run}) RETURN count(r) AS n", run=run) == 0
    for s in STEPS:
        assert leftovers(store, db, f"{run}@{s}") == 0


def test_write_reads_back_equal_with_its_graph(store, db, run_id):
    timeline = build(run_id)
    assert write_timeline(store, timeline, run_id=run_id, database=db,
                          run={"recipe": "induction-2l", "seed": 3, "arch": "gpt2"}) == run_id
    assert Timeline.from_dict(read_timeline(store, run_id, database=db)) == timeline
    [run] = store.execute_query("MATCH (r:Run {id: $run}) RETURN r", run=run_id, database_=db)[0]
    assert dict(run["r"]) == {"id": run_id, "recipe": "induction-2l", "seed": 3, "arch": "gpt2",
                              "steps": list(STEPS)}
    checkpoints = store.execute_query(
        "MATCH (c:Circuit)-[:OF_MODEL]->(m:Model)-[cp:CHECKPOINT_OF]->(:Run {id: $run}) "
        "RETURN cp.step AS step, m.id AS model, count(c) AS circuits ORDER BY step",
        run=run_id, database_=db)[0]
    assert [(r["step"], r["model"], r["circuits"]) for r in checkpoints] == [
        (s, f"{run_id}@{s}", 2) for s in STEPS]
    at = store.execute_query(
        "MATCH (:Timeline {id: $run})-[at:AT]->(c:Circuit) RETURN at.step AS s, at.task AS t, c.id AS c",
        run=run_id, database_=db)[0]
    assert sorted((r["s"], r["t"], r["c"]) for r in at) == sorted(
        (s, t, c.id) for (s, t), c in timeline.circuits.items())
    [summary] = list_timelines(store, database=db, run=run_id)
    assert (summary.run, summary.tasks, summary.steps) == (run_id, ("induction", "ioi"), STEPS)


def test_rewrite_replaces_without_duplicates(store, db, run_id):
    links = "MATCH (tl:Timeline {id: $run})-[r:AT|OF_RUN]->() RETURN count(r) AS n"
    checkpoints = "MATCH ()-[r:CHECKPOINT_OF]->(:Run {id: $run}) RETURN count(r) AS n"
    write_timeline(store, build(run_id), run_id=run_id, database=db)
    write_timeline(store, build(run_id), run_id=run_id, database=db)
    assert _count(store, db, links, run=run_id) == 6 + 1
    assert _count(store, db, checkpoints, run=run_id) == 3
    assert _count(store, db, "MATCH (t:Timeline {id: $run}) RETURN count(t) AS n", run=run_id) == 1
    shorter = build(run_id, steps=(0, 10))
    write_timeline(store, shorter, run_id=run_id, database=db)
    assert _count(store, db, links, run=run_id) == 4 + 1
    assert _count(store, db, checkpoints, run=run_id) == 2
    assert Timeline.from_dict(read_timeline(store, run_id, database=db)) == shorter
    # step 100's circuits stay, as ordinary circuits no timeline points at: delete them here
    assert delete_circuit(store, f"{run_id}-induction-100", database=db)
    assert delete_circuit(store, f"{run_id}-ioi-100", database=db)


def test_a_bad_timeline_writes_nothing(store, db, run_id):
    timeline = build(run_id)
    del timeline.circuits[10, "ioi"]
    with pytest.raises(ValueError, match="step 10 task 'ioi'"):
        write_timeline(store, timeline, run_id=run_id, database=db)
    with pytest.raises(ValueError, match="run: unknown fields"):
        write_timeline(store, build(run_id), run_id=run_id, database=db, run={"reciep": "x"})
    assert read_timeline(store, run_id, database=db) is None
    assert _count(store, db, "MATCH (c:Circuit) WHERE c.id STARTS WITH $run RETURN count(c) AS n",
                  run=run_id) == 0


def test_cookbook_answers(store, db, run_id):
    timeline = build(run_id)
    write_timeline(store, timeline, run_id=run_id, database=db)
    first = lambda task, component: first_step_in_circuit(  # noqa: E731
        store, run=run_id, task=task, component=component, database=db)
    assert first("induction", "a1.h0") == 10
    assert first("induction", "a0.h0") == 100
    assert first("ioi", "a0.h1") == 100
    assert first("induction", "a3.h3") is None
    assert first("induction", "a1.h0") == timeline.joined("induction", "a1.h0")

    moved = moved_components(store, run=run_id, first="induction", second="ioi", database=db)
    assert moved == {"a0.h1": {"first_at": 0, "moved_at": 100}}
    assert moved == timeline.pairs[0]["first_to_second"]  # the library's definition, same answer
    assert moved_components(store, run=run_id, first="ioi", second="induction", database=db) == \
        timeline.pairs[0]["second_to_first"]

    sizes = circuit_sizes(store, run=run_id, database=db)
    assert [(r["task"], r["step"], r["n_nodes"], r["n_edges"]) for r in sizes] == [
        (t, s, len(timeline.circuits[s, t].nodes), len(timeline.circuits[s, t].edges))
        for t in ("induction", "ioi") for s in STEPS]


def test_deleting_a_checkpoint_circuit_keeps_its_model_on_the_run(store, db, run_id):
    write_timeline(store, build(run_id), run_id=run_id, database=db)
    for task in ("induction", "ioi"):  # the step's last circuits: the model stays, linked to the run
        assert delete_circuit(store, f"{run_id}-{task}-0", database=db)
    assert _count(store, db, "MATCH (:Model {id: $m})-[r:CHECKPOINT_OF {step: 0}]->(:Run {id: $run}) "
                  "RETURN count(r) AS n", m=f"{run_id}@0", run=run_id) == 1
    assert delete_timeline(store, run_id, database=db, circuits=True)  # the run and that model go
    assert leftovers(store, db, f"{run_id}@0") == 0


def test_delete_removes_timeline_and_run(store, db, run_id):
    write_timeline(store, build(run_id), run_id=run_id, database=db)
    assert delete_timeline(store, run_id, database=db)
    assert read_timeline(store, run_id, database=db) is None
    assert _count(store, db, "MATCH (r:Run {id: $run}) RETURN count(r) AS n", run=run_id) == 0
    # circuits stay unless asked: they are ordinary stored circuits of the checkpoint models
    assert leftovers(store, db, f"{run_id}@0") > 0
    assert not delete_timeline(store, run_id, database=db)
    write_timeline(store, build(run_id), run_id=run_id, database=db)
    assert delete_timeline(store, run_id, database=db, circuits=True)
    for s in STEPS:
        assert leftovers(store, db, f"{run_id}@{s}") == 0


def test_schema_cookbook_is_the_code():
    """SCHEMA.md's timeline cookbook shows exactly the statements the functions above run."""
    text = (Path(__file__).resolve().parents[3] / "graphstore" / "SCHEMA.md").read_text()
    section = text.split("\n## Timelines\n", 1)[1].split("\n## ", 1)[0]
    shown = [q.strip() for q in re.findall(r"```cypher\n(.*?)```", section, re.S)]
    assert shown == [q.strip() for q in (queries.FIRST_STEP_IN_CIRCUIT, queries.MOVED_COMPONENTS,
                                         queries.CIRCUIT_SIZES)]
