"""The Circuit data type shared by every layer: nodes, edges, scores, metrics and provenance.

No torch here: the graph store, the workers and the API read and write circuits without it.

Node names are stable and readable, and they are also the Neo4j keys:
``embed`` (token + position embedding), ``a{L}.h{H}`` (attention head), ``m{L}`` (MLP),
``m{L}.n{I}`` (neuron I of MLP L), ``logits``. An edge ``src->dst<input>`` names the input of the
receiver it feeds: ``q``, ``k`` or ``v`` for a head, ``mlp`` for an MLP or neuron, ``logits``.

Graphs with one k/v input per key-value group (``GraphShape.kv_groups``, grouped-query attention)
add the receiver-only node ``a{L}.kv{G}`` (kind ``kv_group``: the shared K/V projection of group G
of layer L, read by query heads ``G * H/G .. (G + 1) * H/G - 1``; its ``head`` field holds G). Its
edges are ``src->a{L}.kv{G}<k>`` and ``<v>``; q edges stay ``src->a{L}.h{H}<q>``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

NodeKind = Literal["embed", "attention", "kv_group", "mlp", "neuron", "logits"]
EdgeInput = Literal["q", "k", "v", "mlp", "logits"]
EDGE_INPUTS: tuple[str, ...] = ("q", "k", "v", "mlp", "logits")

_NODE_RE = re.compile(r"^(?:(embed)|(logits)|a(\d+)\.h(\d+)|a(\d+)\.kv(\d+)|m(\d+)(?:\.n(\d+))?)$")
_EDGE_RE = re.compile(r"^(?P<src>[^<>-]+)->(?P<dst>[^<>-]+?)(?:<(?P<input>q|k|v)>)?$")


def head_name(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def kv_group_name(layer: int, group: int) -> str:
    """The shared k/v input of key-value group ``group`` of ``layer`` (grouped graphs only)."""
    return f"a{layer}.kv{group}"


def mlp_name(layer: int) -> str:
    return f"m{layer}"


def neuron_name(layer: int, neuron: int) -> str:
    return f"m{layer}.n{neuron}"


@dataclass(frozen=True)
class GraphShape:
    """The computational graph's shape: enough to list every node and edge without the model."""

    n_layers: int
    n_heads: int
    mlp: bool = True  # False for attention-only models
    parallel: bool = False  # GPT-NeoX/Pythia: a layer's MLP reads what its heads read, not their output
    #: None: k and v inputs per query head (MIB-compatible, the default). Else the number G of
    #: key-value groups (dividing n_heads): one k and one v input per group, node ``a{L}.kv{G}``;
    #: head h belongs to group ``h // (n_heads // G)``. Absent on older circuits (None).
    kv_groups: int | None = None

    def __post_init__(self) -> None:
        g = self.kv_groups
        if g is not None and (not isinstance(g, int) or g < 1 or self.n_heads % g):
            raise ValueError(f"kv_groups must be None or a positive divisor of n_heads={self.n_heads}, "
                             f"got {g!r}; use None for k/v inputs per query head")

    def group_of(self, head: int) -> int:
        """The key-value group of query ``head`` (``head`` itself when k/v are per head)."""
        return head if self.kv_groups is None else head // (self.n_heads // self.kv_groups)

    def upstream(self) -> list[str]:
        """Every node with an output, in topological order: embed, then per layer heads and MLP."""
        names = ["embed"]
        for layer in range(self.n_layers):
            names += [head_name(layer, h) for h in range(self.n_heads)]
            if self.mlp:
                names.append(mlp_name(layer))
        return names

    def kv_nodes(self) -> list[str]:
        """The receiver-only key-value group nodes ``a{L}.kv{G}`` (none unless ``kv_groups``)."""
        return [kv_group_name(layer, g) for layer in range(self.n_layers)
                for g in range(self.kv_groups or 0)]

    def edges(self) -> list[str]:
        """Every edge name: each upstream output to each later input (q/k/v of heads, MLP, logits).

        Heads of one layer read the residual before any of them writes; an MLP reads after its
        layer's heads (with ``parallel``, what its heads read). GPT-2 small's shape (12 x 12, MLPs)
        has 32,491 edges. With ``kv_groups`` G, each layer has ``n_heads`` q inputs and 2 * G k/v
        inputs (``a{L}.kv{G}``), each read from every earlier node."""
        names: list[str] = []
        upstream = ["embed"]
        for layer in range(self.n_layers):
            heads = [head_name(layer, h) for h in range(self.n_heads)]
            if self.kv_groups is None:
                names += [f"{src}->{dst}<{x}>" for dst in heads for x in "qkv" for src in upstream]
            else:
                names += [f"{src}->{dst}<q>" for dst in heads for src in upstream]
                names += [f"{src}->{kv_group_name(layer, g)}<{x}>" for g in range(self.kv_groups)
                          for x in "kv" for src in upstream]
            mlp_reads = upstream if self.parallel else upstream + heads
            upstream = upstream + heads
            if self.mlp:
                names += [f"{src}->{mlp_name(layer)}" for src in mlp_reads]
                upstream = upstream + [mlp_name(layer)]
        return names + [f"{src}->logits" for src in upstream]


