"""The timeline view of the web page in headless chromium against the real API and Neo4j: a
hand-built formation timeline (two tasks, four checkpoints, induction diagnostics, one pair; over
hand-built circuits) is stored through the graph store, listed, opened, and its drawn SVG checked
against the stored numbers: the circuit-size heatmap, the membership band of the selected task
(and of the other after switching), the curve points, the pair's overlap points and the
stabilisation table. Everything stored is deleted afterwards. Skipped where chromium cannot run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance
from discovery.timeline import Row, Timeline, pair_analysis
from graphstore.store import ensure_schema
from graphstore.timelines import delete_timeline, read_timeline, write_timeline
from tests.integration.api.conftest import READ_KEY
from tests.integration.api.test_web import _css, _use_key, _wait, browser  # noqa: F401 (fixture)

STEPS = (0, 10, 100, 1000)
TASKS = ("induction", "ioi")
SHAPE = GraphShape(n_layers=2, n_heads=4, mlp=True)
#: (task, step) -> components besides embed and logits; the two tasks differ at every step so a
#: band drawn for the wrong task fails.
MEMBERS = {("induction", 0): ("a0.h1",), ("induction", 10): ("a0.h1", "a1.h0"),
           ("induction", 100): ("a0.h0", "a1.h0"), ("induction", 1000): ("a0.h0", "a1.h0", "a1.h3"),
           ("ioi", 0): ("a0.h2", "m1"), ("ioi", 10): ("a0.h2",), ("ioi", 100): ("a0.h1", "a0.h2"),
           ("ioi", 1000): ("a0.h1", "a0.h2", "a1.h0", "m0")}
#: per step: (train loss, in-context loss, best previous-token score, best induction score)
CURVES = {0: (5.5, -0.01, 0.21, 0.08), 10: (3.25, -0.12, 0.47, 0.19), 100: (2.125, -0.9, 0.83, 0.64),
          1000: (1.75, -1.05, 0.91, 0.87)}


def _circuit(cid: str, model: str, task: str, members: tuple[str, ...]) -> Circuit:
    edges = [Edge("embed", c, "q" if c.startswith("a") else "mlp", 0.5) for c in members]
    edges += [Edge(c, "logits", "logits", 0.25) for c in members]
    edges += [Edge(a, b, "v", 0.1) for a in members for b in members
              if a.startswith("a0") and b.startswith("a1")]  # layer-0 heads feed layer-1 heads
    names = ("embed", *members, "logits")
    return Circuit(id=cid, nodes=tuple(Node.parse(n, score=0.1) for n in names), edges=tuple(edges),
                   metrics=Metrics(full=2.0, empty=0.1, circuit=1.5, name="logit_diff"),
                   provenance=Provenance(model=model, task=task, method="acdc", threshold=0.01),
                   graph=SHAPE)


def build(run: str) -> Timeline:
    circuits = {(s, t): _circuit(f"{run}-{t}-{s}", f"{run}@{s}", t, MEMBERS[t, s]) for t in TASKS for s in STEPS}
    rows = [Row(step=s, task=t, train_loss=CURVES[s][0], accuracy=None, metric=None, metric_mean=None,
                n_edges=len(c.edges), n_nodes=len(c.nodes), faithfulness_task=None, faithfulness_search=None,
                jaccard_edges=0.0, jaccard_nodes=0.0, nodes=tuple(sorted(n.name for n in c.nodes)),
                circuit_id=c.id)
            for (s, t), c in sorted(circuits.items())]
    # the best score is held by a different head for the two scores; a second head scores less
    induction = {s: {"heads": {"a0.h1": {"previous_token": prev, "induction": ind / 2},
                               "a1.h0": {"previous_token": prev / 3, "induction": ind}},
                     "in_context_loss": icl, "early_loss": 3.0, "late_loss": 3.0 + icl}
                 for s, (_, icl, prev, ind) in CURVES.items()}
    result = Timeline(run_dir=f"/runs/{run}", tasks=TASKS, method="acdc", threshold=0.01, top_n=None,
                      n_prompts=20, seed=0, level=0.8, rows=rows, circuits=circuits,
                      stabilisation={"induction": 100, "ioi": None}, induction=induction,
                      in_context_change_point=10)
    result.pairs = [pair_analysis(result, "induction", "ioi")]
    return result


@pytest.fixture
def timeline(neo4j_driver, settings) -> Iterator[Timeline]:
    db = settings.neo4j_database
    ensure_schema(neo4j_driver, database=db)
    run = f"webtl-{uuid.uuid4().hex[:10]}"
    built = build(run)
    write_timeline(neo4j_driver, built, run_id=run, database=db)
    try:
        yield built
    finally:
        delete_timeline(neo4j_driver, run, database=db, circuits=True)
        assert read_timeline(neo4j_driver, run, database=db) is None


def _floats(elements, *names: str) -> list[tuple]:
    return [tuple(float(e.get_attribute(f"data-{n}")) for n in names) for e in elements]


def _band(driver, task: str) -> dict[tuple[int, str], int]:
    cells = _css(driver, f"#timeline-curves svg.timeline-band[data-task='{task}'] rect.member-cell")
    return {(int(c.get_attribute("data-step")), c.get_attribute("data-component")): int(c.get_attribute("data-value"))
            for c in cells if c.get_attribute("data-task") == task}


def _expected_band(timeline: Timeline, task: str) -> dict[tuple[int, str], int]:
    members = timeline.membership(task)
    components = {c for nodes in members.values() for c in nodes} - {"embed", "logits"}
    return {(s, c): int(c in members[s]) for s in STEPS for c in components}


def test_timeline_view_shows_the_stored_numbers(browser, server, reader, timeline):  # noqa: F811
    driver = browser
    run = timeline.run_dir.rsplit("/", 1)[1]
    stored = reader.get(f"/v1/timelines/{run}").json()
    assert stored["rows"] and Timeline.from_dict({**stored, "circuits": []}).rows == timeline.rows

    driver.get(server.url + "/")
    _use_key(driver, READ_KEY)
    _css(driver, "#timeline-filters input[name=run]")[0].send_keys(run)
    _css(driver, "#timeline-filters button")[0].click()
    _wait(driver, lambda d: "run=" in (_css(d, "#timelines tbody")[0].get_attribute("data-query") or ""))
    rows = _css(driver, "#timelines tbody tr")
    assert [r.get_attribute("data-id") for r in rows] == [run]
    assert [c.text for c in rows[0].find_elements("css selector", "td")] == [
        run, "induction, ioi", "4 (0 … 1000)", "acdc", run]
    rows[0].click()
    _wait(driver, lambda d: _css(d, f"#timeline-view[data-id='{run}'] svg.timeline-band"))
    assert _css(driver, "#timeline-title")[0].text == f"{run} / acdc / induction, ioi"
    assert not _css(driver, "#experiment-view")[0].is_displayed()

    # Heatmap: one cell per (task, step) whose number is the stored n_edges.
    cells = _css(driver, "#timeline-sizes g.size-cell")
    shown = {(c.get_attribute("data-task"), int(c.get_attribute("data-step"))): (int(c.get_attribute("data-value")), c.text)
             for c in cells}
    assert shown == {(r["task"], r["step"]): (r["n_edges"], str(r["n_edges"])) for r in stored["rows"]}
    assert len(cells) == len(TASKS) * len(STEPS)
    assert len({v for v, _ in shown.values()}) > 4  # sizes that differ: a swapped cell would show

    # Membership band: induction selected by default, then switched to ioi.
    assert _css(driver, "#timeline-task")[0].get_attribute("value") == "induction"
    induction_band = _band(driver, "induction")
    assert induction_band == _expected_band(timeline, "induction")
    assert sum(induction_band.values()) == sum(len(MEMBERS["induction", s]) for s in STEPS)
    _css(driver, "#timeline-task option[value=ioi]")[0].click()
    _wait(driver, lambda d: _css(d, "#timeline-curves svg.timeline-band[data-task='ioi']"))
    ioi_band = _band(driver, "ioi")
    assert ioi_band == _expected_band(timeline, "ioi") and ioi_band != induction_band
    assert ("m1" in {c for _, c in ioi_band}) and ("m1" not in {c for _, c in induction_band})
    assert not _css(driver, "#timeline-curves g.marker[data-kind=stabilisation]")  # ioi never stabilised

    # Curves: the stored train loss, in-context loss and best scores (max over heads) per step.
    for index, series in enumerate(("train_loss", "in_context_loss", "previous_token", "induction")):
        dots = _css(driver, f"#timeline-curves svg.timeline-curves g.series[data-series={series}] circle")
        assert _floats(dots, "step", "value") == [(s, CURVES[s][index]) for s in STEPS], series
    change = _css(driver, "#timeline-curves g.marker[data-kind=change-point]")[0]
    assert change.get_attribute("data-step") == "10"

    # Pair overlap: the stored node Jaccard per step.
    [pair] = stored["pairs"]
    dots = _css(driver, "#timeline-pairs svg.timeline-overlap[data-pair='induction|ioi'] circle")
    assert _floats(dots, "step", "value") == [(s, j) for s, j in pair["overlap"]]
    assert len({j for _, j in pair["overlap"]}) > 1  # not a flat line: a wrong series would show

    # Stabilisation table and change-point.
    table = {r.get_attribute("data-task"): [c.text for c in r.find_elements("css selector", "td")]
             for r in _css(driver, "#timeline-stabilisation tbody tr")}
    assert table == {"induction": ["induction", "100"], "ioi": ["ioi", "never"]}
    assert _css(driver, "#timeline-change-point")[0].text == "10"
    _css(driver, "#timeline-task option[value=induction]")[0].click()
    _wait(driver, lambda d: _css(d, "#timeline-curves g.marker[data-kind=stabilisation][data-task=induction]"))
    marker = _css(driver, "#timeline-curves g.marker[data-kind=stabilisation]")[0]
    assert marker.get_attribute("data-step") == "100"
    title = _css(driver, "#timeline-curves svg.timeline-curves g.series[data-series=train_loss] circle title")[0]
    assert title.get_attribute("textContent") == "train loss at step 0: 5.500"


def test_timeline_script_is_served(anonymous):
    script = anonymous.get("/web/timelines.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert '<script src="/web/timelines.js"' in anonymous.get("/").text
    assert "/v1/timelines" in script.text
