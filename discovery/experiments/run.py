"""One call from (model, tasks[, circuits]) to an :class:`Experiment`: what the workers run.

Stages (``stage(name)`` announces each, provenance times each): ``discovering`` (circuits not
given), ``ablation matrix`` (every set of every pair ablated, cross-task faithfulness),
``controls`` (random sets), ``conflicts`` (win rates, direct attribution, roles, the pairs'
summaries), ``dose-response``. ``progress(done, total)`` counts the planned evaluations (forward
passes; a cached repeat counts as done). Everything is seeded: the same request gives the same
numbers (only ``created_at`` and the timings differ)."""

from __future__ import annotations

import json
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import torch

from discovery.algorithms.base import Progress
from discovery.arch import GPT2Weights, UnsupportedModelError, graph_shape
from discovery.circuit import Circuit
from discovery.discover import DiscoveryRequest, _version, discover, model_weights
from discovery.discover import task_data as load_task_data
from discovery.experiments import conflicts as conflict_prompts
from discovery.experiments.ablate import Passes, conflict_runner, task_metric_name, task_runner
from discovery.experiments.conflict_batch import ConflictBatch, tokenize_conflicts
from discovery.experiments.context import Context
from discovery.experiments.dla import attribution, component_dla, conflict_summary, sign_flips
from discovery.experiments.dose import dose_response
from discovery.experiments.matrix import cells, cross_faithfulness, observe
from discovery.experiments.pairs import pair_summary
from discovery.experiments.result import Experiment, ExperimentProvenance, discovered_circuit_id, pair_key
from discovery.experiments.roles import component_roles
from discovery.experiments.sets import component_sets
from discovery.graph import Graph
from discovery.models import LoadedModel, load_model
from discovery.problem import Problem
from discovery.tasks.base import TaskData
from discovery.tasks.tokens import tokenize_task

ABLATIONS = ("corrupt", "mean", "zero")
MIN_CONTROLS = 20


