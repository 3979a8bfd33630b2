"""What a timeline is, without torch: one :class:`Row` per (checkpoint step, task), the circuits,
and the analyses :func:`assemble` computes from them (stabilisation, in-context-loss change-point,
task pairs). The Celery job, the graph store and the API use this module; discovering the circuits
is :mod:`discovery.timeline.checkpoints`'s (torch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

from discovery.circuit import Circuit
from discovery.timeline.analysis import (
    change_point,
    jaccard,
    moved_components,
    overlap_over_time,
    stabilisation_step,
)
from discovery.timeline.run import Run


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


@dataclass(frozen=True)
class TimelineParams:
    """How every checkpoint's circuits are discovered (the same at each step, the same prompts
    too, so differences between steps are the model's): ``method`` ... ``seed`` as in
    :class:`discovery.discover.DiscoveryRequest`; ``level``: the edge Jaccard to the final circuit
    that counts as stable; ``induction``: also compute head scores and the in-context loss per
    checkpoint (None: when "induction" is among the tasks)."""

    method: str = "acdc"
    threshold: float = 0.01
    top_n: int | None = None
    metric: str | None = None
    n_prompts: int = 50
    seed: int = 0
    level: float = 0.8
    induction: bool | None = None

    def wants_induction(self, tasks: Sequence[str]) -> bool:
        return "induction" in tasks if self.induction is None else self.induction


@dataclass
class Timeline:
    """Everything a timeline found: one :class:`Row` and one :class:`Circuit` per (step, task),
    the stabilisation step per task (see :func:`analysis.stabilisation_step` with ``level``, on
    the edge Jaccard to the final circuit; ``stabilisation_nodes`` on the node Jaccard),
    induction diagnostics per step (when computed) and their in-context-loss change-point, and per
    pair of tasks the node overlap per step and the moved components."""

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
    #: the same on the node Jaccard: when the circuit's components settle (its edges may not)
    stabilisation_nodes: dict[str, int | None] = field(default_factory=dict)
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
            "stabilisation_nodes": dict(sorted(self.stabilisation_nodes.items())),
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
            stabilisation_nodes=dict(data.get("stabilisation_nodes", {})),  # absent before it existed
            induction={d["step"]: {k: v for k, v in d.items() if k != "step"} for d in data["induction"]},
            in_context_change_point=data["in_context_change_point"],
            pairs=list(data["pairs"]),
        )


def assemble(run: Run, tasks: Sequence[str], params: TimelineParams,
             circuits: Mapping[tuple[int, str], Circuit],
             diagnostics: Mapping[int, dict] | None = None) -> Timeline:
    """The timeline of ``run`` from its circuits (one per checkpoint step and task, however they
    were discovered: in one process or by several workers) and the induction diagnostics per step;
    every analysis computed here. ValueError naming the (step, task) when a circuit is missing."""
    tasks = tuple(tasks)
    missing = [(c.step, t) for c in run.checkpoints for t in tasks if (c.step, t) not in circuits]
    if missing:
        raise ValueError(f"circuits: none for (step, task) {missing[:5]}; discover every checkpoint's "
                         "circuit of every task first")
    final = run.checkpoints[-1].step
    rows = [_row(checkpoint, task, circuits[checkpoint.step, task], circuits[final, task])
            for checkpoint in run.checkpoints for task in tasks]
    diagnostics = dict(diagnostics or {})
    result = Timeline(run_dir=str(run.dir), tasks=tasks, method=params.method, threshold=params.threshold,
                      top_n=params.top_n, n_prompts=params.n_prompts, seed=params.seed, level=params.level,
                      rows=rows, circuits={(c.step, t): circuits[c.step, t] for c in run.checkpoints
                                           for t in tasks},
                      induction=diagnostics)
    # An empty final circuit is nothing to stabilise to (every empty step would match it).
    for name, column in (("stabilisation", "jaccard_edges"), ("stabilisation_nodes", "jaccard_nodes")):
        setattr(result, name, {t: stabilisation_step(result.series(t, column), level=params.level)
                               if circuits[final, t].edges else None for t in tasks})
    if diagnostics:
        result.in_context_change_point = change_point(
            [(s, d["in_context_loss"]) for s, d in sorted(diagnostics.items())])
    result.pairs = [pair_analysis(result, a, b) for a, b in combinations(tasks, 2)]
    return result


def _row(checkpoint: Any, task: str, circuit: Circuit, final: Circuit) -> Row:
    scores = checkpoint.eval.get(task, {})
    return Row(step=checkpoint.step, task=task, train_loss=checkpoint.train_loss,
               accuracy=scores.get("accuracy"), metric=scores.get("metric"),
               metric_mean=scores.get("metric_mean"), n_edges=len(circuit.edges), n_nodes=len(circuit.nodes),
               faithfulness_task=circuit.metrics.faithfulness_task,
               faithfulness_search=circuit.metrics.faithfulness_search,
               jaccard_edges=jaccard(edge_names(circuit), edge_names(final)),
               jaccard_nodes=jaccard(node_names(circuit), node_names(final)),
               nodes=tuple(sorted(node_names(circuit))), circuit_id=circuit.id)


def pair_analysis(result: Timeline, first: str, second: str) -> dict:
    """``{"first", "second", "overlap": [[step, node jaccard]], "moved": {c: {...}}}`` where
    ``moved`` goes both ways: ``first_to_second`` and ``second_to_first``
    (:func:`analysis.moved_components`)."""
    a, b = result.membership(first), result.membership(second)
    return {"first": first, "second": second,
            "overlap": [[s, j] for s, j in overlap_over_time(a, b)],
            "first_to_second": moved_components(a, b), "second_to_first": moved_components(b, a)}


def edge_names(circuit: Circuit) -> set[str]:
    return {e.name for e in circuit.edges}


def node_names(circuit: Circuit) -> set[str]:
    """Node names without neuron nodes (``m3.n12``): membership is at component level."""
    return {n.name for n in circuit.nodes if n.neuron is None}
