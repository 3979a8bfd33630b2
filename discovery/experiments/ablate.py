"""Ablating sets of components or edges on one batch of prompts, with every result cached.

A node set is ablated by zeroing its rows of the full mask (``graph.valid()``), so every receiver
of a head or MLP sees its ablation value; a neuron ``m{L}.n{i}`` takes its ablated activation
(the MLP's activations computed from the ablation source, as :mod:`discovery.neurons` does); an
edge set by zeroing those mask entries. The ablation source is the task's :class:`Problem`
(corrupted twins, mean or zero) for task prompts, and for conflict prompts (which have no twins)
the per-position mean over the prompts' real positions, or zero.

Shapes: ``B`` prompts, ``P`` positions, ``D`` d_model, ``U`` upstream nodes, ``I`` inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from discovery.circuit import Node
from discovery.graph import Graph
from discovery.metrics import METRICS, final_logits, top1_correct
from discovery.patching import GPT2Weights, clean_outputs, forward_from, free_bias, mlp_activations
from discovery.problem import Problem

Measure = dict[str, Tensor]  # name -> per-prompt values [B] (on the CPU)


@dataclass
class Passes:
    """Counts planned and done evaluations (cached ones count as done) and real forward passes;
    reports ``progress(done, total)``."""

    total: int = 0
    done: int = 0
    forward: int = 0
    progress: Callable[[int, int], None] | None = None

    def tick(self, *, ran: bool) -> None:
        self.done += 1
        self.forward += int(ran)
        self.total = max(self.total, self.done)
        if self.progress is not None:
            self.progress(self.done, self.total)


@dataclass
class Runner:
    """Patched passes over one prompt batch. ``measure(final [B, vocab]) -> Measure``."""

    weights: GPT2Weights
    graph: Graph
    tokens: Tensor  # [B, P]
    last: Tensor  # [B]
    ablation: Tensor  # [U, B, P, D]
    measure: Callable[[Tensor], Measure]
    passes: Passes
    _neuron_abl: dict[int, Tensor] = field(default_factory=dict)
    _cache: dict[tuple, Measure] = field(default_factory=dict)

    @property
    def valid(self) -> Tensor:
        """[U, I] bool: every edge of the model."""
        return self.graph.valid().to(self.ablation.device)

    def neuron_ablation(self, layer: int) -> Tensor:
        """[B, P, d_mlp] MLP ``layer``'s activations on its input built from the ablation source."""
        if layer not in self._neuron_abl:
            k = self.graph.in_index[(f"m{layer}", "mlp")]
            x = self.ablation[:self.graph.n_avail[k]].sum(0) + free_bias(self.weights, layer, 1)
            self._neuron_abl[layer] = mlp_activations(self.weights, layer, x)
        return self._neuron_abl[layer]

    def _run(self, key: tuple, build: Callable[[], tuple]) -> Measure:
        if key in self._cache:
            self.passes.tick(ran=False)
            return self._cache[key]
        mask, neurons, scale = build()
        with torch.no_grad():
            logits = forward_from(self.weights, self.graph, self.tokens, self.ablation, mask,
                                  start=(0, 0), outputs=None, neurons=neurons, scale=scale).logits
            measured = {k: v.detach().float().cpu() for k, v in
                        self.measure(final_logits(logits, self.last)).items()}
        self._cache[key] = measured
        self.passes.tick(ran=True)
        return measured

    def full(self) -> Measure:
        return self._run(("full",), lambda: (self.valid, None, None))

    def empty(self) -> Measure:
        """Everything ablated: the empty circuit."""
        return self._run(("empty",), lambda: (torch.zeros_like(self.valid), None, None))

    def without_nodes(self, names: Iterable[str]) -> Measure:
        """The model with the components ``names`` (heads, MLPs, neurons) ablated."""
        names = frozenset(names)
        if not names:
            return self.full()
        return self._run(("nodes", names), lambda: self._node_variant(names))

    def without_edges(self, names: Iterable[str]) -> Measure:
        """The model with the edges ``names`` ablated."""
        names = frozenset(names)
        if not names:
            return self.full()
        return self._run(("edges", names), lambda: (self._edge_mask(names, keep=False), None, None))

    def only_edges(self, names: Iterable[str]) -> Measure:
        """Only the edges ``names`` kept, everything else ablated (a circuit alone)."""
        names = frozenset(names)
        return self._run(("only", names), lambda: (self._edge_mask(names, keep=True), None, None))

    def scaled(self, names: Iterable[str], alpha: float) -> Measure:
        """Every component of ``names`` scaled by ``alpha`` as its receivers see it."""
        names = frozenset(names)
        if not names or alpha == 1.0:
            return self.full()
        return self._run(("scaled", names, float(alpha)), lambda: self._scale_variant(names, alpha))

    # -- masks -------------------------------------------------------------------------------------
    def _node_variant(self, names: frozenset[str]) -> tuple:
        mask = self.valid.clone()
        neurons: dict[int, tuple[Tensor, Tensor]] = {}
        for name in names:
            node = Node.parse(name)
            if node.kind == "neuron":
                abl = self.neuron_ablation(node.layer)
                keep = neurons.get(node.layer, (torch.ones(abl.shape[-1], device=abl.device), abl))[0]
                keep[node.neuron] = 0.0
                neurons[node.layer] = (keep, abl)
            else:
                mask[self.graph.up_index[name]] = False
        return mask, neurons or None, None

    def _scale_variant(self, names: frozenset[str], alpha: float) -> tuple:
        device = self.ablation.device
        scale = torch.ones(self.graph.n_upstream, device=device, dtype=self.ablation.dtype)
        neurons: dict[int, tuple[Tensor, Tensor]] = {}
        d_mlp = self.weights.w_in.shape[-1]
        for name in names:
            node = Node.parse(name)
            if node.kind == "neuron":  # post * mask + 0 * (1 - mask) = alpha * post
                if node.layer not in neurons:
                    zeros = torch.zeros(*self.tokens.shape, d_mlp, device=device, dtype=scale.dtype)
                    neurons[node.layer] = (torch.ones(d_mlp, device=device, dtype=scale.dtype), zeros)
                neurons[node.layer][0][node.neuron] = alpha
            else:
                scale[self.graph.up_index[name]] = alpha
        return self.valid, neurons or None, scale

    def _edge_mask(self, names: frozenset[str], *, keep: bool) -> Tensor:
        mask = torch.zeros_like(self.valid) if keep else self.valid.clone()
        for name in names:
            u, k = self.graph.index_of(name)
            mask[u, k] = keep
        return mask & self.valid