@dataclass(frozen=True)
class ExperimentRequest:
    """What to run. ``tasks``: two or more built-in names or custom-task JSON paths;
    ``n_prompts`` pairs per built-in task (test split); ``n_controls`` random sets per ablation;
    ``alphas`` the dose-response grid; ``alpha_level`` every verdict's significance level;
    ``n_conflicts`` built-in conflict prompts per pair; ``method``/``threshold``/``metric``/
    ``ig_steps`` discover the circuits that are not given."""

    model: str
    tasks: tuple[str, ...]
    ablation: str = "corrupt"
    n_prompts: int = 50
    n_controls: int = 20
    seed: int = 0
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 4.0)
    alpha_level: float = 0.05
    n_conflicts: int = 50
    device: str = "auto"
    method: str = "acdc"
    threshold: float = 0.01
    metric: str | None = None
    ig_steps: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        if len(self.tasks) < 2 or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks: {list(self.tasks)}; give at least two different tasks")
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation: {self.ablation!r}; use one of {', '.join(ABLATIONS)}")
        if self.n_controls < MIN_CONTROLS:
            raise ValueError(f"n_controls: {self.n_controls}; give at least {MIN_CONTROLS} random "
                             "sets per ablation (fewer cannot reach p <= 0.05)")
        if self.n_prompts < 1 or self.n_conflicts < 1:
            raise ValueError("n_prompts and n_conflicts must be >= 1")
        if not 0 < self.alpha_level < 1:
            raise ValueError(f"alpha_level: {self.alpha_level}; give a level in (0, 1), e.g. 0.05")
        if not self.alphas or any(a < 0 for a in self.alphas) or len(set(self.alphas)) != len(self.alphas):
            raise ValueError(f"alphas: {list(self.alphas)}; give distinct scales >= 0")

    def canonical(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class CompeteResult:
    experiment: Experiment
    discovered: dict[str, Circuit]  # circuits the call discovered (task -> circuit), to store


class _Clock:
    """Per-stage wall time, and the stage callback."""

    def __init__(self, stage: Callable[[str], None] | None) -> None:
        self.timings: dict[str, float] = {}
        self._stage, self._name, self._since = stage, None, time.monotonic()

    def enter(self, name: str) -> None:
        self.close()
        self._name, self._since = name, time.monotonic()
        if self._stage is not None:
            self._stage(name)

    def announce(self, name: str) -> None:
        """Name a step within the current stage (not timed on its own)."""
        if self._stage is not None:
            self._stage(name)

    def close(self) -> None:
        if self._name is not None:
            self.timings[f"{self._name}_s"] = round(time.monotonic() - self._since, 3)
            self._name = None


def _check_circuit(i: int, task: str, circuit: Circuit, model: LoadedModel) -> None:
    where = f"circuits[{i}]"
    if circuit.provenance.model != model.name:
        raise ValueError(f"{where}: circuit {circuit.id} is of model {circuit.provenance.model!r}, not "
                         f"{model.name!r}; give circuits of the experiment's model")
    if circuit.provenance.model_sha256 and model.sha256 and circuit.provenance.model_sha256 != model.sha256:
        raise ValueError(f"{where}: circuit {circuit.id} was found on other weights of {model.name} "
                         "(model_sha256 differs); rediscover it or leave it out")
    if circuit.provenance.task != task:
        raise ValueError(f"{where}: circuit {circuit.id} is of task {circuit.provenance.task!r}, not "
                         f"{task!r}; give the circuits in the order of tasks")


def _pair_conflicts(request: ExperimentRequest, model: LoadedModel, a: str, b: str,
                    given: dict[str, tuple] | None) -> tuple[tuple, str, ConflictBatch]:
    """(prompts, source, their batch) of pair (a, b): the custom ones given, else built-in ones.
    Tokenised here, before any discovery, so bad prompts fail the experiment up front."""
    key = pair_key(a, b)
    if given and key in given:
        prompts, source = tuple(given[key]), "custom"
    elif conflict_prompts.has_generator(a, b):
        options = conflict_prompts.options_for_model(model.task_options)
        prompts = conflict_prompts.builtin_conflicts(a, b, request.n_conflicts, seed=request.seed,
                                                     options=options)
        source = f"builtin:{conflict_prompts.generator_for(a, b).name}"
    else:
        prompts, source = (), ""
    if source:
        batch = tokenize_conflicts(prompts, model.tokenizer, n_ctx=model.n_ctx, tasks=(a, b),
                                   where=f"conflicts[{key!r}]")
        return prompts, source, batch
    known = ", ".join(" x ".join(k) for k in conflict_prompts.GENERATORS)
    raise ValueError(f"conflicts[{key!r}]: no conflict prompts for {a} x {b}; give custom ones "
                     f'(a list of {{"prompt", "answers": {{"{a}": ..., "{b}": ...}}}}) or use a pair '
                     f"with a built-in generator ({known})")


def _plan(request: ExperimentRequest, pairs: list, sets: dict) -> int:
    n, total = request.n_controls, 2 * len(request.tasks) + len(request.tasks) ** 2
    for a, b in pairs:
        s = sets[pair_key(a, b)]
        members = len(set(s.nodes[a]) | set(s.nodes[b]))
        total += 10 * len(request.tasks) * (1 + n) + 1 + members * 3 * (1 + n) + 2 * (1 + n) + 2 * len(request.alphas) * 3
    return total


def compete(request: ExperimentRequest, *, circuits: dict[str, Circuit] | None = None,
            model: LoadedModel | None = None, task_data: dict[str, TaskData] | None = None,
            conflicts: dict[str, tuple] | None = None, progress: Progress | None = None,
            stage: Callable[[str], None] | None = None,
            experiment_id: str | None = None) -> CompeteResult:
    """Run ``request``: circuits (given, keyed by task, or discovered), then every table.
    ``task_data``: the tasks' pairs (custom tasks inline), keyed by the entries of
    ``request.tasks``; ``conflicts``: custom conflict prompts per pair key ``"a|b"``."""
    clock = _Clock(stage)
    given_ids = sorted(c.id for c in (circuits or {}).values())
    experiment_id = experiment_id or str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                    f"{request.canonical()}/{given_ids}"))
    model = model or load_model(request.model, device=request.device)
    given_data = task_data or {}
    data = {t: given_data.get(t) or load_task_data(t, model, request.n_prompts, request.seed)
            for t in request.tasks}
    tasks = tuple(d.name for d in data.values())
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks: {list(tasks)} name the same task twice; give different tasks")
    by_name = dict(zip(tasks, data.values(), strict=True))
    pairs = [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1:]]
    batches = {pair_key(a, b): _pair_conflicts(request, model, a, b, conflicts) for a, b in pairs}
    circuits = _circuits(request, model, by_name, dict(zip(tasks, request.tasks, strict=True)),
                         circuits or {}, experiment_id, progress, clock)
    discovered, circuits = circuits
    passes = Passes(progress=progress)
    ctx = _context(request, model, by_name, circuits, passes)
    sets = {pair_key(a, b): component_sets(a, b, circuits[a], circuits[b]) for a, b in pairs}
    passes.total = _plan(request, pairs, sets)

    clock.enter("ablation matrix")
    if progress is not None:  # the count starts afresh after discovery's own
        progress(0, passes.total)
    for s in sets.values():
        observe(ctx, s)
    cross = cross_faithfulness(ctx)
    clock.enter("controls")
    all_cells = [c for s in sets.values() for c in cells(ctx, s)]
    clock.enter("conflicts")
    summaries, roles, pair_rows, runners = [], [], [], {}
    for a, b in pairs:
        key = pair_key(a, b)
        _, source, batch = batches[key]
        runner, clean = conflict_runner(ctx.weights, ctx.graph, batch, (a, b), _conflict_ablation(request),
                                        passes)
        runners[key] = runner
        summaries.append(conflict_summary(key, source, runner.full(), a, b, _conflict_ablation(request)))
        att = attribution(ctx.weights, clean, runner.last, batch.answer[a].to(clean.device),
                          batch.answer[b].to(clean.device))
        names = sorted(set(sets[key].nodes[a]) | set(sets[key].nodes[b]))
        dla = {k: v.cpu() for k, v in component_dla(ctx.weights, ctx.graph, att, names).items()}
        flips = sign_flips(len(batch.prompts), f"{request.seed}/{key}/dla")
        roles += component_roles(ctx, sets[key], runner, dla, flips)
        pair_rows.append(pair_summary(ctx, sets[key], runner, all_cells))
    clock.enter("dose-response")
    dose = [dose_response(ctx, sets[pair_key(a, b)], runners[pair_key(a, b)], t)
            for a, b in pairs for t in (a, b)]
    clock.close()
    if progress is not None:
        progress(passes.total, passes.total)
    experiment = Experiment(
        id=experiment_id, model=model.name, tasks=tasks,
        circuits={t: circuits[t].id for t in tasks}, ablation=request.ablation, seed=request.seed,
        n_controls=request.n_controls, alphas=request.alphas, n_prompts=request.n_prompts,
        alpha_level=request.alpha_level,
        params={"method": request.method, "threshold": request.threshold, "metric": request.metric,
                "ig_steps": request.ig_steps, "n_conflicts": request.n_conflicts,
                "task_metrics": dict(ctx.metrics), "conflict_sources": {k: v[1] for k, v in batches.items()},
                "conflict_ablation": _conflict_ablation(request),
                "discovered": sorted(discovered)},
        sets=tuple(sets.values()), ablations=tuple(all_cells), cross=tuple(cross),
        conflicts=tuple(summaries), components=tuple(roles), dose=tuple(dose), pairs=tuple(pair_rows),
        provenance=ExperimentProvenance(
            model_sha256=model.sha256, dataset_hashes={t: by_name[t].dataset_hash for t in tasks},
            conflict_hashes={k: conflict_prompts.conflicts_hash(v[0]) for k, v in batches.items()},
            versions={"torch": torch.__version__, "circuit_atlas": _version("circuit-atlas"),
                      "python": platform.python_version()},
            device=str(model.device), timings=clock.timings, forward_passes=passes.forward,
            created_at=datetime.now(UTC).isoformat()),
    )
    return CompeteResult(experiment=experiment, discovered=discovered)


