"""A formation timeline as one PNG (issue 14): ``render_timeline(data, path)`` draws the dict of
``GET /v1/timelines/{id}`` (``discovery.timeline.Timeline.to_dict()`` without ``circuits``).

Panels, top to bottom: (a) train loss, in-context loss and the best head scores per step, with
the in-context change-point and the focus task's stabilisation step; (b) the focus task's
membership band (one row per component ever in its circuit); (c) node overlap over time per task
pair (only when there are pairs); then circuit size per task and step, a heatmap with one column
per checkpoint ((d), or (c) without pairs). Panels (a), (b) and the overlap share one x axis: the training step on a log scale, drawn at ``step + 1`` so that step 0 fits.

Only ``matplotlib.figure.Figure`` is used (the Agg canvas, no pyplot), so rendering leaves no
global state behind and works without a display."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

ENDS = frozenset({"embed", "logits"})  # in every circuit: not worth a band row
X_LABEL = "training step (log scale, drawn at step + 1)"
COLOURS = {"train": "#1f77b4", "icl": "#d62728", "prev": "#2ca02c", "ind": "#9467bd",
           "change": "#555555", "stable": "#ff7f0e", "member": "#3b6ea5"}
PAIR_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
_HEAD = re.compile(r"^a(\d+)\.(h|kv)(\d+)$")
_MLP = re.compile(r"^m(\d+)$")


def render_timeline(data: dict, path: Path, *, task: str | None = None) -> Path:
    """Write the timeline ``data`` as a PNG at ``path`` (parents created); ``task`` is the focus
    task of the band and the stabilisation line (default "induction" when it is among the tasks,
    else the first task). Returns ``path``. ValueError when ``data`` has no rows or ``task`` is
    not one of its tasks."""
    rows = data.get("rows") or []
    if not rows:
        raise ValueError("timeline has no rows: nothing to draw (was any checkpoint discovered?)")
    tasks = list(data.get("tasks") or dict.fromkeys(r["task"] for r in rows))
    focus = task if task is not None else ("induction" if "induction" in tasks else tasks[0])
    if focus not in tasks:
        raise ValueError(f"task {focus!r} is not in this timeline; its tasks are {', '.join(tasks)}")
    steps = sorted({int(r["step"]) for r in rows})
    pairs = data.get("pairs") or []
    members = membership(rows, focus)
    components = sorted({c for nodes in members.values() for c in nodes}, key=component_order)

    band_h = max(0.9, 0.2 * len(components))
    # (a), (b) and (d) share the log step axis, so they stand together; (c) has a column per step
    heights = [3.2, band_h] + ([2.0] if pairs else []) + [0.45 * len(tasks) + 0.6]
    total = sum(heights) + 0.6 * len(heights)
    fig = Figure(figsize=(13, total), dpi=100)
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights, hspace=0.5, left=0.1, right=0.72,
                            top=1 - 0.75 / total, bottom=1.0 / total)
    curves = fig.add_subplot(grid[0])
    band = fig.add_subplot(grid[1], sharex=curves)
    _curves(curves, data, steps, focus)
    _band(band, steps, components, members, focus)
    if pairs:
        overlap = fig.add_subplot(grid[2], sharex=curves)
        _overlap(overlap, pairs)
        _step_axis(overlap, steps)
        band.tick_params(labelbottom=False)  # shared x: the labels go under the lowest panel only
    else:
        _step_axis(band, steps)
    _sizes(fig.add_subplot(grid[-1]), rows, tasks, steps, letter="d" if pairs else "c")
    run = Path(str(data.get("run_dir") or "?")).name or str(data.get("run_dir"))
    fig.suptitle(f"{run} · {data.get('method', '?')} · focus task {focus}", fontsize=13, fontweight="bold")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def membership(rows: list[dict], task: str) -> dict[int, set[str]]:
    """``{step: components of task's circuit}``, embed and logits left out."""
    return {int(r["step"]): set(r.get("nodes") or ()) - ENDS for r in rows if r["task"] == task}


def component_order(name: str) -> tuple[float, int, int, str]:
    """Sort key: by layer, heads (and kv groups) before the MLP, then head index; others last."""
    if m := _HEAD.match(name):
        return (int(m[1]), 0 if m[2] == "h" else 1, int(m[3]), name)
    if m := _MLP.match(name):
        return (int(m[1]), 2, 0, name)
    return (math.inf, 0, 0, name)


def best_heads(induction: list[dict], score: str) -> tuple[list[float], list[str]]:
    """Per induction entry the maximum ``score`` over heads, and the heads best at the last one."""
    best = [max((h.get(score, math.nan) for h in d.get("heads", {}).values()), default=math.nan)
            for d in induction]
    last = induction[-1].get("heads", {}) if induction else {}
    top = best[-1] if best else math.nan
    return best, sorted(h for h, s in last.items() if s.get(score) == top)


def _x(steps: list[int] | np.ndarray) -> np.ndarray:
    return np.asarray(steps, dtype=float) + 1.0


def _curves(ax: Axes, data: dict, steps: list[int], focus: str) -> None:
    ax.set_xscale("log")
    loss = {}
    for r in data["rows"]:  # the run's train loss is the same in every task's row of a step
        if r.get("train_loss") is not None:
            loss.setdefault(int(r["step"]), r["train_loss"])
    handles = []
    if loss:
        xs = sorted(loss)
        handles += ax.plot(_x(xs), [loss[s] for s in xs], "o-", color=COLOURS["train"], label="train loss")
    induction = sorted(data.get("induction") or [], key=lambda d: d["step"])
    if induction:
        istep = [d["step"] for d in induction]
        handles += ax.plot(_x(istep), [d.get("in_context_loss", math.nan) for d in induction], "s-",
                           color=COLOURS["icl"], label="in-context loss (late − early tokens)")
        right = ax.twinx()
        right.set_ylim(0, 1)
        right.set_ylabel("best head score")
        for key, score, name in (("prev", "previous_token", "previous-token"), ("ind", "induction", "induction")):
            best, heads = best_heads(induction, score)
            handles += right.plot(_x(istep), best, "^--", color=COLOURS[key], alpha=0.85,
                                  label=f"best {name} score\n(best at the last step: {', '.join(heads) or '–'})")
    change = data.get("in_context_change_point")
    if change is not None:
        handles.append(ax.axvline(change + 1, color=COLOURS["change"], ls="--", lw=1.3,
                                  label=f"in-context change point: step {change}"))
    stable = (data.get("stabilisation") or {}).get(focus)
    handles.append(ax.axvline(stable + 1, color=COLOURS["stable"], ls="--", lw=1.3,
                              label=f"{focus} circuit stable: step {stable}") if stable is not None
                   else ax.plot([], [], " ", label=f"{focus} circuit: never stable")[0])
    ax.set_ylabel("loss (nats)")
    ax.set_title("(a) losses and head scores", loc="left", fontsize=10)
    ax.grid(alpha=0.3)
    ax.tick_params(labelbottom=False)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize=8, frameon=False)


