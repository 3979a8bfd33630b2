"""Experiments in the real Neo4j: exact round trips, the graph around them (links, per-component
results, circuit-to-circuit summaries), replace-on-write, deletion, refusal of unknown or foreign
circuits, atomic writes, deleting a tested circuit, and listing with filters.

Experiments are built by hand (synthetic numbers) over synthetic circuits, each test under its own
model id; the fixture deletes what it wrote and checks that nothing of the model is left."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest

from discovery.circuit import Circuit, Node
from discovery.experiments.result import (
    AblationCell,
    ComponentRole,
    ComponentSets,
    ConflictSummary,
    ControlStats,
    CrossFaithfulness,
    DosePoint,
    DoseResponse,
    Experiment,
    ExperimentProvenance,
    PairSummary,
    Verdict,
    pair_key,
    set_names,
)
from graphstore.experiments import (
    circuits_exist,
    delete_experiment,
    experiment_exists,
    list_experiments,
    read_experiment,
    serves_and_hurts,
    write_experiment,
)
from graphstore.store import delete_circuit, read_circuit, write_circuit

from .conftest import leftovers, purge_model
from .reference import synthetic


def control(p: float, n: int = 20) -> ControlStats:
    return ControlStats(n=n, distinct=n, pool="outside circuits", pool_size=40, mean=0.01,
                        std=0.02, z=2.5, p_value=p)


def verdict(state: str = "supported", value: float | None = 0.4, p: float | None = 0.01) -> Verdict:
    return Verdict(claim="synthetic claim", state=state, statistic="empirical p vs 20 random sets",
                   value=value, p_value=p, control="20 random sets")  # type: ignore[arg-type]


def role(pair: str, name: str, kind_role: str = "cooperative", favours: str | None = None,
         effects: dict[str, tuple[float, float | None]] | None = None,
         membership: str = "") -> ComponentRole:
    """A component's role; ``effects``: task -> (effect, control p-value or None: no control)."""
    effects = effects or {}
    return ComponentRole(
        pair=pair, name=name, kind=Node.parse(name).kind, membership=membership or pair.replace("|", "&"),
        role=kind_role, favours=favours,  # type: ignore[arg-type]
        effects={t: e for t, (e, _) in effects.items()},
        effect_controls={t: None if p is None else control(p) for t, (_, p) in effects.items()},
        dla_mean=0.5, dla_t=3.25, dla_p=0.002, conflict_shift=-0.125,
        conflict_control=control(0.03), verdict=verdict("supported" if kind_role != "neutral" else "not supported"))


def pair_summary(circuits: dict[str, str], a: str, b: str, competes: str = "supported",
                 competition: float = 0.3, cooperates: str = "not supported",
                 cooperation: float = 0.05) -> PairSummary:
    return PairSummary(pair=pair_key(a, b), circuits=(circuits[a], circuits[b]),
                       competes=verdict(competes, competition, 0.01),
                       cooperates=verdict(cooperates, cooperation, 0.4),
                       competition=competition, cooperation=cooperation)


def experiment(eid: str, model: str, circuits: dict[str, str], *, components=(), pairs=None,
               created_at: str = "2025-06-01T00:00:00+00:00", seed: int = 0) -> Experiment:
    """A full experiment (every table filled) over ``circuits`` (task -> id), synthetic numbers."""
    tasks = tuple(circuits)
    a, b = tasks[0], tasks[1]
    key, names = pair_key(a, b), set_names(a, b)
    cell = AblationCell(pair=key, set_name=names[2], kind="nodes", task=a, size=3, metric=0.5,
                        full=2.0, empty=0.1, faithfulness=0.21, top1=0.4, effect=1.5,
                        control=control(0.048), verdict=verdict())
    dose = DoseResponse(pair=key, scaled_task=a, components=("a1.h2",),
                        points=tuple(DosePoint(alpha=x, metrics={a: 1.0 + x, b: 2.0 - x / 4},
                                               win_rate=0.2 * x, logit_diff=x - 1.0)
                                     for x in (0.0, 0.5, 1.0, 1.5, 2.0, 4.0)),
                        verdict=verdict(value=0.9))
    if pairs is None:
        pairs = tuple(pair_summary(circuits, x, y) for i, x in enumerate(tasks) for y in tasks[i + 1:])
    return Experiment(
        id=eid, model=model, tasks=tasks, circuits=dict(circuits), ablation="corrupt", seed=seed,
        n_controls=20, alphas=(0.0, 0.5, 1.0, 1.5, 2.0, 4.0), n_prompts=50,
        params={"method": "acdc", "threshold": 0.01, "nested": {"k": [1, 2]}},
        sets=(ComponentSets(pair=key, nodes={n: ("a1.h2",) for n in names},
                            edges={n: ("embed->a1.h2.q",) for n in names}, node_jaccard=0.5),),
        ablations=(cell,),
        cross=(CrossFaithfulness(circuit_task=a, eval_task=b, metric="logit_diff", value=0.3,
                                 full=2.0, empty=0.1, faithfulness=None, top1=0.25),),
        conflicts=(ConflictSummary(pair=key, source="builtin:ioi_induction", n_prompts=50,
                                   win_rate={a: 0.7, b: 0.3}, top1_rate={a: 0.6, b: 0.2, "other": 0.2},
                                   logit_diff_mean=1.25, logit_diff_std=0.5, ablation="mean"),),
        components=tuple(components), dose=(dose,), pairs=tuple(pairs),
        provenance=ExperimentProvenance(model_sha256="ab" * 32, dataset_hashes={a: "h1", b: "h2"},
                                        conflict_hashes={key: "c1"}, versions={"torch": "2"},
                                        timings={"controls": 1.5}, forward_passes=1234,
                                        created_at=created_at),
    )


