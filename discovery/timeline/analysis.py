"""Timeline analysis over plain series and sets (no torch): Jaccard overlap, the step at which a
circuit stabilises, a change-point of a scalar series, and components that move between tasks.

A *series* is ``[(step, value), ...]`` ascending by step; a *membership* is ``{step: set of
component names}`` (for example a task's circuit nodes at each checkpoint)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """``|a & b| / |a | b|``; 1.0 for two empty sets (identical, so fully overlapping)."""
    a, b = set(a), set(b)
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def stabilisation_step(series: Sequence[tuple[int, float]], *, level: float = 0.8,
                       min_points: int = 2) -> int | None:
    """The first step ``s`` whose value is ``>= level`` at ``s`` and at every later step, provided
    that stable tail holds at least ``min_points`` checkpoints; None when there is no such step.

    Meant for the Jaccard to the final circuit. The final checkpoint always matches itself
    (Jaccard 1.0), so a tail of one point says nothing: with ``min_points=2`` (default) a circuit
    that only reaches the final circuit at the last checkpoint has *not* stabilised within the run
    (None), and a circuit that dips below ``level`` again after first reaching it stabilises at
    the later return, not the first crossing."""
    if min_points < 1:
        raise ValueError(f"min_points must be >= 1, got {min_points}")
    steps = [s for s, _ in series]
    if steps != sorted(steps):
        raise ValueError(f"series must be ascending by step, got steps {steps}")
    start = None
    for i in range(len(series) - 1, -1, -1):
        if series[i][1] < level:
            break
        start = i
    if start is None or len(series) - start < min_points:
        return None
    return series[start][0]


def change_point(series: Sequence[tuple[int, float]]) -> int | None:
    """The step of the largest drop between consecutive points: the later step ``s_i`` of the pair
    maximising ``value[i-1] - value[i] > 0``. None with fewer than two points or no drop at all.
    For the in-context loss this is the checkpoint by which the induction phase change has
    happened (Olsson et al. 2022); the window is ``(s_{i-1}, s_i]``."""
    best, best_drop = None, 0.0
    for (_, before), (step, after) in zip(series, series[1:], strict=False):
        if before - after > best_drop:
            best, best_drop = step, before - after
    return best


def overlap_over_time(first: Mapping[int, Iterable[str]], second: Mapping[int, Iterable[str]]
                      ) -> list[tuple[int, float | None]]:
    """``[(step, jaccard(first[step], second[step]))]`` over the steps both memberships have; None
    at a step where both are empty (two circuits that do not exist yet do not overlap: the 1.0 of
    :func:`jaccard` would read as full sharing)."""
    out: list[tuple[int, float | None]] = []
    for step in sorted(set(first) & set(second)):
        a, b = set(first[step]), set(second[step])
        out.append((step, jaccard(a, b) if a or b else None))
    return out


def moved_components(first: Mapping[int, Iterable[str]], second: Mapping[int, Iterable[str]], *,
                     ignore: Iterable[str] = ("embed", "logits")) -> dict[str, dict[str, int]]:
    """Components that served the first task early and the second task late: ``c`` in the first
    task's circuit and not the second's at some step (the first such is ``s1``), and from a later
    step ``s2`` to the end of the run in the second's and not the first's.

    Returns ``{c: {"first_at": s1, "moved_at": s2}}`` (``s2`` the earliest such step). A component
    in both circuits at once, or one that drops out of the first and comes back, has not moved;
    membership that flickers between checkpoints (a search near its threshold) is no move either
    unless it settles in the second task. ``ignore``: nodes every circuit has."""
    skip = set(ignore)
    steps = sorted(set(first) | set(second))
    a = {s: set(first.get(s, ())) for s in steps}
    b = {s: set(second.get(s, ())) for s in steps}
    moved: dict[str, dict[str, int]] = {}
    for component in sorted(set().union(*a.values()) - skip) if steps else ():
        only_first = [s for s in steps if component in a[s] and component not in b[s]]
        if not only_first:
            continue
        s1 = only_first[0]
        settled = [s for s in steps if s > s1
                   and all(component in b[t] and component not in a[t] for t in steps if t >= s)]
        if settled:
            moved[component] = {"first_at": s1, "moved_at": settled[0]}
    return moved