@dataclass(frozen=True)
class Node:
    """One component of the model. ``layer``/``head``/``neuron`` are None where they do not apply."""

    name: str
    kind: NodeKind
    layer: int | None = None
    head: int | None = None
    neuron: int | None = None
    score: float | None = None

    @classmethod
    def parse(cls, name: str, score: float | None = None) -> Node:
        """Build a node from its name; raises ValueError naming the accepted forms."""
        m = _NODE_RE.match(name)
        if not m:
            raise ValueError(
                f"bad node name {name!r}: expected embed, logits, a<L>.h<H>, a<L>.kv<G>, m<L> or m<L>.n<I>"
            )
        embed, logits, a_layer, a_head, kv_layer, kv_group, m_layer, m_neuron = m.groups()
        if embed:
            return cls(name, "embed", score=score)
        if logits:
            return cls(name, "logits", score=score)
        if a_layer is not None:
            return cls(name, "attention", int(a_layer), int(a_head), score=score)
        if kv_layer is not None:  # ``head`` holds the group index
            return cls(name, "kv_group", int(kv_layer), int(kv_group), score=score)
        if m_neuron is not None:
            return cls(name, "neuron", int(m_layer), neuron=int(m_neuron), score=score)
        return cls(name, "mlp", int(m_layer), score=score)


def input_of(receiver: Node, qkv: str | None = None) -> EdgeInput:
    """The input an edge into ``receiver`` feeds: q/k/v for heads, else fixed by the kind."""
    if receiver.kind == "attention":
        if qkv not in ("q", "k", "v"):
            raise ValueError(f"an edge into head {receiver.name} needs input q, k or v, got {qkv!r}")
        return qkv  # type: ignore[return-value]
    if receiver.kind == "kv_group":
        if qkv not in ("k", "v"):
            raise ValueError(f"an edge into key-value group {receiver.name} needs input k or v, got {qkv!r}")
        return qkv  # type: ignore[return-value]
    if receiver.kind in ("mlp", "neuron"):
        return "mlp"
    if receiver.kind == "logits":
        return "logits"
    raise ValueError(f"{receiver.name} ({receiver.kind}) receives no edges")


@dataclass(frozen=True)
class Edge:
    """A path from ``src``'s output to ``dst``'s ``input`` through the residual stream."""

    src: str
    dst: str
    input: EdgeInput
    score: float | None = None

    @property
    def name(self) -> str:
        """``a0.h1->a2.h3<q>`` for head inputs, ``m1->m2`` and ``m3->logits`` otherwise."""
        suffix = f"<{self.input}>" if self.input in ("q", "k", "v") else ""
        return f"{self.src}->{self.dst}{suffix}"

    @classmethod
    def parse(cls, name: str, score: float | None = None) -> Edge:
        m = _EDGE_RE.match(name)
        if not m:
            raise ValueError(f"bad edge name {name!r}: expected SRC->DST or SRC->DST<q|k|v>")
        dst = Node.parse(m["dst"])
        Node.parse(m["src"])
        return cls(m["src"], m["dst"], input_of(dst, m["input"]), score)


def _faithfulness(full: float | None, empty: float | None, circuit: float | None) -> float | None:
    """(m(C) - m(empty)) / (m(full) - m(empty)); None when unmeasured or full and empty coincide."""
    if full is None or empty is None or circuit is None:
        return None
    span = full - empty
    return None if span == 0 else (circuit - empty) / span