def _conflict_ablation(request: ExperimentRequest) -> str:
    """Conflict prompts have no corrupted twins: mean ablation, unless the experiment zero-ablates."""
    return "zero" if request.ablation == "zero" else "mean"


def _circuits(request, model, data, specs, given, experiment_id, progress, clock):
    """(discovered, all circuits keyed by task name): check the given ones, discover the rest."""
    circuits, discovered = {}, {}
    for i, task in enumerate(data):
        circuit = given.get(task) or given.get(specs[task])
        if circuit is not None:
            _check_circuit(i, task, circuit, model)
            circuits[task] = circuit
    unknown = set(given) - set(data) - set(specs.values())
    if unknown:
        raise ValueError(f"circuits: given for {sorted(unknown)}, which are not tasks of the experiment "
                         f"({', '.join(data)})")
    missing = [t for t in data if t not in circuits]
    if missing:
        clock.enter("discovering")
    for i, task in enumerate(missing):
        clock.announce(f"discovering {task} ({i + 1}/{len(missing)})")  # each search counts afresh
        found = discover(DiscoveryRequest(
            model=request.model, task=specs[task], method=request.method, threshold=request.threshold,
            metric=request.metric, ablation=request.ablation, n_prompts=request.n_prompts,
            seed=request.seed, device=request.device, ig_steps=request.ig_steps),
            progress=progress, model=model, data=data[task])
        found = replace(found, id=discovered_circuit_id(experiment_id, task))
        circuits[task] = discovered[task] = found
    return discovered, circuits


def _context(request, model, data, circuits, passes) -> Context:
    """One runner per task on its own prompts and ablation, sharing one copy of the weights."""
    weights = model_weights(model)  # read once, as discovery reads them
    if not isinstance(weights, GPT2Weights):
        # Direct attribution reads GPT-2's final LayerNorm; discovery itself supports more.
        raise UnsupportedModelError(
            f"competition experiments support GPT-2-architecture models for now; {model.name} is "
            f"{model.architecture} (discover its circuits with circuits discover meanwhile)")
    graph = Graph(graph_shape(weights, mlp=not model.attn_only))
    metrics, runners = {}, {}
    for task, d in data.items():
        metrics[task] = task_metric_name(d.metric)
        batch = tokenize_task(d, model.tokenizer, n_ctx=model.n_ctx).to(model.device)
        problem = Problem.build(weights, graph, batch, metric=metrics[task], ablation=request.ablation)
        runners[task] = task_runner(problem, passes)
    return Context(weights=weights, graph=graph, tasks=tuple(data), runners=runners, metrics=metrics,
                   circuits=circuits, seed=request.seed, n_controls=request.n_controls,
                   alpha_level=request.alpha_level, alphas=request.alphas, passes=passes)