def store_circuits(store, db: str, model: str, tasks: tuple[str, ...]) -> dict[str, Circuit]:
    """One synthetic circuit per task over every edge of the 4x4 shape (so every head and MLP is
    in every circuit), ids unique to ``model``; the second also has neurons (``m2.n50`` among
    them), which only it includes."""
    out = {}
    for i, task in enumerate(tasks):
        circuit = synthetic(f"{model}-{task}", model, task, seed=i, neurons=2 if i == 1 else 0)
        write_circuit(store, circuit, database=db)
        out[task] = circuit
    return out


def purge_experiments(driver, db: str, model: str) -> None:
    total, rows = list_experiments(driver, database=db, model=model, limit=1000)
    for row in rows:
        delete_experiment(driver, row.id, database=db)


def count(driver, db: str, query: str, **params) -> int:
    records, _, _ = driver.execute_query(query, **params, database_=db)
    return records[0][0]


@pytest.fixture
def exp_model(store, db) -> Iterator[str]:
    """A model id no other test uses; its experiments, circuits and components go afterwards."""
    model = f"exp@test-{uuid.uuid4().hex[:10]}"
    yield model
    purge_experiments(store, db, model)
    purge_model(store, db, model)
    assert leftovers(store, db, model) == 0
    assert count(store, db, "MATCH (e:Experiment {model: $m}) RETURN count(e)", m=model) == 0


def graph_state(driver, db: str, eid: str) -> dict[str, object]:
    """What of experiment ``eid`` the graph holds, as counts and sorted rows."""
    q = {
        "nodes": "MATCH (e:Experiment {id: $id}) RETURN count(e)",
        "of_model": "MATCH (:Experiment {id: $id})-[r:OF_MODEL]->(:Model) RETURN count(r)",
        "tests": "MATCH (:Experiment {id: $id})-[r:TESTS]->(:Circuit) RETURN count(r)",
        "measured": "MATCH (:Experiment {id: $id})-[r:MEASURED]->(:Component) RETURN count(r)",
        "competes": "MATCH ()-[r:COMPETES_WITH {experiment: $id}]->() RETURN count(r)",
        "cooperates": "MATCH ()-[r:COOPERATES_WITH {experiment: $id}]->() RETURN count(r)",
    }
    return {k: count(driver, db, v, id=eid) for k, v in q.items()}


def two_task(store, db, model: str):
    circuits = store_circuits(store, db, model, ("ioi", "induction"))
    ids = {t: c.id for t, c in circuits.items()}
    comps = [
        role("ioi|induction", "a1.h2", "competitive", "ioi", {"ioi": (0.8, 0.01), "induction": (-0.6, 1.0)}),
        role("ioi|induction", "a0.h1", "cooperative", None, {"ioi": (0.5, 0.02), "induction": (0.4, 0.04)}),
        role("ioi|induction", "m2", "neutral", None, {"ioi": (0.01, 0.6), "induction": (0.02, None)}),
        role("ioi|induction", "m1.n5", "mixed", None, {"ioi": (0.3, 0.2)}),  # in no circuit
    ]
    return circuits, experiment(f"{model}-e1", model, ids, components=comps)


