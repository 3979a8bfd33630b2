"""Every query of the README's Cypher cookbook, run through the read-only path against a store
holding real circuits, equals the same question answered in Python on the source circuits."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest

from discovery.export import to_networkx
from graphstore.readonly import run_readonly

from . import reference

README = Path(__file__).resolve().parents[3] / "README.md"


def cookbook() -> list[str]:
    text = README.read_text()
    section = text.split("\n## Cypher cookbook\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```cypher\n(.*?)```", section, re.S)


def names(circuit, kinds: set[str]) -> set[str]:
    return {n.name for n in circuit.nodes if n.kind in kinds}


def shared_heads(c, p):
    heads = names(c["ioi"], {"attention"}) & names(c["induction"], {"attention"})
    return [(h, int(h[1:h.index(".")])) for h in sorted(heads, key=lambda h: (int(h[1:h.index(".")]), h))]


def layers_shared(c, p):
    counts = reference.task_counts(list(c.values()), {"attention", "mlp", "neuron"})
    layer = {n.name: n.layer for x in c.values() for n in x.nodes}
    per_layer = Counter(layer[n] for n, k in counts.items() if k >= 2)
    return sorted(per_layer.items(), key=lambda kv: (-kv[1], kv[0]))


def faithful(c, p):
    rows = [(t, x.id, x.provenance.method, x.metrics.faithfulness) for t, x in c.items()
            if x.metrics.faithfulness is not None and x.metrics.faithfulness > p["x"]]
    return sorted(rows, key=lambda r: -r[3])


def mlp3_neurons(c, p):
    both = ({n.name for n in c[p["a"]].nodes if n.kind == "neuron" and n.layer == 3}
            & {n.name for n in c[p["b"]].nodes if n.kind == "neuron" and n.layer == 3})
    return [(n,) for n in sorted(both, key=lambda n: int(n.split(".n")[1]))]


def hub_heads(c, p):
    counts = reference.task_counts(list(c.values()), {"attention", "mlp"})
    top = sorted(counts, key=lambda n: (-counts[n], n))[:10]
    return [(n, counts[n], sorted(t for t, x in c.items() if n in names(x, {"attention", "mlp"})))
            for n in top]


def edge_jaccard(c, p):
    a, b = reference.edge_set(c["ioi"]), reference.edge_set(c["induction"])
    return [(len(a & b), len(a | b), len(a & b) / len(a | b))]


def k_composition(c, p):
    edges = [e for e in c["induction"].edges if e.input == "k" and e.src.startswith("a")]
    return [(e.src, e.dst, e.score) for e in sorted(edges, key=lambda e: (-abs(e.score), e.src, e.dst))]


def ioi_not_induction(c, p):
    only = names(c["ioi"], {"attention", "mlp"}) - names(c["induction"], {"attention", "mlp"})
    layer = {n.name: n.layer for n in c["ioi"].nodes}
    return [(n,) for n in sorted(only, key=lambda n: (layer[n], n))]


def logit_writers(c, p):
    rows = []
    for task in sorted(c):
        into = [e for e in c[task].edges if e.dst == "logits"]
        top = sorted(into, key=lambda e: (-abs(e.score), e.src))[:3]
        rows.append((task, c[task].id, [e.src for e in top]))
    return rows


def paths(c, p):
    g = to_networkx(c["induction"])
    lengths = Counter(len(path) for path in nx.all_simple_edge_paths(g, "embed", "logits", cutoff=3))
    return sorted(lengths.items())


#: One Python answer per cookbook query, in the README's order.
CHECKS = [shared_heads, layers_shared, faithful, mlp3_neurons, hub_heads, edge_jaccard,
          k_composition, ioi_not_induction, logit_writers, paths]


def test_cookbook_has_a_check_per_query():
    assert len(cookbook()) == len(CHECKS) >= 8


@pytest.mark.parametrize("index", range(len(CHECKS)), ids=[f.__name__ for f in CHECKS])
def test_cookbook_query(real_circuits, store, db, index):
    query = cookbook()[index]
    params = {"model": real_circuits["ioi"].provenance.model, "x": 0.9, "a": "ioi",
              "b": "induction", "first": real_circuits["ioi"].id,
              "second": real_circuits["induction"].id, "circuit": real_circuits["induction"].id}
    wanted = set(re.findall(r"\$(\w+)", query))
    assert wanted <= set(params), f"cookbook query {index + 1} names unknown parameters"
    result = run_readonly(store, query, {k: params[k] for k in wanted}, database=db)
    expected = CHECKS[index](real_circuits, params)
    assert expected, f"cookbook query {index + 1} has nothing to find in the test circuits"
    assert [tuple(r) for r in result.rows] == [tuple(e) for e in expected]


def test_schema_examples_run_and_find_something(real_circuits, store, db):
    text = (Path(__file__).resolve().parents[3] / "graphstore" / "SCHEMA.md").read_text()
    text = text.split("\n## Experiments\n", 1)[0]  # test_experiments_cookbook.py runs those
    queries = re.findall(r"```cypher\n(.*?)```", text, re.S)
    ioi, ind = real_circuits["ioi"], real_circuits["induction"]
    params = {"circuit_id": ioi.id, "model": ioi.provenance.model, "task": "ioi", "method": "acdc",
              "min_faithfulness": 0.5, "ids": [ioi.id, ind.id], "x": ioi.id, "y": ind.id}
    assert len(queries) >= 7
    for query in queries:
        wanted = set(re.findall(r"\$(\w+)", query))
        result = run_readonly(store, query, {k: params[k] for k in wanted}, database=db)
        assert result.rows, query
