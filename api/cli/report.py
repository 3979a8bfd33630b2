"""A competition experiment as people read it: headline text tables, a markdown report and a PNG
(ablation-matrix heatmap per pair, dose-response curves).

Torch-free: it reads :class:`discovery.experiments.result.Experiment` (or its ``to_dict`` JSON, as
the API returns it). Every table is built once as a :class:`Section` and rendered twice, as text
(``api.cli.tables.table``) and as a markdown pipe table, so the terminal and the report never
disagree. matplotlib loads only inside :func:`draw`, through ``Figure`` (Agg, no pyplot state)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.cli.tables import cell, table
from discovery.experiments.result import ControlStats, Experiment, Verdict, set_names

NAMES_SHOWN = 8  # component names listed per set before "+N more"


@dataclass(frozen=True)
class Section:
    """One table: its title, columns, rows and the lines printed under it (verdicts, notes)."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    notes: tuple[str, ...] = field(default=())


def as_experiment(data: Experiment | dict[str, Any] | str) -> Experiment:
    """An Experiment from itself, its ``to_dict`` or its JSON text; a clear ValueError otherwise."""
    if isinstance(data, Experiment):
        return data
    try:
        return Experiment.from_dict(json.loads(data) if isinstance(data, str) else data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an experiment JSON ({type(exc).__name__}: {exc})") from None


def verdict_text(v: Verdict) -> str:
    """``state (statistic = value, p = p)``: the state never travels without its statistic."""
    stat = f"{v.statistic} = {cell(v.value)}" if v.value is not None else v.statistic
    p = "" if v.p_value is None else f", p = {v.p_value:.3g}"
    return f"{v.state} ({stat}{p})"


def _mean_std(c: ControlStats | None) -> str | None:
    return None if c is None else f"{c.mean:.3f} ± {c.std:.3f}"


def _pairs(exp: Experiment) -> list[tuple[str, str, str]]:
    """(key, a, b) for every pair of the experiment's tasks."""
    return [(k, k.split("|", 1)[0], k.split("|", 1)[1]) for k in exp.pair_keys]


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return (shown + (f" +{len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")) or "none"


def sets_section(exp: Experiment, pair: str) -> Section | None:
    found = [s for s in exp.sets if s.pair == pair]
    if not found:
        return None
    s = found[0]
    rows = tuple((name, len(s.nodes.get(name, ())), len(s.edges.get(name, ())),
                  _names(s.nodes.get(name, ()))) for name in set_names(*pair.split("|", 1)))
    notes = (f"node Jaccard {cell(s.node_jaccard)}, edge Jaccard {cell(s.edge_jaccard)}",)
    return Section(f"{pair}: component sets", ("set", "nodes", "edges", "components"), rows, notes)


def ablation_section(exp: Experiment, pair: str, kind: str = "nodes") -> Section | None:
    """Sets x tasks: what ablating each set does to each task, beside its random-set control."""
    order = {name: i for i, name in enumerate(set_names(*pair.split("|", 1)))}
    cells = sorted((c for c in exp.ablations if c.pair == pair and c.kind == kind),
                   key=lambda c: (order.get(c.set_name, 99), exp.tasks.index(c.task)
                                  if c.task in exp.tasks else 99))
    if not cells:
        return None
    rows = tuple((c.set_name, c.size, c.task, c.metric, c.faithfulness, c.top1, c.effect,
                  _mean_std(c.control), None if c.control is None else c.control.n,
                  None if c.control is None else c.control.pool, None if c.control is None else c.control.z,
                  c.control.p_value if c.control else c.verdict.p_value, c.verdict.state) for c in cells)
    notes = tuple(f"{c.set_name} on {c.task}: {c.verdict.state}: {c.verdict.detail}"
                  for c in cells if c.verdict.detail)
    return Section(f"{pair}: ablation matrix ({'node' if kind == 'nodes' else 'edge'} level, "
                   f"{exp.ablation} ablation)",
                   ("set", "size", "task", "metric", "faithfulness", "top-1", "effect",
                    "control mean ± std", "controls", "pool", "z", "p", "verdict"), rows, notes)


def cross_section(exp: Experiment) -> Section | None:
    if not exp.cross:
        return None
    rows = tuple((c.circuit_task, c.eval_task, c.metric, c.value, c.full, c.empty, c.faithfulness,
                  c.top1) for c in exp.cross)
    return Section("cross-task faithfulness (circuit alone, run on a task's prompts)",
                   ("circuit", "on task", "metric", "value", "full", "empty", "faithfulness", "top-1"),
                   rows)


def conflict_section(exp: Experiment) -> Section | None:
    if not exp.conflicts:
        return None
    rows = []
    for c in exp.conflicts:
        a, b = c.pair.split("|", 1)
        rows.append((c.pair, c.source, c.n_prompts, c.win_rate.get(a), c.win_rate.get(b),
                     c.top1_rate.get(a), c.top1_rate.get(b), c.top1_rate.get("other"),
                     c.logit_diff_mean, c.logit_diff_std, c.ablation))
    return Section("conflict prompts (a and b as in the pair a|b)",
                   ("pair", "source", "prompts", "win a", "win b", "top-1 a", "top-1 b", "top-1 neither",
                    "logit diff a-b", "std", "ablation"), tuple(rows),
                   ("win: share of prompts where that task's answer has the higher logit of the two",))


def component_section(exp: Experiment, pair: str) -> Section | None:
    roles = [r for r in exp.components if r.pair == pair]
    if not roles:
        return None
    a, b = pair.split("|", 1)

    def p(r: Any, t: str) -> float | None:
        c = r.effect_controls.get(t)
        return None if c is None else c.p_value

    rows = tuple((r.name, r.kind, r.membership, r.role, r.favours, r.effects.get(a), p(r, a),
                  r.effects.get(b), p(r, b), r.dla_mean, r.dla_t, r.dla_p, r.conflict_shift,
                  None if r.conflict_control is None else r.conflict_control.p_value, r.verdict.state)
                 for r in roles)
    return Section(f"{pair}: components and their roles",
                   ("component", "kind", "set", "role", "favours", f"effect {a}", "p", f"effect {b}",
                    "p", "DLA mean", "DLA t", "DLA p", "conflict shift", "p", "verdict"), rows,
                   ("DLA: direct contribution to logit(a) - logit(b) on the conflict prompts",))


def dose_sections(exp: Experiment, pair: str) -> list[Section]:
    out = []
    for d in (d for d in exp.dose if d.pair == pair):
        tasks = list(pair.split("|", 1))
        rows = tuple((pt.alpha, *(pt.metrics.get(t) for t in tasks), pt.win_rate, pt.logit_diff)
                     for pt in d.points)
        notes = (f"scaled: {_names(d.components)} ({len(d.components)} unique to {d.scaled_task})",
                 f"verdict: {d.verdict.claim}: {verdict_text(d.verdict)}"
                 + (f"; {d.verdict.detail}" if d.verdict.detail else ""))
        out.append(Section(f"{pair}: dose-response, scaling {d.scaled_task}'s unique components",
                           ("alpha", *(f"{t} metric" for t in tasks), f"{d.scaled_task} win rate",
                            "logit diff a-b"), rows, notes))
    return out


def pair_section(exp: Experiment) -> Section | None:
    if not exp.pairs:
        return None
    rows = tuple((p.pair, " / ".join(c[:8] for c in p.circuits), p.competition, p.competes.state,
                  p.competes.p_value, p.cooperation, p.cooperates.state, p.cooperates.p_value)
                 for p in exp.pairs)
    notes = tuple(f"{p.pair} {name}: {v.claim}: {verdict_text(v)}" for p in exp.pairs
                  for name, v in (("competes", p.competes), ("cooperates", p.cooperates)))
    return Section("pair summary", ("pair", "circuits", "competition", "competes", "p", "cooperation",
                                    "cooperates", "p"), rows, notes)


def sections(exp: Experiment) -> list[Section]:
    """Every table of the experiment, in reading order; sections without data are left out."""
    out: list[Section | None] = [pair_section(exp)]
    for pair, _, _ in _pairs(exp):
        out += [sets_section(exp, pair), ablation_section(exp, pair, "nodes"),
                ablation_section(exp, pair, "edges"), component_section(exp, pair),
                *dose_sections(exp, pair)]
    out += [cross_section(exp), conflict_section(exp)]
    return [s for s in out if s is not None]


def _inputs(exp: Experiment) -> list[tuple[str, Any]]:
    return [("model", exp.model), ("tasks", ", ".join(exp.tasks)),
            ("circuits", ", ".join(f"{t}={c}" for t, c in exp.circuits.items())),
            ("ablation", exp.ablation), ("seed", exp.seed), ("random control sets", exp.n_controls),
            ("prompts per task", exp.n_prompts), ("alphas", ", ".join(f"{a:g}" for a in exp.alphas)),
            ("significance level", exp.alpha_level)]


def headline(exp: Experiment) -> str:
    """The text the CLI prints: inputs, then every table with its notes."""
    parts = [f"experiment {exp.id}: " + "; ".join(f"{k} {cell(v)}" for k, v in _inputs(exp)[:5])]
    for s in sections(exp):
        parts.append(f"\n{s.title}\n" + table(s.headers, s.rows) + "".join(f"\n  {n}" for n in s.notes))
    return "\n".join(parts)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def esc(v: Any) -> str:
        return cell(v).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(esc(v) for v in r) + " |" for r in rows])


