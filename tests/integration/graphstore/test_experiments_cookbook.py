"""Every query of SCHEMA.md's experiment cookbook, run through the read-only path (as users run
them) against three stored experiments, equals the same question answered in Python on the
Experiment objects that were written."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from discovery.circuit import Node
from discovery.experiments.result import Experiment
from graphstore.experiments import serves_and_hurts, write_experiment
from graphstore.readonly import run_readonly

from .conftest import leftovers, purge_model
from .test_experiments import experiment, pair_summary, purge_experiments, role, store_circuits

SCHEMA = Path(__file__).resolve().parents[3] / "graphstore" / "SCHEMA.md"


def cookbook() -> list[str]:
    section = SCHEMA.read_text().split("\n## Experiments\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```cypher\n(.*?)```", section, re.S)


def build(model: str, ids: dict[str, str]) -> list[Experiment]:
    """Three experiments of one model: ``a1.h2`` is competitive in each (for a different task
    each time), ``a2.h0`` only in the first; pairs with every verdict state."""
    def sub(*tasks: str) -> dict[str, str]:
        return {t: ids[t] for t in tasks}

    e1 = experiment(f"{model}-e1", model, sub("ioi", "induction"), created_at="2025-01-01T00:00:00+00:00",
                    components=[
                        role("ioi|induction", "a1.h2", "competitive", "ioi",
                             {"ioi": (0.8, 0.01), "induction": (0.1, 0.5)}),
                        role("ioi|induction", "a2.h0", "competitive", "induction", {"induction": (0.7, 0.01)}),
                        role("ioi|induction", "a0.h1", "cooperative", None,
                             {"ioi": (0.5, 0.02), "induction": (0.4, 0.03)}),
                    ], pairs=[pair_summary(sub("ioi", "induction"), "ioi", "induction", competition=0.3)])
    three = sub("ioi", "induction", "greater_than")
    e2 = experiment(f"{model}-e2", model, three, created_at="2025-02-01T00:00:00+00:00",
                    components=[
                        role("ioi|greater_than", "a1.h2", "competitive", "greater_than",
                             {"greater_than": (0.6, 0.01), "ioi": (-0.5, 1.0)}),
                        role("ioi|induction", "a2.h0", "neutral", None, {}),
                        role("induction|greater_than", "m1", "cooperative", None,
                             {"induction": (0.3, 0.01), "greater_than": (0.2, 0.02)}),
                        role("induction|greater_than", "m1.n7", "neutral", None, {"induction": (0.05, 0.5)}),
                    ], pairs=[pair_summary(three, "ioi", "induction", competition=0.5),
                              pair_summary(three, "ioi", "greater_than", competition=0.7),
                              pair_summary(three, "induction", "greater_than", competes="not supported",
                                           competition=0.02)])
    e3 = experiment(f"{model}-e3", model, sub("induction", "greater_than"),
                    created_at="2025-03-01T00:00:00+00:00",
                    components=[
                        role("induction|greater_than", "a1.h2", "competitive", "induction",
                             {"induction": (0.4, 0.03)}),
                        role("induction|greater_than", "a2.h0", "cooperative", None,
                             {"induction": (0.2, 0.2), "greater_than": (0.1, 0.3)}),
                    ], pairs=[pair_summary(sub("induction", "greater_than"), "induction", "greater_than",
                                           competes="inconclusive", competition=0.9)])
    return [e1, e2, e3]


def position(name: str) -> tuple[int, str]:
    return (Node.parse(name).layer, name)


def competitive_everywhere(exps: list[Experiment]) -> list[tuple]:
    sets = [{r.name for r in e.components if r.role == "competitive"} for e in exps]
    common = set.intersection(*sets)
    return [(n, Node.parse(n).kind, len(exps)) for n in sorted(common, key=position)]


def serves_hurts(exps: list[Experiment]) -> list[tuple]:
    serves: dict[str, set[str]] = {}
    hurts: dict[str, set[str]] = {}
    for e in exps:
        for r in e.components:
            s, h = serves_and_hurts(e, r)
            if s or h:
                serves.setdefault(r.name, set()).update(s)
                hurts.setdefault(r.name, set()).update(h)
    return [(n, sorted(serves[n]), sorted(hurts[n])) for n in sorted(serves, key=position)]


def ranked_competition(exps: list[Experiment]) -> list[tuple]:
    rows = [(p.pair.split("|")[0], p.circuits[0], p.pair.split("|")[1], p.circuits[1], p.competition,
             p.competes.p_value, e.id) for e in exps for p in e.pairs if p.competes.state == "supported"]
    return sorted(rows, key=lambda r: (-r[4], r[6]))


def measured(exps: list[Experiment]) -> list[tuple]:
    e = exps[1]
    rows = [(r.pair, r.name, r.role, r.favours, [[t, e_] for t, e_ in
                                                  sorted(r.effects.items(), key=lambda kv: e.tasks.index(kv[0]))])
            for r in e.components]
    return sorted(rows, key=lambda r: (r[0], *position(r[1])))


#: One Python answer per cookbook query, in SCHEMA.md's order.
CHECKS = [competitive_everywhere, serves_hurts, ranked_competition, measured]


@pytest.fixture(scope="module")
def stored(store, db) -> Iterator[tuple[str, list[Experiment]]]:
    model = f"expbook@test-{uuid.uuid4().hex[:10]}"
    try:
        circuits = store_circuits(store, db, model, ("ioi", "induction", "greater_than"))
        exps = build(model, {t: c.id for t, c in circuits.items()})
        for e in exps:
            write_experiment(store, e, database=db)
        yield model, exps
    finally:
        purge_experiments(store, db, model)
        purge_model(store, db, model)
        assert leftovers(store, db, model) == 0


def test_cookbook_has_a_check_per_query():
    assert len(cookbook()) == len(CHECKS) >= 3


@pytest.mark.parametrize("index", range(len(CHECKS)), ids=[f.__name__ for f in CHECKS])
def test_experiment_cookbook_query(stored, store, db, index):
    model, exps = stored
    query = cookbook()[index]
    params = {"model": model, "experiment": exps[1].id}
    wanted = set(re.findall(r"\$(\w+)", query))
    assert wanted <= set(params), f"experiment cookbook query {index + 1} names unknown parameters"
    result = run_readonly(store, query, {k: params[k] for k in wanted}, database=db)
    expected = CHECKS[index](exps)
    assert expected, f"experiment cookbook query {index + 1} has nothing to find"
    assert [tuple(r) for r in result.rows] == [tuple(e) for e in expected]


def test_the_cookbook_answers_what_the_experiments_say(stored):
    """The Python references themselves, spelled out for the component that matters."""
    _, exps = stored
    assert competitive_everywhere(exps) == [("a1.h2", "attention", 3)]
    rows = {r[0]: r[1:] for r in serves_hurts(exps)}
    assert rows["a1.h2"] == (["greater_than", "induction", "ioi"], ["greater_than", "induction", "ioi"])
    assert rows["a2.h0"] == (["induction"], ["ioi"])
    assert [r[4] for r in ranked_competition(exps)] == [0.7, 0.5, 0.3]
