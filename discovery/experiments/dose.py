"""Dose-response: the unique components of one task's circuit (within a pair) scaled by each alpha,
as their receivers see them (``forward_from(scale=...)``; a neuron through its activation). The
hypothesis predicts that amplifying t's unique parts raises t's win rate on the conflict prompts.

Two statistics, both of which must hold (an intersection-union test, so its p is the larger of
the two): Spearman's rho between alpha and the t-oriented mean conflict logit difference, with an
exact one-sided permutation p over every ordering of the alphas (seeded sampling beyond
:data:`EXACT_UP_TO` alphas); and an exact sign test on the prompts whose winner changes between
the smallest and the largest alpha (more flips towards t than away from it). The second is there because
a trend in the logit difference alone can come from anything that grows the residual's norm (a
scaled component that writes nothing the logits read shrinks every logit a little): the claim is
about who wins, so the winners must change."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence

from discovery.experiments.ablate import Runner
from discovery.experiments.context import Context
from discovery.experiments.dla import wins_of
from discovery.experiments.result import ComponentSets, DosePoint, DoseResponse, Verdict

EXACT_UP_TO = 8
N_SAMPLED = 20000


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def _pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence[float], y: Sequence[float], seed: str) -> tuple[float | None, float | None]:
    """rho and its one-sided permutation p (share of orderings with rho >= the observed one)."""
    rx, ry = ranks(x), ranks(y)
    rho = _pearson(rx, ry)
    if rho is None:
        return None, None
    if len(x) <= EXACT_UP_TO:
        perms = list(itertools.permutations(ry))
        hits = sum((_pearson(rx, p) or 0.0) >= rho - 1e-12 for p in perms)
        return rho, hits / len(perms)
    rng = random.Random(seed)
    hits = 0
    for _ in range(N_SAMPLED):
        p = list(ry)
        rng.shuffle(p)
        hits += (_pearson(rx, p) or 0.0) >= rho - 1e-12
    return rho, (1 + hits) / (1 + N_SAMPLED)


def dose_response(ctx: Context, sets: ComponentSets, conflict: Runner, task: str) -> DoseResponse:
    """Scale ``task``'s unique components (``task`` minus the other) by each of ``ctx.alphas``."""
    a, b = sets.pair.split("|")
    other = b if task == a else a
    unique = sets.nodes[f"{task}-{other}"]
    points, wins = [], {}
    for alpha in ctx.alphas:
        metrics = {t: float(ctx.runners[t].scaled(unique, alpha)["metric"].mean()) for t in (a, b)}
        measured = conflict.scaled(unique, alpha)
        wins[float(alpha)] = [bool(w) for w in wins_of(measured, task, a).tolist()]
        points.append(DosePoint(alpha=float(alpha), metrics=metrics,
                                win_rate=float(statistics.fmean(wins[float(alpha)])),
                                logit_diff=float(measured["diff"].mean())))
    verdict = _verdict(ctx, sets.pair, task, unique, points, wins)
    return DoseResponse(pair=sets.pair, scaled_task=task, components=tuple(unique),
                        points=tuple(points), verdict=verdict)


def flip_test(before: Sequence[bool], after: Sequence[bool]) -> tuple[int, int, float]:
    """Prompts that t starts winning and stops winning between two conditions, and the exact
    one-sided sign-test p of at least that many gains among the changed prompts (1 if none)."""
    gained = sum((not x) and y for x, y in zip(before, after, strict=True))
    lost = sum(x and (not y) for x, y in zip(before, after, strict=True))
    n = gained + lost
    p = 1.0 if n == 0 else sum(math.comb(n, k) for k in range(gained, n + 1)) / 2 ** n
    return gained, lost, p


def _verdict(ctx: Context, pair: str, task: str, unique: Sequence[str],
             points: Sequence[DosePoint], wins: dict[float, list[bool]]) -> Verdict:
    a = pair.split("|")[0]
    claim = f"amplifying {task}'s unique components raises {task}'s win rate (smallest to largest alpha)"
    statistic = (f"Spearman rho (alpha, mean conflict logit difference towards {task}); p = max of its "
                 "permutation p and the sign test on prompts whose winner changes")
    control = f"exact permutation p over all {math.factorial(len(points))} orderings of the alphas" \
        if len(points) <= EXACT_UP_TO else f"permutation p over {N_SAMPLED} seeded orderings"
    if not unique:
        return Verdict(claim, "inconclusive", statistic, None, None, control,
                       f"{task}'s circuit has no components outside the other circuit")
    if len(points) < 3:
        return Verdict(claim, "inconclusive", statistic, None, None, control,
                       f"{len(points)} alphas cannot show a trend; give at least 3")
    sign = 1.0 if task == a else -1.0
    alphas = [p.alpha for p in points]
    rho, p = spearman(alphas, [sign * q.logit_diff for q in points], f"{ctx.seed}/{pair}/{task}/dose")
    top, low = max(points, key=lambda q: q.alpha), min(points, key=lambda q: q.alpha)
    ref = min(points, key=lambda q: (abs(q.alpha - 1.0), q.alpha))
    change = (f"win rate of {task} {ref.win_rate:.3f} at alpha {ref.alpha:g} -> {top.win_rate:.3f} "
              f"at alpha {top.alpha:g} ({top.win_rate - ref.win_rate:+.3f}); mean logit diff "
              f"towards {task} {sign * ref.logit_diff:.4g} -> {sign * top.logit_diff:.4g}")
    gained, lost, p_flip = flip_test(wins[low.alpha], wins[top.alpha])
    change += (f"; win rate {low.win_rate:.3f} at alpha {low.alpha:g}: {gained} prompts won and "
               f"{lost} lost from alpha {low.alpha:g} to {top.alpha:g} (sign test p = {p_flip:.3g})")
    if rho is None:
        return Verdict(claim, "not supported", statistic, None, None, control,
                       f"the logit difference does not change with alpha; {change}")
    p_both = max(p, p_flip) if p is not None else None
    ok = rho > 0 and p_both is not None and p_both <= ctx.alpha_level
    return Verdict(claim, "supported" if ok else "not supported", statistic, rho, p_both, control,
                   change if ok else f"needs rho > 0 and both p <= {ctx.alpha_level}; {change}")
