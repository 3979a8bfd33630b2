"""What every stage of an experiment shares: the model's weights and graph, one cached runner per
task (its own prompts and ablation), the circuits' components and edges, the universes random
controls are drawn from, and the statistics settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from discovery.circuit import Circuit, Node
from discovery.experiments.ablate import Passes, Runner
from discovery.experiments.controls import ControlDraw, draw_controls, node_counts
from discovery.experiments.sets import all_components, circuit_components, circuit_edges
from discovery.graph import Graph
from discovery.patching import GPT2Weights


@dataclass
class Context:
    weights: GPT2Weights
    graph: Graph
    tasks: tuple[str, ...]
    runners: dict[str, Runner]  # task -> runner on its own prompts
    metrics: dict[str, str]  # task -> the metric its cells use (its own; logprob for a KL task)
    circuits: dict[str, Circuit]  # task -> its circuit
    seed: int
    n_controls: int
    alpha_level: float
    alphas: tuple[float, ...]
    passes: Passes
    universe: dict[str, tuple[str, ...]] = field(init=False)  # kind -> every component; "edge" too
    _nodes_in: frozenset[str] = field(init=False)
    _edges_in: frozenset[str] = field(init=False)
    _mlps_in: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        s = self.graph.shape
        comps = all_components(s.n_layers, s.n_heads, s.mlp)
        d_mlp = self.weights.w_in.shape[-1] if s.mlp else 0
        self.universe = {
            "attention": tuple(c for c in comps if c.startswith("a")),
            "mlp": tuple(c for c in comps if c.startswith("m")),
            "neuron": tuple(f"m{layer}.n{i}" for layer in range(s.n_layers) for i in range(d_mlp)),
            "edge": tuple(self.graph.edge(u, k).name for u, k in self.graph.valid().nonzero().tolist()),
        }
        self._nodes_in = frozenset().union(*(circuit_components(c) for c in self.circuits.values()))
        self._edges_in = frozenset().union(*(circuit_edges(c) for c in self.circuits.values()))
        self._mlps_in = frozenset(Node.parse(n).layer for n in self._nodes_in if n.startswith("m"))

    def node_in_circuits(self, name: str) -> bool:
        """In some circuit of the experiment (a neuron also when its whole MLP is)."""
        if name in self._nodes_in:
            return True
        return ".n" in name and Node.parse(name).layer in self._mlps_in

    def node_controls(self, members: frozenset[str], seed: str) -> ControlDraw:
        return draw_controls(members, node_counts(members), self.universe, self.node_in_circuits,
                             self.n_controls, seed)

    def edge_controls(self, members: frozenset[str], seed: str) -> ControlDraw:
        return draw_controls(members, {"edge": len(members)}, self.universe,
                             self._edges_in.__contains__, self.n_controls, seed)

    def controls(self, members: frozenset[str], kind: str, seed: str) -> ControlDraw:
        return self.node_controls(members, seed) if kind == "nodes" else self.edge_controls(members, seed)
