"""The study's summary (discovery.study): one row per (task, method) at the chosen point with CPR,
CMD, size and both faithfulness values; per-method means over defined values; a missing or
repeated piece refused; the plain-text rendering the CLI prints."""

from __future__ import annotations

import json

import pytest

from discovery.circuit import Circuit, Edge, Metrics, Node, Provenance
from discovery.study import Piece, render_summary, summarize

TASKS, METHODS = ["ioi", "induction"], ["acdc", "eap"]


def _circuit(cid: str, n_edges: int, cpr: float | None, cmd: float | None, circuit: float = 1.5) -> Circuit:
    edges = (Edge.parse("embed->a0.h1<q>", 0.2), Edge.parse("a0.h1->logits", 0.3), Edge.parse("embed->logits", 0.1))
    return Circuit(id=cid, nodes=tuple(Node.parse(n) for n in ("embed", "a0.h1", "logits")), edges=edges[:n_edges],
                   metrics=Metrics(full=2.0, empty=0.0, circuit=circuit, name="logit_diff", search_metric="kl",
                                   search_full=0.0, search_empty=4.0, search_circuit=1.0),
                   provenance=Provenance(model="multitask", task="ioi", method="acdc", threshold=0.01),
                   curve=None if cpr is None and cmd is None else {"cpr": cpr, "cmd": cmd, "points": []})


def _pieces() -> list[Piece]:
    values = {("ioi", "acdc"): (1, 0.8, 0.3), ("ioi", "eap"): (2, 0.9, 0.1),
              ("induction", "acdc"): (3, 0.6, 0.5), ("induction", "eap"): (0, None, None)}
    return [Piece(t, m, _circuit(f"S.{t}.{m}", *values[t, m]), grid_ids=(f"S.{t}.{m}.t0.1",) if m == "eap" else ())
            for t in TASKS for m in METHODS]


def test_rows_in_task_then_method_order_with_every_field():
    summary = summarize("multitask", TASKS, METHODS, reversed(_pieces()))
    rows = summary["rows"]
    assert [(r["task"], r["method"]) for r in rows] == [(t, m) for t in TASKS for m in METHODS]
    first = rows[0]
    assert first == {"task": "ioi", "method": "acdc", "circuit_id": "S.ioi.acdc", "threshold": 0.01,
                     "cpr": 0.8, "cmd": 0.3, "n_edges": 1, "faithfulness": pytest.approx(0.75),
                     "faithfulness_search": pytest.approx(0.75), "stability_orders": None,
                     "stability_prompts": None}
    assert summary["circuits"] == ["S.ioi.acdc", "S.ioi.eap", "S.ioi.eap.t0.1", "S.induction.acdc",
                                   "S.induction.eap", "S.induction.eap.t0.1"]
    json.dumps(summary)  # JSON-ready: the graph store keeps it as text


def test_means_skip_undefined_values():
    means = {m["method"]: m for m in summarize("multitask", TASKS, METHODS, _pieces())["means"]}
    assert means["acdc"]["mean_cpr"] == pytest.approx(0.7) and means["acdc"]["mean_cmd"] == pytest.approx(0.4)
    assert means["eap"]["mean_cpr"] == pytest.approx(0.9) and means["eap"]["n_tasks"] == 2  # induction's undefined
    assert means["eap"]["mean_edges"] == pytest.approx(1.0)


def test_a_missing_or_repeated_piece_is_refused():
    pieces = _pieces()
    with pytest.raises(ValueError, match=r"no result for \[\('induction', 'eap'\)\]"):
        summarize("multitask", TASKS, METHODS, pieces[:-1])
    with pytest.raises(ValueError, match="given twice"):
        summarize("multitask", TASKS, METHODS, pieces + pieces[:1])
    with pytest.raises(ValueError, match="not among tasks x methods"):
        summarize("multitask", TASKS, ["acdc"], pieces)


def test_render_shows_the_method_by_task_table_and_the_means():
    text = render_summary(summarize("multitask", TASKS, METHODS, _pieces()))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("method") and "ioi" in line)
    assert header.split() == ["method", "ioi", "induction"]
    assert any(line.split()[:4] == ["acdc", "0.800", "/", "0.300"] for line in lines), text
    assert any(line.split()[:4] == ["eap", "0.900", "/", "0.100"] and line.split()[-3:] == ["-", "/", "-"]
               for line in lines), text
    assert any(line.split()[:3] == ["acdc", "0.700", "0.400"] for line in lines), text  # the mean row


def test_stability_is_summarised_when_the_study_scored_it():
    import dataclasses

    pieces = _pieces()
    assert "stability" not in render_summary(summarize("multitask", TASKS, METHODS, pieces))
    score = {"orders": {"jaccard_mean": 0.625}, "prompts": {"jaccard_mean": 0.5}}
    pieces[0] = dataclasses.replace(pieces[0], circuit=dataclasses.replace(pieces[0].circuit, stability=score))
    summary = summarize("multitask", TASKS, METHODS, pieces)
    assert (summary["rows"][0]["stability_orders"], summary["rows"][0]["stability_prompts"]) == (0.625, 0.5)
    text = render_summary(summary)
    assert "stability: mean Jaccard" in text
    assert any(line.split()[:4] == ["acdc", "0.625", "/", "0.500"] for line in text.splitlines()), text
