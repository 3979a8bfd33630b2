"""Circuits over training: discover each task's circuit at every checkpoint of a run and line up,
per step, the loss, the task scores, the circuit's size and faithfulness, its overlap with the
final circuit and its membership; with induction diagnostics and pairs of tasks on top.

The library half of issue 14 (the Celery job, Neo4j storage and REST come later and store
:meth:`Timeline.to_dict`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from discovery.circuit import Circuit
from discovery.discover import DiscoveryRequest, discover
from discovery.models import load_model
from discovery.timeline.analysis import (
    change_point,
    jaccard,
    moved_components,
    overlap_over_time,
    stabilisation_step,
)
from discovery.timeline.induction import induction_diagnostics
from discovery.timeline.run import read_run

#: (done, total, message) after each discovered circuit
TimelineProgress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Row:
    """One (checkpoint step, task): the run's numbers at that step and the discovered circuit's.
    ``accuracy``/``metric_mean`` come from the checkpoint's held-out eval (None when it has none
    for the task); ``faithfulness_*`` from the circuit's metrics; ``jaccard_*`` to the final
    checkpoint's circuit of the same task; ``nodes`` the circuit's node names (membership)."""

    step: int
    task: str
    train_loss: float | None
    accuracy: float | None
    metric: str | None
    metric_mean: float | None
    n_edges: int
    n_nodes: int
    faithfulness_task: float | None
    faithfulness_search: float | None
    jaccard_edges: float
    jaccard_nodes: float
    nodes: tuple[str, ...]
    circuit_id: str


@dataclass
class Timeline:
    """Everything :func:`timeline` found: one :class:`Row` and one :class:`Circuit` per
    (step, task), the stabilisation step per task (see :func:`analysis.stabilisation_step` with
    ``level``), induction diagnostics per step (when computed) and their in-context-loss
    change-point, and per pair of tasks the node overlap per step and the moved components."""

    run_dir: str
    tasks: tuple[str, ...]
    method: str
    threshold: float
    top_n: int | None
    n_prompts: int
    seed: int
    level: float
    rows: list[Row]
    circuits: dict[tuple[int, str], Circuit] = field(default_factory=dict)
    stabilisation: dict[str, int | None] = field(default_factory=dict)
    induction: dict[int, dict] = field(default_factory=dict)
    in_context_change_point: int | None = None
    pairs: list[dict] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        return sorted({r.step for r in self.rows})

    def row(self, step: int, task: str) -> Row:
        return next(r for r in self.rows if r.step == step and r.task == task)

    def membership(self, task: str) -> dict[int, set[str]]:
        """``{step: node names of the task's circuit}``."""
        return {r.step: set(r.nodes) for r in self.rows if r.task == task}

    def series(self, task: str, column: str) -> list[tuple[int, Any]]:
        """``[(step, row.column)]`` for one task, ascending."""
        return [(r.step, getattr(r, column)) for r in sorted(self.rows, key=lambda r: r.step)
                if r.task == task]

    def joined(self, task: str, component: str) -> int | None:
        """The first step at which ``component`` (e.g. ``a1.h0``) is in the task's circuit."""
        return next((s for s, nodes in sorted(self.membership(task).items()) if component in nodes),
                    None)

    def to_dict(self) -> dict:
        """JSON-able and stable (sorted keys where the order carries no meaning; lists by step)."""
        return {
            "version": 1,
            "run_dir": self.run_dir, "tasks": list(self.tasks), "method": self.method,
            "threshold": self.threshold, "top_n": self.top_n, "n_prompts": self.n_prompts, "seed": self.seed,
            "level": self.level,
            "rows": [{**asdict(r), "nodes": list(r.nodes)} for r in self.rows],
            "circuits": [{"step": s, "task": t, "circuit": c.to_dict()}
                         for (s, t), c in sorted(self.circuits.items())],
            "stabilisation": dict(sorted(self.stabilisation.items())),
            "induction": [{"step": s, **d} for s, d in sorted(self.induction.items())],
            "in_context_change_point": self.in_context_change_point,
            "pairs": self.pairs,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Timeline:
        if data.get("version") != 1:
            raise ValueError(f"timeline version must be 1, got {data.get('version')!r}")
        return cls(
            run_dir=data["run_dir"], tasks=tuple(data["tasks"]), method=data["method"],
            threshold=data["threshold"], top_n=data["top_n"], n_prompts=data["n_prompts"], seed=data["seed"],
            level=data["level"],
            rows=[Row(**{**r, "nodes": tuple(r["nodes"])}) for r in data["rows"]],
            circuits={(c["step"], c["task"]): Circuit.from_dict(c["circuit"]) for c in data["circuits"]},
            stabilisation=dict(data["stabilisation"]),
            induction={d["step"]: {k: v for k, v in d.items() if k != "step"} for d in data["induction"]},
            in_context_change_point=data["in_context_change_point"],
            pairs=list(data["pairs"]),
        )


def timeline(run_dir: str | Path, tasks: list[str] | tuple[str, ...], *, method: str = "acdc",
             threshold: float = 0.01, top_n: int | None = None, metric: str | None = None,
             n_prompts: int = 50, seed: int = 0, level: float = 0.8,
             induction: bool | None = None, device: str = "cpu",
             progress: TimelineProgress | None = None) -> Timeline:
    """Discover each of ``tasks``' circuits at every checkpoint of the run in ``run_dir`` and
    analyse them (see :class:`Timeline`). ``method``, ``threshold``, ``top_n``, ``metric``,
    ``n_prompts`` and ``seed`` are those of :class:`DiscoveryRequest`, the same at every checkpoint
    (the same prompts too), so differences between steps are the model's. ``level``: the edge
    Jaccard to the final circuit that counts as stable. ``induction``: also compute the head scores and
    in-context loss per checkpoint (default: when "induction" is among the tasks). Each
    checkpoint's model is loaded once for all its tasks."""
    if not tasks:
        raise ValueError("tasks is empty: name at least one task, e.g. ['induction']")
    tasks = tuple(tasks)
    run = read_run(run_dir)
    induction = "induction" in tasks if induction is None else induction
    total, done = len(run.checkpoints) * len(tasks), 0
    circuits: dict[tuple[int, str], Circuit] = {}
    diagnostics: dict[int, dict] = {}
    for checkpoint in run.checkpoints:
        model = load_model(str(checkpoint.path), device=device)
        for task in tasks:
            request = DiscoveryRequest(model=str(checkpoint.path), task=task, method=method,
                                       threshold=threshold, top_n=top_n, metric=metric,
                                       n_prompts=n_prompts, seed=seed, device=device)
            circuits[checkpoint.step, task] = discover(request, model=model)
            done += 1
            if progress:
                progress(done, total, f"step {checkpoint.step} {task}")
        if induction:
            diagnostics[checkpoint.step] = induction_diagnostics(model, seed=seed)
    final = run.checkpoints[-1].step
    rows = []
    for checkpoint in run.checkpoints:
        for task in tasks:
            c, f = circuits[checkpoint.step, task], circuits[final, task]
            scores = checkpoint.eval.get(task, {})
            rows.append(Row(
                step=checkpoint.step, task=task, train_loss=checkpoint.train_loss,
                accuracy=scores.get("accuracy"), metric=scores.get("metric"),
                metric_mean=scores.get("metric_mean"), n_edges=len(c.edges), n_nodes=len(c.nodes),
                faithfulness_task=c.metrics.faithfulness_task,
                faithfulness_search=c.metrics.faithfulness_search,
                jaccard_edges=jaccard(_edges(c), _edges(f)), jaccard_nodes=jaccard(_nodes(c), _nodes(f)),
                nodes=tuple(sorted(_nodes(c))), circuit_id=c.id))
    result = Timeline(run_dir=str(run.dir), tasks=tasks, method=method, threshold=threshold,
                      top_n=top_n, n_prompts=n_prompts, seed=seed, level=level, rows=rows, circuits=circuits,
                      induction=diagnostics)
    result.stabilisation = {t: stabilisation_step(result.series(t, "jaccard_edges"), level=level)
                            for t in tasks}
    if diagnostics:
        result.in_context_change_point = change_point(
            [(s, d["in_context_loss"]) for s, d in sorted(diagnostics.items())])
    result.pairs = [pair_analysis(result, a, b) for a, b in combinations(tasks, 2)]
    return result


def pair_analysis(result: Timeline, first: str, second: str) -> dict:
    """``{"first", "second", "overlap": [[step, node jaccard]], "moved": {c: {...}}}`` where
    ``moved`` goes both ways: ``first_to_second`` and ``second_to_first``
    (:func:`analysis.moved_components`)."""
    a, b = result.membership(first), result.membership(second)
    return {"first": first, "second": second,
            "overlap": [[s, j] for s, j in overlap_over_time(a, b)],
            "first_to_second": moved_components(a, b), "second_to_first": moved_components(b, a)}


def _edges(circuit: Circuit) -> set[str]:
    return {e.name for e in circuit.edges}


def _nodes(circuit: Circuit) -> set[str]:
    """Node names without neuron nodes (``m3.n12``): membership is at component level."""
    return {n.name for n in circuit.nodes if n.neuron is None}