def task_metric_name(metric: str) -> str:
    """The metric cells use: the task's own; a KL task (lower is better, 0 at full) is measured by
    log-probability of its answers instead, so every effect is ``full - ablated``."""
    return "logprob" if metric == "kl" else metric


def task_runner(problem: Problem, passes: Passes) -> Runner:
    """A runner on the task's clean prompts: measures ``metric`` (the task's own) and ``top1``."""
    batch = problem.batch
    metric = task_metric_name(batch.data.metric)

    def measure(final: Tensor) -> Measure:
        final = final.float()
        value = METRICS[metric](final, batch.answers, batch.wrongs, problem.reference.float())
        return {"metric": value, "top1": top1_correct(final, batch.answers).float()}

    return Runner(problem.weights, problem.graph, batch.clean, batch.last, problem.ablation, measure,
                  passes)


def conflict_ablation(outputs: Tensor, last: Tensor, kind: str) -> Tensor:
    """[U, B, P, D] ablation values on conflict prompts: each node's per-position mean over the
    prompts' real (non-padding) positions, or zeros when ``kind`` is ``zero``."""
    if kind == "zero":
        return torch.zeros_like(outputs)
    positions = torch.arange(outputs.shape[2], device=outputs.device)
    real = (positions[None, :] <= last[:, None]).to(outputs.dtype)  # [B, P]
    total = torch.einsum("ubpd,bp->upd", outputs, real)
    mean = total / real.sum(0).clamp(min=1)[None, :, None]
    return mean[:, None].expand_as(outputs).contiguous()


def conflict_runner(weights: GPT2Weights, graph: Graph, batch, tasks: tuple[str, str], kind: str,
                    passes: Passes) -> tuple[Runner, Tensor]:
    """A runner on a :class:`ConflictBatch`: measures ``diff`` = logit(a's answer) - logit(b's),
    ``top_a``/``top_b`` (the answer is the top token) per prompt. Also returns the clean node
    outputs ``[U, B, P, D]`` (for direct logit attribution)."""
    a, b = tasks
    tokens, last = batch.tokens.to(weights.wte.device), batch.last.to(weights.wte.device)
    ans_a, ans_b = batch.answer[a].to(tokens.device), batch.answer[b].to(tokens.device)
    with torch.no_grad():
        clean = clean_outputs(weights, graph, tokens).outputs
        ablation = conflict_ablation(clean, last, kind)
    rows = torch.arange(tokens.shape[0], device=tokens.device)

    def measure(final: Tensor) -> Measure:
        final = final.float()
        top = final.argmax(-1)
        return {"diff": final[rows, ans_a] - final[rows, ans_b],
                "top_a": (top == ans_a).float(), "top_b": (top == ans_b).float()}

    return Runner(weights, graph, tokens, last, ablation, measure, passes), clean