def findings(exp: Experiment) -> tuple[list[str], list[str]]:
    """(what this shows, what it does not), in sentences generated from the verdicts."""
    shows: list[str] = []
    for p in exp.pairs:
        shows.append(f"{p.pair}: competition {p.competition:.3f}, cooperation {p.cooperation:.3f}.")
        for v in (p.competes, p.cooperates):
            shows.append(f"{p.pair}: \"{v.claim}\" is {verdict_text(v)}.")
    for d in exp.dose:
        shows.append(f"{d.pair}: \"{d.verdict.claim}\" is {verdict_text(d.verdict)}.")
    for pair, _, _ in _pairs(exp):
        roles = [r.role for r in exp.components if r.pair == pair]
        if roles:
            counts = ", ".join(f"{roles.count(k)} {k}" for k in ("competitive", "cooperative", "mixed",
                                                                  "neutral") if roles.count(k))
            shows.append(f"{pair}: of {len(roles)} components, {counts}.")
    return shows, _caveats(exp)


def _caveats(exp: Experiment) -> list[str]:
    nots: list[str] = []
    uncontrolled = {(c.pair, c.set_name, c.size): c.verdict.detail for c in exp.ablations if c.control is None}
    for (pair, name, size), detail in uncontrolled.items():
        why = detail or ("the set is empty" if size == 0 else "no random set of that size and kind exists")
        nots.append(f"{pair}: no control possible for {name} ({size} components): {why}; "
                    "no claim rests on it.")
    fallback = sorted({(c.pair, c.set_name, c.control.pool_size) for c in exp.ablations
                       if c.control is not None and c.control.pool == "outside set"})
    if fallback:
        listed = ", ".join(f"{name} (pool {size})" for _, name, size in fallback)
        nots.append(f"The controls for {listed} drew from outside the set because few components lie "
                    "outside the circuits: they may hold other circuits' components, so they are a "
                    "harder baseline than unrelated components.")
    for c in exp.ablations:
        if c.control is not None and c.control.distinct < c.control.n:
            nots.append(f"{c.pair}: only {c.control.distinct} distinct random sets exist for {c.set_name} "
                        f"(of {c.control.n} drawn), so its p-value rests on few alternatives.")
            break
    grouped: dict[tuple[str, str], list[str]] = {}
    for where, v in _verdicts(exp):
        if v.state == "inconclusive":
            grouped.setdefault((v.claim, v.detail), []).append(where)
    for (claim, detail), places in list(grouped.items())[:5]:
        shown = ", ".join(places[:4]) + (f" +{len(places) - 4} more" if len(places) > 4 else "")
        nots.append(f"Inconclusive ({shown}): \"{claim}\"" + (f": {detail}." if detail else "."))
    if len(grouped) > 5:
        nots.append(f"... and {len(grouped) - 5} more kinds of inconclusive verdict (see the tables).")
    n_tests = sum(1 for _, v in _verdicts(exp) if v.p_value is not None)
    nots.append(f"The {n_tests} p-values are each judged at {exp.alpha_level:g} with no correction for "
                "multiple comparisons; DLA measures only the direct path to the logits; the results hold "
                f"for this model, these circuits and {exp.ablation} ablation, not beyond them.")
    return nots


