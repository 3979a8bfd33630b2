"""The computational graph of a model as dense index tables (EAP-IG style).

Upstream nodes (those with an output) are ``embed``, every head ``a{L}.h{H}``, every MLP ``m{L}``, in
topological order. Downstream inputs are the q, k and v inputs of every head, every MLP's input, and
``logits``. An edge joins an upstream output to a later input. Scores and circuit membership are
tensors of shape ``[n_upstream, n_inputs]``, so thresholding and top-n are whole-tensor operations;
edge names (``a0.h1->a2.h3<q>``) are views on those indices.

Graphs with one k/v input per key-value group (``GraphShape.kv_groups``) keep these per-head
tables (so the patched forward and every architecture adapter are unchanged) and TIE the k (and
the v) inputs of the heads of one group: a tie set is a tuple of input indices that always carry
the same edges, i.e. one graph input ``a{L}.kv{G}<k>``. Every other input is a singleton tie.
Algorithms decide, score and count a tie set once and write all its columns together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from discovery.circuit import Edge, GraphShape, head_name, kv_group_name, mlp_name


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
    #: the graph's inputs as tie sets of input indices, ordered by their first index (singletons
    #: except the k / v inputs of one key-value group in a grouped graph)
    ties: list[tuple[int, ...]] = field(init=False)
    _tie_of: list[int] = field(init=False, repr=False)  # per input: its index in ``ties``
    _group_index: dict[tuple[str, str], int] = field(init=False, repr=False)  # (a{L}.kv{G}, k|v) -> input

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
        self._build_ties()

    def _build_ties(self) -> None:
        s, members = self.shape, {}
        for k, inp in enumerate(self.inputs):
            if s.kv_groups is not None and inp.input in ("k", "v"):
                key = (kv_group_name(inp.layer, s.group_of(inp.head)), inp.input)
            else:
                key = (inp.node, inp.input)
            members.setdefault(key, []).append(k)
        self.ties = sorted(tuple(ks) for ks in members.values())
        self._tie_of = [0] * len(self.inputs)
        for t, ks in enumerate(self.ties):
            for k in ks:
                self._tie_of[k] = t
        self._group_index = {key: ks[0] for key, ks in members.items() if key not in self.in_index}

    def tie_of(self, k: int) -> tuple[int, ...]:
        """The tie set (input indices carrying the same edges) input ``k`` belongs to."""
        return self.ties[self._tie_of[k]]

    @property
    def tied(self) -> bool:
        """Whether some tie set has more than one input (a grouped graph with shared k/v)."""
        return len(self.ties) != len(self.inputs)

    def leaders(self) -> torch.Tensor:
        """[n_inputs] bool: the first input of each tie set (the column a graph input is read at)."""
        lead = torch.zeros(self.n_inputs, dtype=torch.bool)
        lead[[ks[0] for ks in self.ties]] = True
        return lead

    def edge_valid(self) -> torch.Tensor:
        """[n_upstream, n_inputs] bool: :meth:`valid` on each tie set's first column only, so every
        graph edge appears once (what circuits list, counts count and top-n ranks)."""
        return self.valid() & self.leaders()[None]

    def tie_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` ``[U, I]`` with every tied column set to its tie set's first column."""
        if not self.tied:
            return mask
        lead = torch.tensor([self.tie_of(k)[0] for k in range(self.n_inputs)], device=mask.device)
        return mask[:, lead]

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
        """Graph edges, a tie set's edges counted once."""
        return sum(self.n_avail[ks[0]] for ks in self.ties)

    def edge(self, u: int, k: int, score: float | None = None) -> Edge:
        """The edge from upstream ``u`` to input ``k`` (a tied k/v input: its group's edge)."""
        inp = self.inputs[k]
        dst = inp.node
        if self.shape.kv_groups is not None and inp.input in ("k", "v"):
            dst = kv_group_name(inp.layer, self.shape.group_of(inp.head))
        return Edge(self.upstream[u], dst, inp.input, score)  # type: ignore[arg-type]

    def index_of(self, name: str) -> tuple[int, int]:
        """(upstream, input) indices of an edge name such as ``a0.h1->a2.h3<q>``; a group edge
        ``a0.h1->a2.kv0<k>`` gives its tie set's first input (:meth:`tie_of` gives them all)."""
        edge = Edge.parse(name)
        key = (edge.dst, edge.input)
        if key in self._group_index:
            return self.up_index[edge.src], self._group_index[key]
        if self.shape.kv_groups is not None and edge.input in ("k", "v"):
            raise KeyError(f"{name}: this graph has one k/v input per key-value group; "
                           f"name the group (a<L>.kv<G>), not the head")
        return self.up_index[edge.src], self.in_index[key]

    def edges_in_order(self) -> list[tuple[int, int]]:
        """All edges as index pairs, receivers in reverse topological order (logits first), and
        within a receiver its senders from the latest to the earliest: ACDC's visiting order. A
        tie set is one receiver, at its first input."""
        return [(u, ks[0]) for ks in reversed(self.ties) for u in reversed(range(self.n_avail[ks[0]]))]

    def inputs_of_layer(self, layer: int, stage: int) -> list[int]:
        return [k for k, i in enumerate(self.inputs) if i.layer == layer and i.stage == stage]
