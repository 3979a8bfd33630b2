"""The experiment view of the web page in headless chromium against the real API and Neo4j: a
synthetic competition experiment (built by hand from the result dataclasses, over two hand-built
circuits that share two heads) is stored through the graph store, listed, opened, and its
ablation-matrix heatmap, dose-response curves, role colours and verdicts checked against the
stored numbers. Everything stored is deleted afterwards. Skipped where chromium cannot run."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import pytest

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance
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
from graphstore.store import delete_circuit, ensure_schema, write_circuit
from tests.integration.api.conftest import READ_KEY
from tests.integration.api.test_web import _css, _use_key, _wait, browser  # noqa: F401 (fixture)

A, B = "ioi", "induction"
PAIR = pair_key(A, B)
#: Per set of the pair: its components and (faithfulness on A, faithfulness on B); distinct values
#: so that a cell showing another cell's numbers fails.
SETS = {A: (("a0.h0", "a0.h1", "a1.h2", "m1"), (0.05, 0.62)),
        B: (("a0.h0", "a0.h3", "a1.h2"), (0.48, 0.11)),
        f"{A}&{B}": (("a0.h0", "a1.h2"), (0.31, 0.27)),
        f"{A}-{B}": (("a0.h1", "m1"), (0.83, 1.12)),
        f"{B}-{A}": (("a0.h3",), (0.97, 0.74))}
ROLES = {"a0.h0": ("cooperative", None), "a1.h2": ("competitive", A), "a0.h1": ("neutral", None),
         "m1": ("mixed", A), "a0.h3": ("competitive", B)}
ROLE_FILL = {"cooperative": "#1b9e77", "competitive": "#d95f02"}  # charts.js ROLE_COLOURS
ALPHAS = (0.0, 0.5, 1.0, 2.0)
FULL = {A: 3.2, B: 2.5}
EMPTY = {A: 0.1, B: -0.3}


def _circuit(model: str, task: str, nodes: tuple[str, ...]) -> Circuit:
    names = ("embed", *nodes, "logits")
    heads = [n for n in nodes if n.startswith("a")]
    edges = [Edge("embed", h, "q", 0.5) for h in heads if h.startswith("a0")]
    edges += [Edge(h, "a1.h2", "v", 0.3) for h in heads if h.startswith("a0") and "a1.h2" in nodes]
    edges += [Edge("embed", n, "mlp", 0.4) for n in nodes if n.startswith("m")]
    edges += [Edge(n, "logits", "logits", 0.2) for n in nodes if n.startswith(("a1", "m1"))]
    return Circuit(id=str(uuid.uuid4()), nodes=tuple(Node.parse(n, score=0.1) for n in names),
                   edges=tuple(edges), metrics=Metrics(full=FULL[task], empty=EMPTY[task], circuit=2.0,
                                                       name="logit_diff"),
                   provenance=Provenance(model=model, task=task, method="acdc"),
                   graph=GraphShape(n_layers=2, n_heads=4, mlp=True))


def _verdict(claim: str, state: str, value: float, p: float | None) -> Verdict:
    return Verdict(claim=claim, state=state, statistic="empirical p vs 20 random sets", value=value,
                   p_value=p, control="20 random sets of the same size", detail="")


def _control(p: float) -> ControlStats:
    return ControlStats(n=20, distinct=20, pool="outside circuits", pool_size=9, mean=0.02, std=0.01,
                        z=4.0, p_value=p)


def _cells() -> list[AblationCell]:
    cells = []
    for i, (set_name, (members, faiths)) in enumerate(SETS.items()):
        for task, f in zip((A, B), faiths, strict=True):
            metric = EMPTY[task] + f * (FULL[task] - EMPTY[task])
            p = round(0.048 + 0.1 * i + (0.02 if task == B else 0), 3)
            state = "supported" if p < 0.05 else "not supported"
            cells.append(AblationCell(
                pair=PAIR, set_name=set_name, kind="nodes", task=task, size=len(members), metric=metric,
                full=FULL[task], empty=EMPTY[task], faithfulness=f, top1=0.5, effect=FULL[task] - metric,
                control=_control(p), verdict=_verdict(f"ablating {set_name} hurts {task}", state, f, p)))
    return cells


def _roles() -> list[ComponentRole]:
    out = []
    for name, (role, favours) in ROLES.items():
        membership = next(s for s in set_names(A, B)[2:] if name in SETS[s][0])
        out.append(ComponentRole(
            pair=PAIR, name=name, kind="mlp" if name.startswith("m") else "attention", membership=membership,
            role=role, favours=favours, effects={A: 0.4, B: 0.3}, effect_controls={A: _control(0.048), B: None},
            dla_mean=0.7, dla_t=3.1, dla_p=0.01, conflict_shift=0.2, conflict_control=_control(0.1),
            verdict=_verdict(f"{name} is {role}", "supported", 0.7, 0.01)))
    return out


def _dose(scaled: str, wins: tuple[float, ...]) -> DoseResponse:
    points = tuple(DosePoint(alpha=a, metrics={A: 1.0 + a, B: 2.0 - 0.5 * a}, win_rate=w, logit_diff=0.3 * a)
                   for a, w in zip(ALPHAS, wins, strict=True))
    return DoseResponse(pair=PAIR, scaled_task=scaled, components=SETS[f"{scaled}-{B if scaled == A else A}"][0],
                        points=points, verdict=Verdict(
                            claim=f"amplifying {scaled}'s unique components raises its win rate",
                            state="supported", statistic="Spearman rho (alpha, win rate)", value=1.0,
                            p_value=0.008, control="alpha = 1"))


def _experiment(model: str, circuits: dict[str, Circuit]) -> Experiment:
    return Experiment(
        id=f"webexp-{uuid.uuid4().hex[:12]}", model=model, tasks=(A, B),
        circuits={t: c.id for t, c in circuits.items()}, ablation="corrupt", seed=3, n_controls=20,
        alphas=ALPHAS, n_prompts=50,
        sets=(ComponentSets(pair=PAIR, nodes={s: m for s, (m, _) in SETS.items()},
                            edges={s: () for s in SETS}, node_jaccard=0.4, edge_jaccard=0.1),),
        ablations=tuple(_cells()),
        cross=(CrossFaithfulness(circuit_task=A, eval_task=B, metric="logit_diff", value=0.9, full=2.5,
                                 empty=-0.3, faithfulness=0.429, top1=0.25),),
        conflicts=(ConflictSummary(pair=PAIR, source="builtin:ioi_induction", n_prompts=50,
                                   win_rate={A: 0.62, B: 0.38}, top1_rate={A: 0.5, B: 0.3, "other": 0.2},
                                   logit_diff_mean=0.41, logit_diff_std=1.2, ablation="mean"),),
        components=tuple(_roles()),
        dose=(_dose(A, (0.2, 0.4, 0.62, 0.9)), _dose(B, (0.7, 0.55, 0.38, 0.1))),
        pairs=(PairSummary(pair=PAIR, circuits=(circuits[A].id, circuits[B].id),
                           competes=_verdict("ablating one task's unique components moves conflict prompts "
                                             "towards the other", "supported", 0.217, 0.048),
                           cooperates=_verdict("the shared components are needed by both tasks",
                                               "not supported", 0.73, 0.31),
                           competition=0.217, cooperation=0.73),),
        provenance=ExperimentProvenance(device="cpu", forward_passes=1234, created_at="2026-01-02T03:04:05"))


@pytest.fixture(scope="module")
def experiment(neo4j_driver, settings) -> Iterator[Experiment]:
    """The synthetic experiment and its two circuits, stored under a model id of this run; all
    deleted afterwards."""
    from graphstore.experiments import delete_experiment, write_experiment

    db = settings.neo4j_database
    model = f"multitask@webexp-{uuid.uuid4().hex[:10]}"
    ensure_schema(neo4j_driver, database=db)
    circuits = {A: _circuit(model, A, SETS[A][0]), B: _circuit(model, B, SETS[B][0])}
    stored = _experiment(model, circuits)
    try:
        for c in circuits.values():
            write_circuit(neo4j_driver, c, database=db)
        write_experiment(neo4j_driver, stored, database=db)
        yield stored
    finally:
        delete_experiment(neo4j_driver, stored.id, database=db)
        for c in circuits.values():
            delete_circuit(neo4j_driver, c.id, database=db)


def faith_colour(f: float) -> tuple[int, int, int]:
    """charts.js faithColour: red at 0, near white at 1, blue above 1 (Math.round: half up)."""
    white = (247, 247, 247)
    start, end, t = ((215, 48, 39), white, max(0.0, f)) if f <= 1 else (white, (116, 169, 207), min(1.0, (f - 1) * 2))
    return tuple(math.floor(s + (e - s) * t + 0.5) for s, e in zip(start, end, strict=True))


def _open(driver, server, experiment: Experiment):
    """Load the page, filter the experiment list to the synthetic model, open the experiment and
    wait for the union drawing; returns the pair's section."""
    driver.get(server.url + "/")
    _use_key(driver, READ_KEY)
    _css(driver, "#experiment-filters input[name=model]")[0].send_keys(experiment.model)
    _css(driver, "#experiment-filters button")[0].click()
    _wait(driver, lambda d: "model=" in (_css(d, "#experiments tbody")[0].get_attribute("data-query") or ""))
    rows = _css(driver, "#experiments tbody tr")
    assert [r.get_attribute("data-id") for r in rows] == [experiment.id]
    listed = [c.text for c in rows[0].find_elements("css selector", "td")]
    assert listed[:5] == [experiment.model, f"{A} × {B}", "corrupt", "3", "20"]
    assert listed[5] == f"{A} × {B}: competes supported, cooperates not supported"
    rows[0].click()
    _wait(driver, lambda d: _css(d, f"#experiment-view[data-id='{experiment.id}'] .union-drawing[data-state]")
          and _css(d, ".union-drawing")[0].get_attribute("data-state") != "loading")
    assert _css(driver, ".union-drawing")[0].get_attribute("data-state") == "drawn", _css(driver, ".union-drawing")[0].text
    assert not _css(driver, "#circuit-view")[0].is_displayed()
    return _css(driver, f"section.pair[data-pair='{PAIR}']")[0]