def _verdicts(exp: Experiment) -> list[tuple[str, Verdict]]:
    """Every verdict with where it stands, in words."""
    return ([(f"{c.pair} {c.set_name} on {c.task}", c.verdict) for c in exp.ablations]
            + [(f"{r.pair} {r.name}", r.verdict) for r in exp.components]
            + [(f"{d.pair} dose {d.scaled_task}", d.verdict) for d in exp.dose]
            + [(f"{p.pair} {name}", v) for p in exp.pairs
               for name, v in (("competes", p.competes), ("cooperates", p.cooperates))])


def markdown(exp: Experiment, image: str | None = None) -> str:
    """The report: inputs, the figure, every table with its notes, findings and provenance."""
    out = [f"# Competition experiment `{exp.id}`", "", _md_table(("input", "value"), _inputs(exp))]
    if image:
        out += ["", f"![ablation matrix and dose-response curves]({image})"]
    for s in sections(exp):
        out += ["", f"## {s.title}", "", _md_table(s.headers, s.rows)]
        out += [""] + [f"- {n}" for n in s.notes] if s.notes else []
    shows, nots = findings(exp)
    out += ["", "## What this shows", ""] + [f"- {s}" for s in shows or ["No verdicts were recorded."]]
    out += ["", "## What it does not show", ""] + [f"- {n}" for n in nots]
    p = exp.provenance
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in p.timings.items()) or "-"
    out += ["", "## Provenance", "", _md_table(("field", "value"), [
        ("created", p.created_at or "-"), ("device", p.device), ("forward passes", p.forward_passes),
        ("timings", timings), ("model sha256", p.model_sha256 or "-"),
        ("versions", ", ".join(f"{k} {v}" for k, v in p.versions.items()) or "-")])]
    return "\n".join(out) + "\n"


