"""The role of each component of a pair's circuits in their competition.

* ``hurts[t]``: ablating the component alone lowers task t's metric on t's own prompts, positive
  and significant against single random components of the same kind (the rules of
  :mod:`discovery.experiments.controls`);
* ``pushes``: its direct contribution to logit(a) - logit(b) on the conflict prompts has a
  sign-flip p <= alpha_level and |t| >= 2; it favours a when the mean is positive, else b.

cooperative: hurts both, does not push; competitive: pushes, does not hurt both; mixed: both;
neutral: neither.
"""

from __future__ import annotations

from torch import Tensor

from discovery.experiments.ablate import Runner
from discovery.experiments.context import Context
from discovery.experiments.controls import ControlDraw, control_stats, judge, standard_error
from discovery.experiments.dla import dla_stats
from discovery.experiments.result import ComponentRole, ComponentSets, ControlStats, Verdict
from discovery.experiments.sets import kind_of, sort_components


def single_controls(ctx: Context, pair: str, name: str) -> ControlDraw:
    """Single random components of ``name``'s kind (never ``name`` itself)."""
    return ctx.node_controls(frozenset({name}), f"{ctx.seed}/{pair}/{name}/single")


def task_effect(ctx: Context, task: str, name: str, draw: ControlDraw) -> tuple[float, ControlStats | None, Verdict]:
    """Metric drop on ``task`` with ``name`` ablated, its control and whether it is significant."""
    runner = ctx.runners[task]
    full = runner.full()["metric"]
    ablated = runner.without_nodes({name})["metric"]
    effect = float(full.mean() - ablated.mean())
    effects = [float(full.mean() - runner.without_nodes(s)["metric"].mean()) for s in draw.sets]
    stats = control_stats(draw, effects, effect)
    verdict = judge(f"ablating {name} hurts {task} more than a random {kind_of(name)}", size=1,
                    observed=effect, se=standard_error((full - ablated).tolist()), draw=draw,
                    stats=stats, alpha_level=ctx.alpha_level, kind=kind_of(name))
    return effect, stats, verdict


def conflict_shift(conflict: Runner, name: str, draw: ControlDraw) -> tuple[float, ControlStats | None]:
    """Change of the mean conflict logit difference with ``name`` ablated, against single random
    components of its kind (two-sided)."""
    base = float(conflict.full()["diff"].mean())
    shift = float(conflict.without_nodes({name})["diff"].mean()) - base
    shifts = [float(conflict.without_nodes(s)["diff"].mean()) - base for s in draw.sets]
    return shift, control_stats(draw, shifts, shift, two_sided=True)


def _label(hurts_both: bool, pushes: bool) -> str:
    if hurts_both and pushes:
        return "mixed"
    if hurts_both:
        return "cooperative"
    return "competitive" if pushes else "neutral"


def role_of(ctx: Context, sets: ComponentSets, conflict: Runner, name: str, dla: Tensor,
            flips: Tensor) -> ComponentRole:
    a, b = sets.pair.split("|")
    membership = next(s for s in (f"{a}&{b}", f"{a}-{b}", f"{b}-{a}") if name in sets.nodes[s])
    draw = single_controls(ctx, sets.pair, name)
    effects, controls, verdicts = {}, {}, {}
    for task in (a, b):
        effects[task], controls[task], verdicts[task] = task_effect(ctx, task, name, draw)
    hurts = {t: verdicts[t].state == "supported" for t in (a, b)}
    mean, t, p = dla_stats(dla, flips)
    pushes = p is not None and t is not None and p <= ctx.alpha_level and abs(t) >= 2
    favours = (a if mean > 0 else b) if pushes else None
    shift, shift_control = conflict_shift(conflict, name, draw)
    role = _label(all(hurts.values()), pushes)
    return ComponentRole(pair=sets.pair, name=name, kind=kind_of(name), membership=membership,
                         role=role, favours=favours, effects=effects, effect_controls=controls,
                         dla_mean=mean, dla_t=t, dla_p=p, conflict_shift=shift,
                         conflict_control=shift_control,
                         effect_states={t: v.state for t, v in verdicts.items()},
                         verdict=_verdict(name, role, favours, verdicts, mean, t, p, ctx.alpha_level))


def _verdict(name: str, role: str, favours: str | None, verdicts: dict[str, Verdict], mean: float,
             t: float | None, p: float | None, alpha_level: float) -> Verdict:
    tasks = list(verdicts)
    hurt = "; ".join(f"{k}: effect {v.value if v.value is None else round(v.value, 4)}, p "
                     f"{v.p_value if v.p_value is None else round(v.p_value, 4)} ({v.state})"
                     for k, v in verdicts.items())
    t_text = "none" if t is None else f"{t:.3g}"
    push = f"DLA mean {mean:.4g}, t {t_text}, sign-flip p {p if p is None else round(p, 4)}"
    detail = f"ablation effects: {hurt}; {push}"
    control = "single random components of the same kind; 2000 seeded sign flips over prompts"
    if role in ("competitive", "mixed"):
        claim = f"{name} pushes {favours}'s answer against the other's" + (
            f" and its ablation hurts both {tasks[0]} and {tasks[1]}" if role == "mixed" else "")
        return Verdict(claim, "supported", "DLA t over conflict prompts", t, p, control, detail)
    if role == "cooperative":
        worst = max(v.p_value or 1.0 for v in verdicts.values())
        return Verdict(f"ablating {name} hurts both {tasks[0]} and {tasks[1]}", "supported",
                       "min ablation effect over the two tasks",
                       min(v.value or 0.0 for v in verdicts.values()), worst, control, detail)
    weak = [k for k, v in verdicts.items() if v.state == "inconclusive"]
    state = "inconclusive" if weak or p is None else "not supported"
    reason = (f"the ablation test on {', '.join(weak)} could not reach p <= {alpha_level}; "
              if weak else "")
    return Verdict(f"{name} takes part in the competition of {tasks[0]} and {tasks[1]} "
                   "(cooperative or competitive)", state, "DLA t over conflict prompts", t, p,
                   control, reason + detail)


def component_roles(ctx: Context, sets: ComponentSets, conflict: Runner, dla: dict[str, Tensor],
                    flips: Tensor) -> list[ComponentRole]:
    """A role for every component in A ∪ B, in model order."""
    a, b = sets.pair.split("|")
    names = sort_components(set(sets.nodes[a]) | set(sets.nodes[b]))
    return [role_of(ctx, sets, conflict, name, dla[name], flips) for name in names]
