"""One call from (model, task, method) to a :class:`~discovery.circuit.Circuit` with its metrics
and provenance: what the CLI and the workers run."""

from __future__ import annotations

import platform
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from discovery.algorithms import AlgorithmConfig, get_algorithm
from discovery.algorithms.base import Progress
from discovery.circuit import Circuit, GraphShape, Node
from discovery.evaluate import evaluate
from discovery.graph import Graph
from discovery.models import LoadedModel, load_model
from discovery.patching import GPT2Weights
from discovery.problem import Problem
from discovery.tasks import get_task
from discovery.tasks.base import TaskData
from discovery.tasks.custom import load_custom_task
from discovery.tasks.tokens import tokenize_task


@dataclass(frozen=True)
class DiscoveryRequest:
    """What to discover. ``metric`` None means KL (ACDC's default) for ACDC, the task's metric for
    attribution methods."""

    model: str
    task: str  # a built-in task name or a path to a custom-task JSON file
    method: str = "acdc"
    threshold: float = 0.01
    top_n: int | None = None
    metric: str | None = None
    ablation: str = "corrupt"
    n_prompts: int = 50
    seed: int = 0
    device: str = "auto"
    ig_steps: int = 5
    granularity: str = "edges"  # or "neurons": also find the neurons of each MLP in the circuit
    neuron_share: float = 0.9
    algorithm: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.granularity not in ("edges", "neurons"):
            raise ValueError(f"granularity must be edges or neurons, got {self.granularity!r}")
        if self.n_prompts < 1:
            raise ValueError(f"n_prompts must be >= 1, got {self.n_prompts}")

    def config(self) -> AlgorithmConfig:
        return AlgorithmConfig(threshold=self.threshold, top_n=self.top_n, ig_steps=self.ig_steps,
                               **self.algorithm)


def task_data(task: str, model: LoadedModel | None, n: int, seed: int) -> TaskData:
    """A custom task from its JSON file, or ``n`` held-out pairs of a built-in task (drawn with the
    model's task options, e.g. a narrower word pool, when a model is given)."""
    if task.endswith(".json") or Path(task).exists():
        return load_custom_task(Path(task))
    options = model.task_options.get(task) if model is not None else None
    return get_task(task).generate(n, seed=seed, split="test", options=options)


def build_problem(model: LoadedModel, data: TaskData, *, metric: str, ablation: str) -> Problem:
    cfg = model.bridge.cfg
    graph = Graph(GraphShape(cfg.n_layers, cfg.n_heads, mlp=not model.attn_only))
    weights = GPT2Weights.from_hf(model.bridge.original_model)
    batch = tokenize_task(data, model.tokenizer, n_ctx=model.n_ctx).to(model.device)
    return Problem.build(weights, graph, batch, metric=metric, ablation=ablation)  # type: ignore[arg-type]


def discover(request: DiscoveryRequest, *, progress: Progress | None = None,
             model: LoadedModel | None = None, data: TaskData | None = None) -> Circuit:
    """Run ``request`` and return the circuit, evaluated on the same prompts. ``model``: an
    already loaded model (a worker's cache); ``data``: the task's pairs (an inline custom task)."""
    algorithm = get_algorithm(request.method)
    config = request.config()
    if data is None and not (request.task.endswith(".json") or Path(request.task).exists()):
        get_task(request.task)  # an unknown task fails here, before a model is loaded
    started = time.monotonic()
    model = model or load_model(request.model, device=request.device)
    data = data or task_data(request.task, model, request.n_prompts, request.seed)
    default_metric = "kl" if request.method.startswith("acdc") else data.metric
    problem = build_problem(model, data, metric=request.metric or default_metric,
                            ablation=request.ablation)
    prepared = time.monotonic()
    result = algorithm(problem, config, progress)
    searched = time.monotonic()
    evaluation = evaluate(problem, result.mask.to(problem.ablation.device))
    graph = problem.graph
    kept = result.mask.nonzero().tolist()
    edges = tuple(graph.edge(u, k, _score(result.scores[u, k])) for u, k in kept)
    names = {e.src for e in edges} | {e.dst for e in edges}
    neuron_nodes = _neurons(problem, result.mask, names, request) if request.granularity == "neurons" else ()
    scores = {graph.edge(u, k).name: _score(result.scores[u, k])
              for u, k in graph.valid().nonzero().tolist()}
    return Circuit(
        id=str(uuid.uuid4()),
        nodes=tuple(Node.parse(n) for n in sorted(names)) + neuron_nodes,
        edges=edges,
        metrics=evaluation.as_metrics(),
        provenance=_provenance(request, model, data, problem, timings={
            "prepare_s": prepared - started, "search_s": searched - prepared,
            "evaluate_s": time.monotonic() - searched}, stats=result.stats),
        graph=graph.shape,
        edge_scores={k: v for k, v in scores.items() if v is not None},
    )


def _neurons(problem: Problem, mask: torch.Tensor, names: set[str], request: DiscoveryRequest) -> tuple:
    """Neuron nodes ``m{L}.n{i}`` for every MLP in the circuit."""
    from discovery.neurons import neuron_circuit

    found = []
    for name in sorted(n for n in names if n.startswith("m")):
        layer = int(name[1:])
        kept = neuron_circuit(problem, mask.to(problem.ablation.device), layer, share=request.neuron_share)
        found += [Node.parse(f"m{layer}.n{i}", score=s) for i, s in zip(kept.neurons, kept.scores, strict=True)]
    return tuple(found)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def _score(value: torch.Tensor) -> float | None:
    v = float(value)
    return None if v != v else v  # NaN: not scored


def _provenance(request, model, data, problem, *, timings, stats):
    from discovery.circuit import Provenance

    return Provenance(
        model=model.name, task=data.name, method=request.method, model_sha256=model.sha256,
        dataset_hash=data.dataset_hash, threshold=request.threshold,
        params={"metric": problem.metric, "ablation": request.ablation, "top_n": request.top_n,
                "n_prompts": len(data.pairs), "ig_steps": request.ig_steps,
                "edges_total": problem.graph.n_edges, **{k: float(v) for k, v in stats.items()}},
        seed=request.seed, device=str(model.device),
        versions={"torch": torch.__version__, "transformer_lens": _version("transformer-lens"),
                  "circuit_atlas": _version("circuit-atlas"), "python": platform.python_version()},
        timings={k: round(v, 3) for k, v in timings.items()},
        created_at=datetime.now(UTC).isoformat(),
    )
