"""Random control sets and the verdict of "ablating S hurts T more than random sets of its size".

Control sets match the ablated set kind by kind (as many heads, MLPs and neurons; for edges as many
edges). They come from components in no circuit of the experiment (``outside circuits``); when
that pool cannot give ``n`` distinct sets (a 16-head model), from everything not in the set
(``outside set``). When the pool's population of possible sets is no larger than ``n`` it is
enumerated exhaustively, so the p-value is exact over it. Seeds are strings
(``random.Random("0/ioi|induction/ioi&induction/nodes")``): Python hashes them with SHA-512, so
draws are the same in every process.

p = (1 + #{control effect >= observed}) / (1 + N), one-sided (two-sided: |effect| instead);
its smallest attainable value is 1 / (1 + N).
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from discovery.experiments.result import ControlStats, Verdict
from discovery.experiments.sets import kind_of

OUTSIDE_CIRCUITS = "outside circuits"
OUTSIDE_SET = "outside set"


@dataclass(frozen=True)
class ControlDraw:
    """The control sets of one ablation and where they came from."""

    sets: tuple[frozenset[str], ...]
    pool: str
    pool_size: int
    population: int  # how many different sets of this size and kind the pool allows
    exhaustive: bool


def _population(pools: dict[str, Sequence[str]], counts: dict[str, int]) -> int:
    return math.prod(math.comb(len(pools[k]), c) for k, c in counts.items())


def draw_controls(members: frozenset[str], counts: dict[str, int],
                  universe: dict[str, Sequence[str]], in_circuits: Callable[[str], bool],
                  n: int, seed: str) -> ControlDraw:
    """Up to ``n`` random sets with ``counts[kind]`` members of each kind, from ``universe[kind]``
    (in a fixed order); ``in_circuits(name)`` says whether a component lies in any circuit."""
    counts = {k: c for k, c in counts.items() if c > 0}
    outside = {k: [x for x in universe[k] if not in_circuits(x)] for k in counts}
    pool, pools = OUTSIDE_CIRCUITS, outside
    if _population(outside, counts) < n:
        pool, pools = OUTSIDE_SET, {k: [x for x in universe[k] if x not in members] for k in counts}
    population = _population(pools, counts)
    size = sum(len(pools[k]) for k in counts)
    if population == 0:
        return ControlDraw((), pool, size, 0, True)
    kinds = sorted(counts)
    if population <= n:
        combos = itertools.product(*(itertools.combinations(pools[k], counts[k]) for k in kinds))
        sets = tuple(frozenset(itertools.chain.from_iterable(c)) for c in combos)
        return ControlDraw(sets, pool, size, population, True)
    rng = random.Random(seed)
    sets = tuple(frozenset(itertools.chain.from_iterable(rng.sample(pools[k], counts[k]) for k in kinds))
                 for _ in range(n))
    return ControlDraw(sets, pool, size, population, False)


def node_counts(names: frozenset[str]) -> dict[str, int]:
    """How many components of each kind (attention, mlp, neuron) a node set has."""
    counts: dict[str, int] = {}
    for name in names:
        kind = kind_of(name)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def control_stats(draw: ControlDraw, effects: Sequence[float], observed: float, *,
                  two_sided: bool = False) -> ControlStats | None:
    """Mean, spread, z and the empirical p of ``observed`` against the control ``effects``."""
    if not effects:
        return None
    n = len(effects)
    mean = statistics.fmean(effects)
    std = statistics.stdev(effects) if n > 1 else 0.0
    if two_sided:
        beats = sum(abs(e) >= abs(observed) for e in effects)
    else:
        beats = sum(e >= observed for e in effects)
    return ControlStats(n=n, distinct=len(set(draw.sets)), pool=draw.pool, pool_size=draw.pool_size,
                        mean=mean, std=std, z=None if std == 0 else (observed - mean) / std,
                        p_value=(1 + beats) / (1 + n))


def _count(n: int) -> str:
    """An exact count, or its order of magnitude when it is long (C(1024, 180) has 200 digits)."""
    return str(n) if n < 10**6 else f"about 10^{len(str(n)) - 1}"


def describe(draw: ControlDraw, kind: str) -> str:
    how = "all" if draw.exhaustive else "seeded random"
    return (f"{how} {len(draw.sets)} sets of the same size and kind ({kind}) from {draw.pool} "
            f"(pool {draw.pool_size}, {_count(draw.population)} possible sets)")


def judge(claim: str, *, size: int, observed: float, se: float, draw: ControlDraw,
          stats: ControlStats | None, alpha_level: float, kind: str,
          two_sided: bool = False) -> Verdict:
    """Supported iff p <= alpha_level and observed - control mean > 2 * se (the per-prompt standard
    error of the observed effect; for two-sided claims |observed - control mean|). Inconclusive when
    the set is empty, no control set exists, or 1 / (1 + N) already exceeds alpha_level."""
    statistic = f"empirical {'two' if two_sided else 'one'}-sided p vs random sets"
    control = describe(draw, kind)
    if size == 0:
        return Verdict(claim, "inconclusive", statistic, None, None, control,
                       "the set is empty: nothing to ablate")
    if stats is None:
        return Verdict(claim, "inconclusive", statistic, None, None, control,
                       f"no random set of the same size and kind exists ({draw.pool} has "
                       f"{draw.pool_size} components of these kinds)")
    margin = observed - stats.mean
    if two_sided:
        margin = abs(margin)
    detail = (f"effect {observed:.4g} vs control mean {stats.mean:.4g} (std {stats.std:.4g}, "
              f"N={stats.n}); effect - control mean {margin:.4g}, 2 x SE {2 * se:.4g}")
    floor = 1 / (1 + stats.n)
    if floor > alpha_level:
        return Verdict(claim, "inconclusive", statistic, observed, stats.p_value, control,
                       f"only {stats.n} control sets exist, so the smallest attainable p is "
                       f"1/{stats.n + 1} = {floor:.3g} > alpha {alpha_level}; {detail}")
    ok = stats.p_value <= alpha_level and margin > 2 * se
    return Verdict(claim, "supported" if ok else "not supported", statistic, observed,
                   stats.p_value, control,
                   detail if ok else f"needs p <= {alpha_level} and a margin > 2 x SE; {detail}")


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of per-prompt values (0 for fewer than two)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