@dataclass(frozen=True)
class Metrics:
    """A circuit measured twice, everything outside it ablated: under the task's own metric
    (``name``; ``full``, ``empty``, ``circuit``) and under the metric the search optimised
    (``search_metric``; ``search_*``; KL for ACDC by default).

    Faithfulness is (m(C) - m(empty)) / (m(full) - m(empty)) under either. Under KL (to the full
    model) m(full) = 0, so it is 1 - KL(C) / KL(empty): 1 when the circuit matches the full model,
    0 when it is as far off as the empty circuit, never above 1. Under a task metric such as the
    logit difference a circuit can beat the full model (it drops heads that work against the
    answer), so ``faithfulness_task`` can exceed 1. Circuits stored before the search-metric
    fields existed read back with them None. A circuit imported from another tool is unmeasured
    (:meth:`unmeasured`: every value None) until it is evaluated."""

    full: float | None
    empty: float | None
    circuit: float | None
    name: str = "kl"  # the task metric
    search_metric: str | None = None
    search_full: float | None = None
    search_empty: float | None = None
    search_circuit: float | None = None

    @classmethod
    def unmeasured(cls) -> Metrics:
        """No measurement (an imported circuit): None, not NaN, so JSON readers take it."""
        return cls(full=None, empty=None, circuit=None, name="unmeasured")

    @property
    def measured(self) -> bool:
        return self.circuit is not None

    @property
    def task_metric(self) -> str:
        return self.name

    @property
    def faithfulness_task(self) -> float | None:
        """Faithfulness under the task metric ``name``; may exceed 1."""
        return _faithfulness(self.full, self.empty, self.circuit)

    @property
    def faithfulness(self) -> float | None:
        """The task-metric faithfulness, under its historical name (kept for compatibility)."""
        return self.faithfulness_task

    @property
    def faithfulness_search(self) -> float | None:
        """Faithfulness under the search metric; None for circuits stored before it was kept."""
        return _faithfulness(self.search_full, self.search_empty, self.search_circuit)


#: Values :meth:`Circuit.to_dict` adds to ``metrics`` (derived, so dropped again on reading).
DERIVED_METRICS = ("faithfulness", "faithfulness_task", "faithfulness_search", "task_metric")


@dataclass(frozen=True)
class Provenance:
    """Where a circuit came from: enough for a second tool to reproduce and re-score it.

    ``dataset_hash`` is :attr:`discovery.tasks.base.TaskData.dataset_hash` of exactly the pairs the
    search and the evaluation ran on (``circuits tasks export`` writes them). ``prepend_bos``: a
    BOS token was put before every prompt (prompts are otherwise tokenised as given, without
    special tokens). ``edge_order`` names the order the search visited edges in and
    ``edge_order_sha256`` hashes that ordered list of edge names (newline-joined); both None for
    methods that score every edge at once. ``search_metric`` and ``threshold`` are what the search
    compared against. Fields added later read back as their defaults from older circuits."""

    model: str
    task: str
    method: str
    model_sha256: str = ""
    architecture: str = ""  # the Hugging Face class, e.g. GPT2LMHeadModel, LlamaForCausalLM
    dataset_hash: str = ""
    threshold: float | None = None
    search_metric: str | None = None
    ablation: str | None = None
    prepend_bos: bool | None = None
    tokenizer_sha256: str = ""
    edge_order: str | None = None
    edge_order_sha256: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"  # what the weights and passes ran in (float32, bfloat16, float16)
    timings: dict[str, float] = field(default_factory=dict)
    created_at: str = ""


@dataclass(frozen=True)
class Circuit:
    """A circuit: its id, nodes and edges (with scores), metrics and provenance."""

    id: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    metrics: Metrics
    provenance: Provenance
    graph: GraphShape | None = None  # the model's graph, for exports that list every edge
    edge_scores: dict[str, float] = field(default_factory=dict)  # every scored edge, kept or not
    #: the method's faithfulness curve on the task (:meth:`discovery.curves.Curve.to_dict`: metric,
    #: full, empty, points [{fraction, n_edges, metric, faithfulness}], cpr, cmd), when measured
    curve: dict[str, Any] | None = None
    #: how stable the circuit is under other edge orders and prompt draws
    #: (:mod:`discovery.stability`: jaccard means, n of each, core edges), when measured
    stability: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        names = {n.name for n in self.nodes}
        missing = {e.src for e in self.edges} | {e.dst for e in self.edges}
        missing -= names
        if missing:
            raise ValueError(f"circuit {self.id}: edges name nodes it lacks: {sorted(missing)}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"].update({k: getattr(self.metrics, k) for k in DERIVED_METRICS})
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Circuit:
        metrics = {k: v for k, v in data["metrics"].items() if k not in DERIVED_METRICS}
        return cls(
            id=data["id"],
            nodes=tuple(Node(**n) for n in data["nodes"]),
            edges=tuple(Edge(**e) for e in data["edges"]),
            metrics=Metrics(**metrics),
            provenance=Provenance(**data["provenance"]),
            graph=GraphShape(**data["graph"]) if data.get("graph") else None,
            edge_scores=dict(data.get("edge_scores") or {}),
            curve=data.get("curve"),
            stability=data.get("stability"),
        )

    @classmethod
    def from_json(cls, text: str) -> Circuit:
        return cls.from_dict(json.loads(text))
