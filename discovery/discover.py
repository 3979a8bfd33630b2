"""One call from (model, task, method) to a :class:`~discovery.circuit.Circuit` with its metrics
and provenance: what the CLI and the workers run."""

from __future__ import annotations

import platform
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from discovery.algorithms import AlgorithmConfig, AlgorithmResult, get_algorithm
from discovery.algorithms.base import Progress
from discovery.arch import graph_shape, read_saved_weights, read_weights
from discovery.circuit import Circuit, Node
from discovery.evaluate import evaluate
from discovery.graph import Graph
from discovery.models import LoadedModel, load_model
from discovery.orders import check_order, describe, order_sha256
from discovery.problem import Problem
from discovery.prune import prune_edges
from discovery.tasks import get_task
from discovery.tasks.base import TaskData
from discovery.tasks.custom import load_custom_task
from discovery.tasks.tokens import tokenize_task, tokenizer_sha256

#: Methods that decide edges one at a time, so that the order they visit them in
#: (DiscoveryRequest.edge_order, discovery.orders) is part of the result; each maps to what it
#: adds to the order's description. Methods missing here score every edge at once.
EDGE_ORDERS: dict[str, str] = {"acdc": "", "acdc-reference": "",
                               "eap-ig+acdc": ", over the EAP-IG candidates only"}
#: ``--dtype`` names -> the dtype the weights, node outputs and passes run in. Metrics, KL and
#: EAP's gradients accumulate in fp32 whatever this is (discovery.problem, attribution).
#: ``--kv-inputs`` choices (DiscoveryRequest.kv_inputs)
KV_INPUTS = ("head", "group")
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}


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
    dtype: str = "float32"  # one of DTYPES: what the weights are read in and the passes run in
    #: bytes one batched pass may use (EAP-IG's steps * B rows, ACDC's variants); None: half the
    #: memory available when the search starts (discovery.memory)
    max_batch_memory: int | None = None
    #: grouped-query attention: "head" (default, MIB-compatible) gives every query head its own k
    #: and v inputs; "group" one k and one v input per key-value group (node a{L}.kv{G}). On a
    #: model without GQA "group" is the identity grouping (G = n_heads: one group per head).
    kv_inputs: str = "head"
    #: ACDC's edge order (discovery.orders): ours, auto-circuit or random:SEED
    edge_order: str = "ours"

    def __post_init__(self) -> None:
        check_order(self.edge_order)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.granularity not in ("edges", "neurons"):
            raise ValueError(f"granularity must be edges or neurons, got {self.granularity!r}")
        if self.kv_inputs not in KV_INPUTS:
            raise ValueError(f"kv_inputs must be one of {', '.join(KV_INPUTS)}, got {self.kv_inputs!r}")
        if self.n_prompts < 1:
            raise ValueError(f"n_prompts must be >= 1, got {self.n_prompts}")

    def config(self) -> AlgorithmConfig:
        return AlgorithmConfig(threshold=self.threshold, top_n=self.top_n, ig_steps=self.ig_steps,
                               **{"max_batch_memory": self.max_batch_memory,
                                  "edge_order": self.edge_order, **self.algorithm})


def task_data(task: str, model: LoadedModel | None, n: int, seed: int) -> TaskData:
    """A custom task from its JSON file, or ``n`` held-out pairs of a built-in task (drawn with the
    model's task options, e.g. a narrower word pool, when a model is given)."""
    if task.endswith(".json") or Path(task).exists():
        return load_custom_task(Path(task))
    options = model.task_options.get(task) if model is not None else None
    return get_task(task).generate(n, seed=seed, split="test", options=options)


def hf_model_of(model: LoadedModel):  # noqa: ANN201 - a transformers PreTrainedModel
    """The loaded model's ``transformers`` model (what the patched forward reads)."""
    return getattr(model, "hf_model", None) or model.bridge.original_model


def model_weights(model: LoadedModel, dtype: str = "float32"):  # noqa: ANN201 - a discovery.arch.Weights
    """The patched forward's weights in ``dtype`` (a :data:`DTYPES` name): straight from the saved
    safetensors where the architecture has a reader and the ``transformers`` model was not built
    anyway (start-up time), else from it. Not fp32 and not built yet, the ``transformers`` model
    is loaded in ``dtype`` for the read and not kept, so no fp32 copy of the model stays."""
    torch_dtype = DTYPES[dtype]
    if model.path is not None and not model.hf_model_loaded:
        saved = read_saved_weights(model.path, model.config, model.device_name)
        if saved is not None:
            return cast_weights(saved, torch_dtype)
    if torch_dtype != torch.float32 and not model.hf_model_loaded and getattr(model, "ref", ""):
        from discovery.models import _load_hf_model

        return read_weights(_load_hf_model(model.ref, model.architecture, model.device_name, torch_dtype))
    # UnsupportedModelError names the supported ones
    return cast_weights(read_weights(hf_model_of(model)), torch_dtype)