def test_experiment_view_shows_the_stored_numbers(browser, server, experiment):  # noqa: F811
    driver = browser
    section = _open(driver, server, experiment)
    assert _css(driver, "#experiment-title")[0].text == f"{experiment.model} / {A} × {B} / corrupt ablation"

    # Heatmap: five rows (the sets) by two columns (the tasks), coloured by faithfulness.
    rows = section.find_elements("css selector", "table.heatmap[data-kind=nodes] tbody tr")
    assert [r.get_attribute("data-set") for r in rows] == list(set_names(A, B))
    for c in experiment.ablations:
        td = section.find_element("css selector", f"td.heat[data-set='{c.set_name}'][data-task='{c.task}']")
        assert td.text.splitlines() == [f"faithfulness {c.faithfulness:.3f}", f"effect {c.effect:.3f}",
                                        f"control p {c.control.p_value:.3f}", c.verdict.state]
        assert td.value_of_css_property("background-color") == "rgba({}, {}, {}, 1)".format(*faith_colour(c.faithfulness))
    worst = section.find_element("css selector", f"td.heat[data-set='{A}'][data-task='{A}']")
    assert worst.value_of_css_property("background-color").startswith("rgba(2")  # faithfulness 0.05: red

    # Conflict win rates and cross-task faithfulness.
    conflict = [c.text for c in section.find_elements("css selector", "table.conflicts tbody td")]
    assert conflict[:4] == ["50", "builtin:ioi_induction", "62.0%", "38.0%"] and conflict[7] == "0.410 ± 1.200"
    cross = [c.text for c in _css(driver, "#cross-faithfulness tbody td")]
    assert cross == [A, B, "logit_diff", "2.500", "-0.300", "0.900", "0.429", "25.0%"]

    # Dose-response: one block per scaled task, the win-rate curve's points are the stored ones.
    doses = section.find_elements("css selector", ".dose")
    assert [d.get_attribute("data-scaled") for d in doses] == [A, B]
    for block, dose in zip(doses, experiment.dose, strict=True):
        dots = block.find_elements("css selector", "g.series[data-series=win_rate] circle")
        assert [(float(d.get_attribute("data-x")), float(d.get_attribute("data-y"))) for d in dots] == \
            [(p.alpha, p.win_rate) for p in dose.points]
        line = block.find_element("css selector", "g.series[data-series=win_rate] polyline")
        assert len(line.get_attribute("points").split()) == len(ALPHAS)
        for task in (A, B):
            ys = [float(d.get_attribute("data-y")) for d in
                  block.find_elements("css selector", f"g.series[data-series='{task}'] circle")]
            assert ys == [p.metrics[task] for p in dose.points]
        assert block.find_element("css selector", ".verdict").text == (
            f"{dose.verdict.claim}: supported (Spearman rho (alpha, win rate) = 1.000, p = 0.008; against alpha = 1).")

    # Components: roles in the table and as the fills of the shared components in the drawing.
    for name, (role, favours) in ROLES.items():
        row = section.find_element("css selector", f"table.components tr[data-name='{name}']")
        cells = [c.text for c in row.find_elements("css selector", "td")]
        assert cells[3] == role and cells[4] == (favours or "neither")
        assert cells[5] == "0.400 (p 0.048)" and cells[6] == "0.300"
    union = section.find_element("css selector", "svg.union")
    for name in ("a0.h0", "a1.h2"):  # shared: filled by role
        node = union.find_element("css selector", f"g.node[data-name='{name}']")
        assert node.get_attribute("data-membership") == "shared"
        assert node.get_attribute("data-role") == ROLES[name][0]
        assert node.find_element("css selector", "rect").get_attribute("fill") == ROLE_FILL[ROLES[name][0]]
    for name, side in (("a0.h1", "a"), ("m1", "a"), ("a0.h3", "b")):  # unique: by circuit, not role
        node = union.find_element("css selector", f"g.node[data-name='{name}']")
        assert node.get_attribute("data-membership") == side and node.get_attribute("data-role") == ""
    drawn = {n.get_attribute("data-name") for n in union.find_elements("css selector", "g.node")}
    assert drawn == {"embed", "logits", *SETS[A][0], *SETS[B][0]}
    assert union.size["height"] > 100

    # The pair's verdicts in words.
    competes = section.find_element("css selector", ".pair-summary p[data-claim=competes]").text
    assert competes == (f"Do {A} and {B} compete? ablating one task's unique components moves conflict prompts "
                        "towards the other: supported (empirical p vs 20 random sets = 0.217, p = 0.048; "
                        "against 20 random sets of the same size).")
    cooperates = section.find_element("css selector", ".pair-summary p[data-claim=cooperates]")
    assert cooperates.get_attribute("data-state") == "not supported"
    assert "not supported" in cooperates.text and "p = 0.310" in cooperates.text
    assert "competition 0.217" in section.find_element("css selector", ".pair-summary .scores").text


def test_experiment_scripts_are_served(anonymous):
    for name in ("experiments.js", "charts.js"):
        script = anonymous.get(f"/web/{name}")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert f'<script src="/web/{name}"' in anonymous.get("/").text
    assert "/v1/experiments" in anonymous.get("/web/experiments.js").text
