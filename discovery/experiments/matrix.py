"""The cross-task ablation matrix (every set of a pair ablated, every task of the experiment
measured on its own prompts, against random sets of the same size and kind: with three or more
tasks, a pair's sets are measured on the third task's prompts too) and cross-task faithfulness
(circuit A alone on task B's prompts)."""

from __future__ import annotations

from discovery.experiments.ablate import Measure, Runner
from discovery.experiments.context import Context
from discovery.experiments.controls import control_stats, judge, standard_error
from discovery.experiments.result import AblationCell, ComponentSets, CrossFaithfulness, SetKind, set_names
from discovery.experiments.sets import circuit_edges


def faithfulness(metric: float, full: float, empty: float) -> float | None:
    """(m - m(empty)) / (m(full) - m(empty)); None when full and empty coincide."""
    span = full - empty
    return None if span == 0 else (metric - empty) / span


def ablate(runner: Runner, members: frozenset[str], kind: SetKind) -> Measure:
    return runner.without_nodes(members) if kind == "nodes" else runner.without_edges(members)


def members_of(sets: ComponentSets, set_name: str, kind: SetKind) -> frozenset[str]:
    return frozenset(sets.nodes[set_name] if kind == "nodes" else sets.edges[set_name])


def observe(ctx: Context, sets: ComponentSets) -> None:
    """Run every observed ablation of one pair (cached for :func:`cells`)."""
    a, b = sets.pair.split("|")
    for kind in ("nodes", "edges"):
        for set_name in set_names(a, b):
            for task in ctx.tasks:
                ablate(ctx.runners[task], members_of(sets, set_name, kind), kind)  # type: ignore[arg-type]


def control_seed(ctx: Context, pair: str, set_name: str, kind: str) -> str:
    return f"{ctx.seed}/{pair}/{set_name}/{kind}"


def cell(ctx: Context, sets: ComponentSets, set_name: str, kind: SetKind, task: str) -> AblationCell:
    """Task ``task`` with set ``set_name`` ablated, against its random controls."""
    runner = ctx.runners[task]
    members = members_of(sets, set_name, kind)
    full, empty = runner.full()["metric"], runner.empty()["metric"]
    ablated = ablate(runner, members, kind)
    per_prompt = (full - ablated["metric"]).tolist()
    effect = float(full.mean() - ablated["metric"].mean())
    draw = ctx.controls(members, kind, control_seed(ctx, sets.pair, set_name, kind))
    effects = [float(full.mean() - ablate(runner, s, kind)["metric"].mean()) for s in draw.sets]
    stats = control_stats(draw, effects, effect) if members else None
    claim = f"ablating {set_name} hurts {task} more than random sets of its size and kind"
    verdict = judge(claim, size=len(members), observed=effect, se=standard_error(per_prompt),
                    draw=draw, stats=stats, alpha_level=ctx.alpha_level,
                    kind=f"{kind}, {_spell(members, kind)}")
    metric = float(ablated["metric"].mean())
    f_mean, e_mean = float(full.mean()), float(empty.mean())
    return AblationCell(pair=sets.pair, set_name=set_name, kind=kind, task=task, size=len(members),
                        metric=metric, full=f_mean, empty=e_mean,
                        faithfulness=faithfulness(metric, f_mean, e_mean),
                        top1=float(ablated["top1"].mean()), effect=effect, control=stats,
                        verdict=verdict)


def _spell(members: frozenset[str], kind: str) -> str:
    if kind == "edges":
        return f"{len(members)} edges"
    heads = sum(m.startswith("a") for m in members)
    neurons = sum(".n" in m for m in members)
    return f"{heads} heads, {len(members) - heads - neurons} MLPs, {neurons} neurons"


def cells(ctx: Context, sets: ComponentSets) -> list[AblationCell]:
    """Every set x kind x task cell of one pair (every task of the experiment), in a fixed order."""
    a, b = sets.pair.split("|")
    return [cell(ctx, sets, set_name, kind, task)  # type: ignore[arg-type]
            for kind in ("nodes", "edges") for set_name in set_names(a, b) for task in ctx.tasks]


def cross_faithfulness(ctx: Context) -> list[CrossFaithfulness]:
    """Each circuit's edges alone (everything else ablated) on each task's prompts, the diagonal
    included (that is the circuit's own faithfulness)."""
    rows = []
    for circuit_task in ctx.tasks:
        edges = circuit_edges(ctx.circuits[circuit_task])
        for eval_task in ctx.tasks:
            runner = ctx.runners[eval_task]
            full, empty = float(runner.full()["metric"].mean()), float(runner.empty()["metric"].mean())
            alone = runner.only_edges(edges)
            value = float(alone["metric"].mean())
            rows.append(CrossFaithfulness(circuit_task=circuit_task, eval_task=eval_task,
                                          metric=ctx.metrics[eval_task], value=value, full=full, empty=empty,
                                          faithfulness=faithfulness(value, full, empty),
                                          top1=float(alone["top1"].mean())))
    return rows