def cast_weights(weights, dtype: torch.dtype):  # noqa: ANN001, ANN201 - a discovery.arch.Weights
    """``weights`` with every floating-point tensor field in ``dtype`` (each converted once; the
    same object, untouched, when already so). Integer tensors and non-tensors stay as they are."""
    changes = {f.name: value.to(dtype) for f in fields(weights)
               if isinstance(value := getattr(weights, f.name), torch.Tensor)
               and value.is_floating_point() and value.dtype != dtype}
    return replace(weights, **changes) if changes else weights


def build_problem(model: LoadedModel, data: TaskData, *, metric: str, ablation: str,
                  dtype: str = "float32", kv_inputs: str = "head") -> Problem:
    """The problem of ``data`` on ``model``, its weights and node outputs in ``dtype``; with
    ``kv_inputs`` "group" the graph has one k/v input per key-value group."""
    weights = model_weights(model, dtype)  # UnsupportedModelError names the class and the supported ones
    shape = graph_shape(weights, mlp=not model.attn_only)
    if kv_inputs == "group":
        shape = replace(shape, kv_groups=weights.n_kv_heads)
    graph = Graph(shape)
    batch = tokenize_task(data, model.tokenizer, n_ctx=model.n_ctx).to(model.device)
    return Problem.build(weights, graph, batch, metric=metric, ablation=ablation)  # type: ignore[arg-type]


def discover(request: DiscoveryRequest, *, progress: Progress | None = None,
             model: LoadedModel | None = None, data: TaskData | None = None) -> Circuit:
    """Run ``request`` and return the circuit, evaluated on the same prompts. ``model``: an
    already loaded model (a worker's cache); ``data``: the task's pairs (an inline custom task)."""
    algorithm = get_algorithm(request.method)
    config = request.config()
    run = _prepare(request, model, data)
    result = algorithm(run.problem, config, progress)
    searched = time.monotonic()
    return _circuit_of(request, run, result, {"prepare_s": run.prepared - run.started,
                                              "search_s": searched - run.prepared}, searched)


#: methods whose sweep shares work between thresholds: ACDC's one search
#: (:mod:`discovery.algorithms.acdc_sweep`), attribution's one scoring cut at each threshold
SWEEP_SHARED = ("acdc", "eap", "eap-ig")


def discover_sweep(request: DiscoveryRequest, thresholds: Sequence[float], *,
                   progress: Progress | None = None, model: LoadedModel | None = None,
                   data: TaskData | None = None) -> list[Circuit]:
    """The circuit of ``request`` at every threshold (in the order given), each equal to
    :func:`discover` at that threshold, from one search where the method allows
    (:data:`SWEEP_SHARED`, ACDC in our edge order); others run once per threshold. ``top_n`` must
    be unset.
    Each circuit's ``search_s`` is the whole sweep's search time (shared)."""
    from discovery.algorithms.acdc_sweep import check_thresholds, sweep

    grid = check_thresholds(thresholds)
    if request.top_n is not None:
        raise ValueError("top_n: a threshold sweep thresholds scores; leave top_n unset")
    if request.method not in SWEEP_SHARED or (request.method == "acdc" and request.edge_order != "ours"):
        # (the shared ACDC search visits edges in our order only: another order runs per threshold)
        model = model or load_model(request.model, device=request.device)
        return [discover(replace(request, threshold=t), progress=progress, model=model, data=data)
                for t in grid]
    run = _prepare(request, model, data)
    if request.method == "acdc":
        results = sweep(run.problem, grid, request.config(), progress)
    else:
        from discovery.algorithms.attribution import select

        scored = get_algorithm(request.method)(run.problem, request.config(), progress)
        results = [AlgorithmResult(select(scored.scores, replace(request.config(), threshold=t),
                                          run.problem.graph), scored.scores, scored.stats) for t in grid]
    searched = time.monotonic()
    timings = {"prepare_s": run.prepared - run.started, "search_s": searched - run.prepared}
    return [_circuit_of(replace(request, threshold=t), run, r, timings, time.monotonic())
            for t, r in zip(grid, results, strict=True)]


@dataclass
class _Prepared:
    """A request's model, prompts and problem, and when preparing started and ended."""

    model: LoadedModel
    data: TaskData
    problem: Problem
    started: float
    prepared: float