def test_serves_and_hurts_follow_the_controls():
    ids = {"ioi": "c1", "induction": "c2"}
    exp = experiment("e", "m", ids)
    rows = {
        # significant drop on ioi; competitive for ioi, so it hurts induction (the other answer)
        ("ioi", "induction"): role("ioi|induction", "a1.h2", "competitive", "ioi",
                                   {"ioi": (0.8, 0.01), "induction": (0.1, 0.5)}),
        # significant drops on both; no control -> no claim; significant gain -> hurts
        ("induction", "ioi"): role("ioi|induction", "a0.h1", "mixed", None,
                                   {"induction": (0.8, 0.01), "ioi": (-0.9, 1.0)}),
        ((), ()): role("ioi|induction", "a0.h0", "mixed", None,
                       {"ioi": (0.9, None), "induction": (-0.2, 0.6)}),
    }
    for (serves, hurts), r in rows.items():
        got = serves_and_hurts(exp, r)
        want = ([serves] if serves else [], [hurts] if hurts else [])
        assert got == want, r.name
    # a gain at the edge of significance: 20 controls, all above it -> lower-tail p = 1/21
    edge = role("ioi|induction", "a0.h2", "mixed", None, {"ioi": (-0.5, 1.0)})
    assert serves_and_hurts(exp, edge) == ([], ["ioi"])
    assert serves_and_hurts(dataclasses.replace(exp, alpha_level=0.04), edge) == ([], [])


def test_round_trip_and_the_graph_around_it(store, db, exp_model):
    circuits, exp = two_task(store, db, exp_model)
    assert write_experiment(store, exp, database=db) == exp.id
    assert read_experiment(store, exp.id, database=db) == exp
    assert read_experiment(store, "no-such-experiment", database=db) is None
    assert experiment_exists(store, exp.id, database=db)
    assert graph_state(store, db, exp.id) == {"nodes": 1, "of_model": 1, "tests": 2, "measured": 4,
                                               "competes": 1, "cooperates": 1}
    records, _, _ = store.execute_query(
        "MATCH (e:Experiment {id: $id})-[t:TESTS]->(c:Circuit) RETURN t.task AS task, c.id AS id "
        "ORDER BY task", id=exp.id, database_=db)
    assert [(r["task"], r["id"]) for r in records] == [("induction", circuits["induction"].id),
                                                        ("ioi", circuits["ioi"].id)]
    records, _, _ = store.execute_query(
        "MATCH (:Experiment {id: $id})-[r:MEASURED]->(n:Component) RETURN n.uid AS uid, "
        "labels(n) AS labels, r {.*} AS r ORDER BY n.name", id=exp.id, database_=db)
    by_name = {r["uid"].split("/", 1)[1]: r for r in records}
    head = by_name["a1.h2"]["r"]
    assert head["serves"] == ["ioi"] and head["hurts"] == ["induction"]
    assert (head["role"], head["favours"], head["pair"], head["verdict"]) == (
        "competitive", "ioi", "ioi|induction", "supported")
    assert head["tasks"] == ["ioi", "induction"] and head["effects"] == [0.8, -0.6]
    assert (head["dla_mean"], head["dla_t"], head["dla_p"], head["conflict_shift"]) == (0.5, 3.25, 0.002, -0.125)
    assert by_name["a0.h1"]["r"]["serves"] == ["ioi", "induction"]
    assert by_name["m2"]["r"]["serves"] == [] and "favours" not in by_name["m2"]["r"]
    assert "Neuron" in by_name["m1.n5"]["labels"]  # measured, in no circuit: merged with its label
    assert count(store, db, "MATCH (:Neuron {uid: $u})-[:IN]->(:MLP {uid: $m}) RETURN count(*)",
                 u=f"{exp_model}/m1.n5", m=f"{exp_model}/m1") == 1
    records, _, _ = store.execute_query(
        "MATCH (a:Circuit)-[r:COMPETES_WITH {experiment: $id}]->(b:Circuit) "
        "RETURN a.id AS a, b.id AS b, r {.*} AS r", id=exp.id, database_=db)
    (row,) = records
    assert (row["a"], row["b"]) == (circuits["ioi"].id, circuits["induction"].id)
    assert (row["r"]["state"], row["r"]["competition"], row["r"]["tasks"]) == ("supported", 0.3, ["ioi", "induction"])
    assert circuits_exist(store, [circuits["ioi"].id, "nope"], database=db) == {
        circuits["ioi"].id: exp_model, "nope": None}


