"""The computational graph of a model as dense index tables (EAP-IG style).

Upstream nodes (those with an output) are ``embed``, every head ``a{L}.h{H}``, every MLP ``m{L}``, in
topological order. Downstream inputs are the q, k and v inputs of every head, every MLP's input, and
``logits``. An edge joins an upstream output to a later input. Scores and circuit membership are
tensors of shape ``[n_upstream, n_inputs]``, so thresholding and top-n are whole-tensor operations;
edge names (``a0.h1->a2.h3<q>``) are views on those indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from discovery.circuit import Edge, GraphShape, head_name, mlp_name


@dataclass(frozen=True)
class Input:
    """A downstream input: ``node`` (``a2.h3``, ``m1`` or ``logits``), which input, and its layer
    (``n_layers`` for logits). ``stage`` is 0 for head inputs, 1 for an MLP, 2 for logits."""

    node: str
    input: str
    layer: int
    stage: int
    head: int | None = None


@dataclass
class Graph:
    """Index tables of one model's graph."""

    shape: GraphShape
    upstream: list[str] = field(init=False)
    inputs: list[Input] = field(init=False)
    up_index: dict[str, int] = field(init=False)
    in_index: dict[tuple[str, str], int] = field(init=False)
    n_avail: list[int] = field(init=False)  # per input: how many upstream nodes precede it
    owner: list[int] = field(init=False)  # per input: the upstream index of its node (-1: logits)
    inputs_of: list[list[int]] = field(init=False)  # per upstream node: its own inputs (embed: none)

    def __post_init__(self) -> None:
        s = self.shape
        self.upstream = s.upstream()
        self.up_index = {name: i for i, name in enumerate(self.upstream)}
        self.inputs, self.n_avail = [], []
        available = 1  # embed
        for layer in range(s.n_layers):
            for h in range(s.n_heads):
                for x in "qkv":
                    self.inputs.append(Input(head_name(layer, h), x, layer, 0, h))
                    self.n_avail.append(available)
            mlp_avail = available if s.parallel else available + s.n_heads
            available += s.n_heads
            if s.mlp:
                self.inputs.append(Input(mlp_name(layer), "mlp", layer, 1))
                self.n_avail.append(mlp_avail)
                available += 1
        self.inputs.append(Input("logits", "logits", s.n_layers, 2))
        self.n_avail.append(available)
        self.in_index = {(i.node, i.input): k for k, i in enumerate(self.inputs)}
        self.owner = [self.up_index.get(i.node, -1) for i in self.inputs]
        self.inputs_of = [[] for _ in self.upstream]
        for k, u in enumerate(self.owner):
            if u >= 0:
                self.inputs_of[u].append(k)

    @property
    def n_upstream(self) -> int:
        return len(self.upstream)

    @property
    def n_inputs(self) -> int:
        return len(self.inputs)

    def valid(self) -> torch.Tensor:
        """[n_upstream, n_inputs] bool: where an edge exists (the source precedes the input)."""
        mask = torch.zeros(self.n_upstream, self.n_inputs, dtype=torch.bool)
        for k, n in enumerate(self.n_avail):
            mask[:n, k] = True
        return mask

    @property
    def n_edges(self) -> int:
        return sum(self.n_avail)

    def edge(self, u: int, k: int, score: float | None = None) -> Edge:
        """The edge from upstream ``u`` to input ``k``."""
        inp = self.inputs[k]
        return Edge(self.upstream[u], inp.node, inp.input, score)  # type: ignore[arg-type]

    def index_of(self, name: str) -> tuple[int, int]:
        """(upstream, input) indices of an edge name such as ``a0.h1->a2.h3<q>``."""
        edge = Edge.parse(name)
        return self.up_index[edge.src], self.in_index[(edge.dst, edge.input)]

    def edges_in_order(self) -> list[tuple[int, int]]:
        """All edges as index pairs, receivers in reverse topological order (logits first), and
        within a receiver its senders from the latest to the earliest: ACDC's visiting order."""
        return [(u, k) for k in reversed(range(self.n_inputs)) for u in reversed(range(self.n_avail[k]))]

    def inputs_of_layer(self, layer: int, stage: int) -> list[int]:
        return [k for k, i in enumerate(self.inputs) if i.layer == layer and i.stage == stage]
