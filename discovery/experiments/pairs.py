"""One pair's headline: do its circuits compete (ablating one's unique components makes the other
task win more conflict prompts, beyond random sets of the same size and kind) and do they
cooperate (ablating the shared components hurts both tasks beyond random sets)?"""

from __future__ import annotations

from collections.abc import Sequence

from discovery.experiments.ablate import Runner
from discovery.experiments.context import Context
from discovery.experiments.controls import control_stats, judge, standard_error
from discovery.experiments.dla import wins_of
from discovery.experiments.result import AblationCell, ComponentSets, PairSummary, Verdict


def win_shift(ctx: Context, sets: ComponentSets, conflict: Runner, task: str) -> tuple[float, Verdict]:
    """How much ``task``'s conflict win rate rises when the other task's unique components are
    ablated, against random sets of their size and kind on the same prompts."""
    a, b = sets.pair.split("|")
    other = b if task == a else a
    name = f"{other}-{task}"
    members = frozenset(sets.nodes[name])
    base = wins_of(conflict.full(), task, a)
    ablated = wins_of(conflict.without_nodes(members), task, a)
    shift = float(ablated.mean() - base.mean())
    draw = ctx.node_controls(members, f"{ctx.seed}/{sets.pair}/{name}/conflicts")
    shifts = [float(wins_of(conflict.without_nodes(s), task, a).mean() - base.mean()) for s in draw.sets]
    stats = control_stats(draw, shifts, shift) if members else None
    return shift, judge(f"ablating {name} raises {task}'s win rate on the conflict prompts more than "
                        "random sets of its size and kind", size=len(members), observed=shift,
                        se=standard_error((ablated - base).tolist()), draw=draw, stats=stats,
                        alpha_level=ctx.alpha_level, kind="nodes")


def _competes(a: str, b: str, directions: Sequence[Verdict], competition: float) -> Verdict:
    claim = f"the {a} and {b} circuits compete: ablating one's unique components makes the " \
            "other's answer win more conflict prompts"
    statistic = "win-rate shift towards the task whose rival was ablated (empirical p vs random sets)"
    detail = " | ".join(f"{v.claim}: {v.state} (shift {v.value}, p {v.p_value}; {v.detail})"
                        for v in directions)
    control = directions[0].control + " (each direction on its own; no correction for two)"
    won = [v for v in directions if v.state == "supported"]
    if won:
        best = max(won, key=lambda v: v.value or 0.0)
        return Verdict(claim, "supported", statistic, best.value, best.p_value, control, detail)
    measured = [v for v in directions if v.state == "not supported"]
    if measured:
        best = min(measured, key=lambda v: v.p_value or 1.0)
        return Verdict(claim, "not supported", statistic, best.value, best.p_value, control, detail)
    return Verdict(claim, "inconclusive", statistic, competition, None, control, detail)


def _cooperates(a: str, b: str, shared: Sequence[AblationCell], cooperation: float) -> Verdict:
    claim = f"the {a} and {b} circuits cooperate: ablating their shared components hurts both " \
            "tasks more than random sets of its size and kind"
    statistic = "smaller faithfulness loss (1 - faithfulness) of the two tasks, a&b ablated"
    states = [c.verdict.state for c in shared]
    detail = " | ".join(f"{c.task}: {c.verdict.state}, effect {c.effect:.4g}, p {c.verdict.p_value} "
                        f"({c.verdict.detail})" for c in shared)
    p = max((c.verdict.p_value for c in shared if c.verdict.p_value is not None), default=None)
    if all(s == "supported" for s in states):
        state = "supported"
    elif "not supported" in states:
        state = "not supported"
    else:
        state = "inconclusive"
    return Verdict(claim, state, statistic, cooperation, p, shared[0].verdict.control, detail)


def pair_summary(ctx: Context, sets: ComponentSets, conflict: Runner,
                 cells: Sequence[AblationCell]) -> PairSummary:
    a, b = sets.pair.split("|")
    shifts, directions = zip(*(win_shift(ctx, sets, conflict, t) for t in (a, b)), strict=True)
    competition = sum(shifts) / 2
    shared = [c for c in cells if c.pair == sets.pair and c.set_name == f"{a}&{b}"
              and c.kind == "nodes"]
    losses = [1 - c.faithfulness for c in shared if c.faithfulness is not None]
    cooperation = min(losses) if losses else 0.0
    circuits = (ctx.circuits[a].id, ctx.circuits[b].id)
    return PairSummary(pair=sets.pair, circuits=circuits,
                       competes=_competes(a, b, directions, competition),
                       cooperates=_cooperates(a, b, shared, cooperation),
                       competition=competition, cooperation=cooperation)
