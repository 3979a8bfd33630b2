"""The summary of a study (issue 15): methods compared on tasks at one chosen point each. Torch-free:
the workers build it from the pieces' circuits, the graph store keeps it as JSON, the API serves it
and the CLI prints it with :func:`render_summary`.

Per (task, method) a row: the circuit at the chosen threshold (its id and edges), its faithfulness
under the task's metric and under the search metric on the search's prompts, and MIB's CPR (area
under the faithfulness curve, higher is better) and CMD (area under |1 - f|, lower is better) of
the method's edge ranking on held-out prompts (:mod:`discovery.curves`). Per method the mean CPR
and CMD over the tasks where they are defined."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from discovery.circuit import Circuit

ROW_FIELDS = ("task", "method", "circuit_id", "threshold", "cpr", "cmd", "n_edges", "faithfulness",
              "faithfulness_search", "stability_orders", "stability_prompts")


@dataclass(frozen=True)
class Piece:
    """One piece's result: ``method`` on ``task``, its circuit at the chosen point (with its
    ``curve`` attached, :meth:`discovery.curves.Curve.to_dict`) and its grid circuits' ids."""

    task: str
    method: str
    circuit: Circuit
    grid_ids: tuple[str, ...] = ()


def summary_row(piece: Piece) -> dict[str, Any]:
    """``{task, method, circuit_id, threshold, cpr, cmd, n_edges, faithfulness, faithfulness_search}``
    and the mean Jaccards of its stability score (cpr/cmd None without a curve or where faithfulness
    is undefined; stability None unless the study asked for it)."""
    circuit, curve, stable = piece.circuit, piece.circuit.curve or {}, piece.circuit.stability or {}
    return {"task": piece.task, "method": piece.method, "circuit_id": circuit.id,
            "threshold": circuit.provenance.threshold, "cpr": curve.get("cpr"), "cmd": curve.get("cmd"),
            "n_edges": len(circuit.edges), "faithfulness": circuit.metrics.faithfulness_task,
            "faithfulness_search": circuit.metrics.faithfulness_search,
            "stability_orders": (stable.get("orders") or {}).get("jaccard_mean"),
            "stability_prompts": (stable.get("prompts") or {}).get("jaccard_mean")}


def _mean(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return fmean(defined) if defined else None


def method_means(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Per method ``{method, mean_cpr, mean_cmd, mean_edges, n_tasks}`` over its rows (means skip
    undefined values; None when none is defined)."""
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        out.append({"method": method, "mean_cpr": _mean(r["cpr"] for r in mine),
                    "mean_cmd": _mean(r["cmd"] for r in mine),
                    "mean_edges": _mean(r["n_edges"] for r in mine), "n_tasks": len(mine)})
    return out


def summarize(model: str, tasks: Sequence[str], methods: Sequence[str],
              pieces: Iterable[Piece]) -> dict[str, Any]:
    """The study's summary (JSON-ready): ``{model, tasks, methods, rows, means, circuits}``; rows in
    task-then-method order of ``tasks`` and ``methods``, ``circuits`` every circuit id (grid
    points too). ValueError naming the (task, method) when a piece is missing or repeated."""
    by_key: dict[tuple[str, str], Piece] = {}
    for piece in pieces:
        key = (piece.task, piece.method)
        if key in by_key:
            raise ValueError(f"pieces: ({piece.task}, {piece.method}) given twice; one piece per pair")
        by_key[key] = piece
    wanted = [(t, m) for t in tasks for m in methods]
    missing = [k for k in wanted if k not in by_key]
    if missing:
        raise ValueError(f"pieces: no result for {missing}; every (task, method) needs its piece")
    extra = sorted(set(by_key) - set(wanted))
    if extra:
        raise ValueError(f"pieces: {extra} are not among tasks x methods")
    rows = [summary_row(by_key[k]) for k in wanted]
    circuits = [cid for k in wanted for cid in (by_key[k].circuit.id, *by_key[k].grid_ids)]
    return {"model": model, "tasks": list(tasks), "methods": list(methods), "rows": rows,
            "means": method_means(rows, methods), "circuits": circuits}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _grid(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Aligned lines: first column left, the others right."""
    texts = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in texts]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True))).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in texts)]


def render_summary(summary: dict[str, Any]) -> str:
    """The summary as plain text: a method x task table of CPR / CMD, one of edges and
    faithfulness at the chosen point, and the per-method means."""
    tasks, methods = summary["tasks"], summary["methods"]
    cells = {(r["task"], r["method"]): r for r in summary["rows"]}
    out = [f"study of {summary['model']}: {len(methods)} methods x {len(tasks)} tasks",
           "", "CPR / CMD (held-out prompts; CPR higher is better, CMD lower is better)"]
    out += _grid(["method", *tasks], [[m, *(f"{_cell(cells[t, m]['cpr'])} / {_cell(cells[t, m]['cmd'])}"
                                           for t in tasks)] for m in methods])
    out += ["", "edges, faithfulness (task metric) at the chosen point"]
    out += _grid(["method", *tasks], [[m, *(f"{cells[t, m]['n_edges']}, {_cell(cells[t, m]['faithfulness'])}"
                                           for t in tasks)] for m in methods])
    if any(r.get("stability_orders") is not None or r.get("stability_prompts") is not None
           for r in summary["rows"]):
        out += ["", "stability: mean Jaccard with re-runs under other edge orders / other prompts"]
        out += _grid(["method", *tasks], [[m, *(f"{_cell(cells[t, m].get('stability_orders'))} / "
                                                f"{_cell(cells[t, m].get('stability_prompts'))}" for t in tasks)]
                                          for m in methods])
    out += ["", "means over tasks"]
    out += _grid(["method", "CPR", "CMD", "edges", "tasks"],
                 [[r["method"], r["mean_cpr"], r["mean_cmd"], r["mean_edges"], r["n_tasks"]]
                  for r in summary["means"]])
    return "\n".join(out)