def _prepare(request: DiscoveryRequest, model: LoadedModel | None, data: TaskData | None) -> _Prepared:
    if data is None and not (request.task.endswith(".json") or Path(request.task).exists()):
        get_task(request.task)  # an unknown task fails here, before a model is loaded
    started = time.monotonic()
    model = model or load_model(request.model, device=request.device)
    data = data or task_data(request.task, model, request.n_prompts, request.seed)
    default_metric = "kl" if request.method.startswith("acdc") else data.metric
    problem = build_problem(model, data, metric=request.metric or default_metric,
                            ablation=request.ablation, dtype=request.dtype,
                            kv_inputs=request.kv_inputs)
    return _Prepared(model, data, problem, started, time.monotonic())


def _circuit_of(request: DiscoveryRequest, run: _Prepared, result: AlgorithmResult,
                timings: dict[str, float], searched: float) -> Circuit:
    """The circuit of a search's ``result``: dangling edges pruned, evaluated, with provenance."""
    problem, graph = run.problem, run.problem.graph
    # Dangling edges carry nothing (discovery.prune); the metrics are those of the cleaned circuit.
    # one entry per graph edge: a tie set (k/v of a key-value group) at its first column
    once = graph.leaders()[None]
    pruned = prune_edges((graph.edge(u, k, _score(result.scores[u, k]))
                          for u, k in (result.mask & once).nonzero().tolist()),
                         from_embed=request.ablation == "corrupt", shape=graph.shape)
    edges, mask = pruned.edges, _mask_of(graph, pruned.edges)
    evaluation = evaluate(problem, mask.to(problem.ablation.device))
    names = {e.src for e in edges} | {e.dst for e in edges}
    neuron_nodes = _neurons(problem, mask, names, request) if request.granularity == "neurons" else ()
    scores = {graph.edge(u, k).name: _score(result.scores[u, k])
              for u, k in graph.edge_valid().nonzero().tolist()}
    return Circuit(
        id=str(uuid.uuid4()),
        nodes=tuple(Node.parse(n) for n in sorted(names)) + neuron_nodes,
        edges=edges,
        metrics=evaluation.as_metrics(),
        provenance=_provenance(request, run.model, run.data, problem,
                               timings={**timings, "evaluate_s": time.monotonic() - searched},
                               stats=result.stats, pruned=pruned),
        graph=graph.shape,
        edge_scores={k: v for k, v in scores.items() if v is not None},
    )


def _mask_of(graph: Graph, edges: tuple) -> torch.Tensor:
    """[n_upstream, n_inputs] bool mask of ``edges``."""
    mask = torch.zeros(graph.n_upstream, graph.n_inputs, dtype=torch.bool)
    for edge in edges:
        u, k = graph.index_of(edge.name)
        mask[u, list(graph.tie_of(k))] = True  # a group edge: all its tied columns
    return mask


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


def _provenance(request, model, data, problem, *, timings, stats, pruned):
    from discovery.circuit import Provenance

    return Provenance(
        model=model.name, task=data.name, method=request.method, model_sha256=model.sha256,
        architecture=model.architecture, dataset_hash=problem.batch.data.dataset_hash, threshold=request.threshold,
        search_metric=problem.metric, ablation=request.ablation,
        prepend_bos=problem.batch.prepend_bos, tokenizer_sha256=tokenizer_sha256(model.tokenizer),
        edge_order=(describe(request.edge_order) + EDGE_ORDERS[request.method]
                    if request.method in EDGE_ORDERS else None),
        edge_order_sha256=(order_sha256(problem.graph, request.edge_order)
                           if request.method in EDGE_ORDERS else None),
        params={"metric": problem.metric, "ablation": request.ablation, "top_n": request.top_n,
                "n_prompts": len(data.pairs), "ig_steps": request.ig_steps, "kv_inputs": request.kv_inputs,
                "edges_total": problem.graph.n_edges, "dangling_removed": pruned.record(),
                "d_model": int(problem.ablation.shape[-1]),
                **({"edge_order": request.edge_order} if request.method in EDGE_ORDERS else {}),
                **{k: float(v) for k, v in stats.items()}},
        seed=request.seed, device=str(model.device), dtype=request.dtype,
        versions={"torch": torch.__version__, "transformer_lens": _version("transformer-lens"),
                  "circuit_atlas": _version("circuit-atlas"), "python": platform.python_version()},
        timings={k: round(v, 3) for k, v in timings.items()},
        created_at=datetime.now(UTC).isoformat(),
    )