def test_rewriting_leaves_one_copy_and_nothing_stale(store, db, exp_model):
    circuits, exp = two_task(store, db, exp_model)
    write_experiment(store, exp, database=db)
    before = graph_state(store, db, exp.id)
    write_experiment(store, exp, database=db)  # a re-delivered job
    assert graph_state(store, db, exp.id) == before
    # a corrected experiment under the same id: fewer components, the neuron gone, a new verdict
    ids = {t: c.id for t, c in circuits.items()}
    fixed = dataclasses.replace(exp, components=exp.components[:2], pairs=(
        pair_summary(ids, "ioi", "induction", competes="not supported", competition=0.01),))
    write_experiment(store, fixed, database=db)
    assert read_experiment(store, exp.id, database=db) == fixed
    assert graph_state(store, db, exp.id) == {**before, "measured": 2}
    assert count(store, db, "MATCH (n:Component {uid: $u}) RETURN count(n)", u=f"{exp_model}/m1.n5") == 0
    assert count(store, db, "MATCH ()-[r:COMPETES_WITH {experiment: $id, state: 'not supported'}]->() "
                 "RETURN count(r)", id=exp.id) == 1
    assert list_experiments(store, database=db, model=exp_model)[0] == 1


def test_delete_keeps_circuits_and_components(store, db, exp_model):
    circuits, exp = two_task(store, db, exp_model)
    components_before = count(store, db, "MATCH (n:Component {model: $m}) RETURN count(n)", m=exp_model)
    write_experiment(store, exp, database=db)
    assert delete_experiment(store, exp.id, database=db) is True
    assert delete_experiment(store, exp.id, database=db) is False
    assert read_experiment(store, exp.id, database=db) is None
    assert graph_state(store, db, exp.id) == dict.fromkeys(graph_state(store, db, exp.id), 0)
    for circuit in circuits.values():
        assert read_circuit(store, circuit.id, database=db) == circuit
    # the measured-only neuron went with the experiment; every circuit component stayed
    assert count(store, db, "MATCH (n:Component {model: $m}) RETURN count(n)", m=exp_model) == components_before


def test_unknown_or_foreign_circuits_are_refused_and_nothing_written(store, db, exp_model):
    circuits, exp = two_task(store, db, exp_model)
    missing = dataclasses.replace(exp, circuits={"ioi": circuits["ioi"].id, "induction": f"{exp_model}-gone"},
                                  pairs=())
    with pytest.raises(ValueError, match=rf"circuits not in the store: {exp_model}-gone"):
        write_experiment(store, missing, database=db)
    other = synthetic(f"{exp_model}-other", f"{exp_model}-b", "induction")
    write_circuit(store, other, database=db)
    try:
        foreign = dataclasses.replace(missing, circuits={"ioi": circuits["ioi"].id, "induction": other.id})
        with pytest.raises(ValueError, match=rf"{other.id} \(model {exp_model}-b\)"):
            write_experiment(store, foreign, database=db)
    finally:
        delete_circuit(store, other.id, database=db)
    assert not experiment_exists(store, exp.id, database=db)
    assert graph_state(store, db, exp.id)["nodes"] == 0
    bad = dataclasses.replace(exp, components=(dataclasses.replace(exp.components[0], name="a9.hx"),))
    with pytest.raises(ValueError, match=r"components\[0\]\.name"):
        write_experiment(store, bad, database=db)
    with pytest.raises(ValueError, match=r"pairs\[0\]\.circuits"):
        write_experiment(store, dataclasses.replace(exp, pairs=(dataclasses.replace(
            exp.pairs[0], circuits=("x", "y")),)), database=db)


def test_failure_mid_write_leaves_nothing_or_the_earlier_version(store, db, exp_model):
    circuits, exp = two_task(store, db, exp_model)
    outside = []

    def fail_at_pairs(stage: str, done: int, total: int) -> None:
        if stage == "pairs":  # everything else is written by now, inside the transaction
            outside.append(experiment_exists(store, exp.id, database=db))
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected failure"):
        write_experiment(store, exp, database=db, batch=1, on_batch=fail_at_pairs)
    assert outside == [False]
    assert graph_state(store, db, exp.id) == dict.fromkeys(graph_state(store, db, exp.id), 0)
    assert count(store, db, "MATCH (n:Component {uid: $u}) RETURN count(n)", u=f"{exp_model}/m1.n5") == 0
    write_experiment(store, exp, database=db)
    before = graph_state(store, db, exp.id)
    changed = dataclasses.replace(exp, components=())
    with pytest.raises(RuntimeError, match="injected failure"):
        write_experiment(store, changed, database=db, on_batch=fail_at_pairs)
    assert read_experiment(store, exp.id, database=db) == exp
    assert graph_state(store, db, exp.id) == before