def draw(exp: Experiment, path: Path) -> Path:
    """One row per pair: its node-level ablation heatmap (faithfulness colour, p annotated), then
    one panel per dose-response (win rate left axis, both task metrics right axis, vs alpha)."""
    from matplotlib.figure import Figure

    pairs = _pairs(exp) or [("(no pairs)", "", "")]
    doses = {k: [d for d in exp.dose if d.pair == k] for k, _, _ in pairs}
    ncols = 1 + max((len(v) for v in doses.values()), default=0)
    fig = Figure(figsize=(min(5.5 + 4.8 * (ncols - 1), 24), min(3.8 * len(pairs) + 0.6, 30)),
                 layout="constrained")
    grid = fig.subplots(len(pairs), ncols, squeeze=False)
    for row, (key, a, b) in enumerate(pairs):
        _heatmap(fig, grid[row][0], exp, key, a, b)
        for col in range(1, ncols):
            ax = grid[row][col]
            if col - 1 < len(doses[key]):
                _dose(ax, doses[key][col - 1], (a, b))
            else:
                ax.set_axis_off()
    fig.suptitle(f"experiment {exp.id[:12]}: {exp.model}, {exp.ablation} ablation, "
                 f"{exp.n_controls} controls", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path


def _heatmap(fig: Any, ax: Any, exp: Experiment, key: str, a: str, b: str) -> None:
    import numpy as np
    from matplotlib import colormaps

    cells = [c for c in exp.ablations if c.pair == key and c.kind == "nodes"]
    if not cells:
        ax.text(0.5, 0.5, f"{key}: no ablation data", ha="center", va="center")
        ax.set_axis_off()
        return
    rows = [s for s in set_names(a, b) if any(c.set_name == s for c in cells)]
    cols = [t for t in exp.tasks if any(c.task == t for c in cells)]
    values = np.full((len(rows), len(cols)), np.nan)
    for c in cells:
        i, j = rows.index(c.set_name), cols.index(c.task)
        values[i, j] = np.nan if c.faithfulness is None else c.faithfulness
        p = c.control.p_value if c.control else c.verdict.p_value
        faith = "n/a" if c.faithfulness is None else f"{c.faithfulness:.2f}"
        ax.text(j, i, f"{faith}\np={'-' if p is None else f'{p:.2g}'}\nn={c.size}", ha="center",
                va="center", fontsize=7)
    cmap = colormaps["RdYlGn"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{s} ablated" for s in rows], fontsize=8)
    ax.set_title(f"{key}: faithfulness with set ablated", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="faithfulness")


def _dose(ax: Any, dose: Any, tasks: tuple[str, str]) -> None:
    alphas = [p.alpha for p in dose.points]
    ax.plot(alphas, [p.win_rate for p in dose.points], "o-", color="black",
            label=f"{dose.scaled_task} win rate")
    ax.set(ylim=(-0.05, 1.05), xlabel="alpha (scale of unique components)", ylabel="win rate")
    ax.axvline(1.0, color="#bbbbbb", lw=0.8, ls=":")
    right = ax.twinx()
    for task, color in zip(tasks, ("tab:blue", "tab:orange"), strict=True):
        ys = [p.metrics.get(task, float("nan")) for p in dose.points]
        right.plot(alphas, ys, "s--", color=color, label=f"{task} metric", alpha=0.8)
    right.set_ylabel("task metric")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_title(f"scale {dose.scaled_task}'s unique ({len(dose.components)}): {dose.verdict.state}",
                 fontsize=9)


def write_report(exp: Experiment, out_dir: Path) -> dict[str, Path]:
    """``experiment-<id>.png``, ``.md`` and ``.json`` under ``out_dir``; their paths by suffix."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, md, js = (out_dir / f"experiment-{exp.id}.{ext}" for ext in ("png", "md", "json"))
    draw(exp, png)
    md.write_text(markdown(exp, image=png.name))
    js.write_text(exp.to_json())
    return {"png": png, "md": md, "json": js}