def _edges(steps: list[int]) -> np.ndarray:
    """Cell boundaries in x (= step + 1) for the band: midway between steps in log space."""
    logs = np.log10(_x(steps))
    if len(logs) == 1:
        return 10 ** np.array([logs[0] - 0.15, logs[0] + 0.15])
    mids = (logs[1:] + logs[:-1]) / 2
    return 10 ** np.concatenate([[logs[0] - (mids[0] - logs[0])], mids, [logs[-1] + (logs[-1] - mids[-1])]])


def _band(ax: Axes, steps: list[int], components: list[str], members: dict[int, set[str]], focus: str) -> None:
    ax.set_title(f"(b) membership of the {focus} circuit (filled: in the circuit at that step)",
                 loc="left", fontsize=10)
    if not components:
        ax.text(0.5, 0.5, f"the {focus} circuit never holds a component besides embed and logits",
                transform=ax.transAxes, ha="center", va="center", fontsize=9)
        ax.set_yticks([])
        return
    filled = np.array([[1.0 if c in members.get(s, ()) else 0.0 for s in steps] for c in components])
    ax.pcolormesh(_edges(steps), np.arange(len(components) + 1), filled, cmap="Blues", vmin=-0.15, vmax=1.0,
                  edgecolors="white", linewidth=0.6)
    ax.set_yticks(np.arange(len(components)) + 0.5, components, fontsize=max(6, min(9, 200 // len(components))))
    ax.set_ylim(len(components), 0)  # first component on top


def _step_axis(ax: Axes, steps: list[int]) -> None:
    """Tick the shared log axis at the steps themselves, thinned so that labels never overlap."""
    xs = _x(steps)
    span = max(np.log10(xs[-1]) - np.log10(xs[0]), 1e-9)
    kept, last = [], -math.inf
    for x in xs[::-1]:  # keep the final step; walk down, dropping labels too close to the last kept
        if last - np.log10(x) >= span / 20 or not kept:
            kept.append(x)
            last = np.log10(x)
    ax.xaxis.set_major_locator(FixedLocator(sorted(kept)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(int(round(x - 1))) for x in sorted(kept)], fontsize=8)
    ax.tick_params(labelbottom=True)
    ax.set_xlabel(X_LABEL)
    edges = _edges(steps)
    ax.set_xlim(edges[0], edges[-1])


def _sizes(ax: Axes, rows: list[dict], tasks: list[str], steps: list[int], letter: str) -> None:
    at = {(r["task"], int(r["step"])): r["n_edges"] for r in rows}
    grid = np.array([[at.get((t, s), np.nan) for s in steps] for t in tasks], dtype=float)
    top = np.nanmax(grid) if np.isfinite(grid).any() else 1.0
    ax.imshow(grid, aspect="auto", cmap="Greens", vmin=0, vmax=max(top, 1.0), interpolation="nearest")
    font = 8 if len(steps) <= 20 else 6
    for i, t in enumerate(tasks):
        for j, s in enumerate(steps):
            value: Any = at.get((t, s))
            dark = value is not None and value > 0.6 * top
            ax.text(j, i, "–" if value is None else str(value), ha="center", va="center", fontsize=font,
                    color="white" if dark else "#222")
    ax.set_yticks(range(len(tasks)), tasks, fontsize=9)
    ax.set_xticks(range(len(steps)), [str(s) for s in steps], fontsize=8,
                  rotation=0 if len(steps) <= 12 else 45)
    ax.set_xlabel("training step (one column per checkpoint)")
    ax.set_title(f"({letter}) circuit size: edges per task and step", loc="left", fontsize=10)


def _overlap(ax: Axes, pairs: list[dict]) -> None:
    for i, p in enumerate(pairs):
        # None: both circuits empty at that step (no overlap to speak of): left out of the line
        points = sorted((int(s), j) for s, j in p.get("overlap") or [] if j is not None)
        if points:
            ax.plot(_x([s for s, _ in points]), [j for _, j in points], "o-",
                    color=PAIR_COLOURS[i % len(PAIR_COLOURS)], label=f"{p['first']} × {p['second']}")
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("node Jaccard")
    ax.set_title("(c) node overlap (Jaccard) of each task pair's circuits", loc="left", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
