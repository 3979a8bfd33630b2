"""Faithfulness curves (MIB 2025): a method's circuit is its edges ranked by score; keep the top
fraction ``x`` of the graph's edges for each ``x`` of a ladder (MIB's 0.1% ... 100%), measure the
faithfulness f(x) = (m(C_x) - m(empty)) / (m(full) - m(empty)) of each, and integrate:

- CPR (circuit performance ratio, higher is better): the area under f over x;
- CMD (circuit-model distance, lower is better): the area under |1 - f(x)|;

both by the trapezoid rule over x as a fraction of the ladder's last point (MIB's x is the share of
edges, linear, not log). The integrals are torch-free (:func:`cpr`, :func:`cmd`); measuring a curve
(:func:`faithfulness_curve`) runs the patched model once per point."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

#: MIB's ladder: the share of the graph's edges kept at each point.
MIB_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """``fractions`` ascending, distinct, in (0, 1]; ValueError naming the first bad one."""
    out = tuple(float(x) for x in fractions)
    if len(out) < 2:
        raise ValueError(f"fractions: give at least two points to integrate over, got {list(out)}")
    for i, x in enumerate(out):
        if not 0 < x <= 1:
            raise ValueError(f"fractions[{i}] = {x}: each must be in (0, 1] (a share of the edges)")
        if i and x <= out[i - 1]:
            raise ValueError(f"fractions[{i}] = {x}: must be larger than fractions[{i - 1}] = {out[i - 1]}")
    return out


def area(fractions: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area of ``values`` over ``fractions`` scaled so that the last fraction is 1."""
    xs = check_fractions(fractions)
    if len(values) != len(xs):
        raise ValueError(f"values: {len(values)} for {len(xs)} fractions; give one per fraction")
    last = xs[-1]
    return sum((xs[i + 1] - xs[i]) / last * (values[i] + values[i + 1]) / 2 for i in range(len(xs) - 1))


def cpr(fractions: Sequence[float], faithfulness: Sequence[float]) -> float:
    """Area under the faithfulness curve (MIB's CPR; higher is better)."""
    return area(fractions, faithfulness)


def cmd(fractions: Sequence[float], faithfulness: Sequence[float]) -> float:
    """Area under |1 - faithfulness| (MIB's CMD; lower is better, 0 for a perfect curve)."""
    return area(fractions, [abs(1.0 - f) for f in faithfulness])


@dataclass(frozen=True)
class CurvePoint:
    """One point: the share of edges asked for, the edges kept, the circuit's metric and faithfulness."""

    fraction: float
    n_edges: int
    metric: float
    faithfulness: float | None


@dataclass(frozen=True)
class Curve:
    """A faithfulness curve of one ranking of edges on one task; ``metric`` the task metric,
    ``full``/``empty`` its value for the whole model and the empty circuit."""

    points: tuple[CurvePoint, ...]
    metric: str
    full: float
    empty: float

    @property
    def fractions(self) -> list[float]:
        return [p.fraction for p in self.points]

    def _faithfulness(self) -> list[float]:
        values = [p.faithfulness for p in self.points]
        if any(v is None for v in values):  # m(full) == m(empty): nothing to recover
            raise ValueError("faithfulness is undefined (the full model and the empty circuit score "
                             "the same on this task's metric), so CPR and CMD are too")
        return values  # type: ignore[return-value]

    @property
    def cpr(self) -> float:
        return cpr(self.fractions, self._faithfulness())

    @property
    def cmd(self) -> float:
        return cmd(self.fractions, self._faithfulness())

    def to_dict(self) -> dict:
        """JSON-ready: what :attr:`discovery.circuit.Circuit.curve` holds (cpr/cmd None when
        faithfulness is undefined)."""
        defined = all(p.faithfulness is not None for p in self.points)
        return {"metric": self.metric, "full": self.full, "empty": self.empty,
                "points": [asdict(p) for p in self.points],
                "cpr": self.cpr if defined else None, "cmd": self.cmd if defined else None}

    @classmethod
    def from_dict(cls, data: Mapping) -> Curve:
        return cls(points=tuple(CurvePoint(**p) for p in data["points"]), metric=data["metric"],
                   full=data["full"], empty=data["empty"])


def kept_edges(n_edges: int, fraction: float) -> int:
    """How many edges the share ``fraction`` keeps: at least one, rounded to the nearest."""
    return max(1, min(n_edges, round(fraction * n_edges)))


def faithfulness_curve(problem, scores: Mapping[str, float],  # noqa: ANN001 - discovery.problem.Problem
                       fractions: Sequence[float] = MIB_FRACTIONS, *, metric: str | None = None) -> Curve:
    """The curve of ``scores`` (edge name -> score, e.g. a circuit's ``edge_scores``; ranked by
    absolute value, ties by name so the ranking is reproducible) on ``problem``: at each fraction the
    top edges of the graph's valid edges (unscored edges rank last), evaluated with everything else
    ablated. ``metric``: the task metric by default."""
    import torch

    from discovery.circuit import Metrics
    from discovery.evaluate import metric_of

    xs = check_fractions(fractions)
    graph, metric = problem.graph, metric or problem.batch.data.metric
    once = graph.edge_valid()  # each graph edge once (a tie set at its first input)
    edges = {graph.edge(u, k).name: (u, k) for u, k in graph.edges_in_order() if once[u, k]}
    ranked = sorted(edges, key=lambda n: (n not in scores, -abs(scores.get(n, 0.0)), n))
    rows = torch.tensor([edges[n][0] for n in ranked])
    cols = torch.tensor([edges[n][1] for n in ranked])
    valid = graph.valid()
    full, empty = metric_of(problem, valid, metric), metric_of(problem, torch.zeros_like(valid), metric)
    points = []
    for x in xs:
        keep = kept_edges(len(ranked), x)
        mask = torch.zeros_like(once)
        mask[rows[:keep], cols[:keep]] = True
        mask = graph.tie_mask(mask) & valid  # a grouped k/v edge stands for every input of its group
        value = metric_of(problem, mask, metric)
        points.append(CurvePoint(fraction=x, n_edges=keep, metric=value,
                                 faithfulness=Metrics(full=full, empty=empty, circuit=value,
                                                      name=metric).faithfulness))
    return Curve(points=tuple(points), metric=metric, full=full, empty=empty)


def held_out_curve(model, request, scores: Mapping[str, float],  # noqa: ANN001 - LoadedModel, DiscoveryRequest
                   fractions: Sequence[float] = MIB_FRACTIONS) -> Curve:
    """The curve of ``scores`` (a circuit's ``edge_scores``) found by ``request`` on ``model``,
    measured on prompts the search did not see (drawn with ``request.seed + 1``), under the task's
    metric and the request's ablation, at ``fractions``."""
    from discovery.discover import build_problem, task_data

    xs = check_fractions(fractions)
    data = task_data(request.task, model, request.n_prompts, request.seed + 1)
    problem = build_problem(model, data, metric=data.metric, ablation=request.ablation,
                            dtype=request.dtype, kv_inputs=request.kv_inputs)
    return faithfulness_curve(problem, scores, xs)