def test_deleting_a_tested_circuit_keeps_the_experiment(store, db, exp_model):
    circuits, exp = two_task(store, db, exp_model)
    only_induction = role("ioi|induction", "m2.n50", "neutral", None, {"induction": (0.2, 0.3)},
                          membership="induction-ioi")
    exp = dataclasses.replace(exp, components=exp.components + (only_induction,))
    write_experiment(store, exp, database=db)
    gone = circuits["induction"].id
    assert delete_circuit(store, gone, database=db)
    assert read_experiment(store, exp.id, database=db) == exp
    state = graph_state(store, db, exp.id)
    assert (state["tests"], state["measured"], state["competes"], state["cooperates"]) == (1, 5, 0, 0)
    total, rows = list_experiments(store, database=db, circuit=gone)
    assert (total, [r.id for r in rows]) == (1, [exp.id])
    # the neuron only the deleted circuit included outlives it, measured, still in its MLP
    assert count(store, db, "MATCH (:Experiment {id: $id})-[:MEASURED]->(n:Neuron {uid: $u})-[:IN]->(:MLP) "
                 "RETURN count(n)", id=exp.id, u=f"{exp_model}/m2.n50") == 1
    assert delete_experiment(store, exp.id, database=db)
    assert count(store, db, "MATCH (n:Component {uid: $u}) RETURN count(n)", u=f"{exp_model}/m2.n50") == 0


def test_list_filters_pages_newest_first(store, db, exp_model):
    circuits = store_circuits(store, db, exp_model, ("ioi", "induction", "successor"))
    ids = {t: c.id for t, c in circuits.items()}
    specs = [("e1", ("ioi", "induction"), "2025-01-01T00:00:00+00:00"),
             ("e2", ("induction", "successor"), "2025-03-01T00:00:00+00:00"),
             ("e3", ("ioi", "induction", "successor"), "2025-02-01T00:00:00+00:00")]
    for name, tasks, when in specs:
        write_experiment(store, experiment(f"{exp_model}-{name}", exp_model, {t: ids[t] for t in tasks},
                                           created_at=when), database=db)

    def listed(**kw):
        total, rows = list_experiments(store, database=db, model=exp_model, **kw)
        return total, [r.id.rsplit("-", 1)[1] for r in rows]

    assert listed() == (3, ["e2", "e3", "e1"])
    assert listed(task="ioi") == (2, ["e3", "e1"])
    assert listed(circuit=ids["successor"]) == (2, ["e2", "e3"])
    assert listed(task="successor", circuit=ids["ioi"]) == (1, ["e3"])
    assert listed(offset=1, limit=1) == (3, ["e3"])
    assert listed(task="pronoun") == (0, [])
    _, rows = list_experiments(store, database=db, model=exp_model, limit=1)
    summary = rows[0]
    assert (summary.model, summary.tasks, summary.circuits) == (
        exp_model, ("induction", "successor"), {"induction": ids["induction"], "successor": ids["successor"]})
    assert (summary.ablation, summary.seed, summary.n_controls, summary.created_at) == (
        "corrupt", 0, 20, "2025-03-01T00:00:00+00:00")
    assert summary.pairs == ({"pair": "induction|successor", "competes": "supported",
                              "cooperates": "not supported", "competition": 0.3, "cooperation": 0.05},)
    assert summary.to_dict()["tasks"] == ["induction", "successor"]
    with pytest.raises(ValueError, match="limit"):
        list_experiments(store, database=db, limit=0)


def test_concurrent_writes_of_one_experiment_leave_one_copy(store, db, exp_model):
    circuits, exp = two_task(store, db, exp_model)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            write_experiment(store, exp, database=db)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert graph_state(store, db, exp.id) == {"nodes": 1, "of_model": 1, "tests": 2, "measured": 4,
                                               "competes": 1, "cooperates": 1}
    assert read_experiment(store, exp.id, database=db) == exp


def test_the_experiment_store_loads_no_torch():
    code = "import sys, graphstore.experiments; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
