"""A discovery problem: one model, one task batch, one ablation, one loss. Built once, handed to
every algorithm (algorithms never load models or tasks themselves).

The loss is what ACDC thresholds: 0 for the full model, larger as the circuit drifts from it.
With ``kl`` it is KL(full model || circuit) (Conmy et al. 2023's default); with a task metric m it
is m(full) - m(circuit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from discovery.graph import Graph
from discovery.metrics import METRICS, final_logits, kl_to
from discovery.patching import Weights, clean_outputs, forward_from, free_bias, patched_forward, unembed
from discovery.suffix import NodeCache, Receiver, SuffixContext
from discovery.tasks.tokens import TokenizedTask

Ablation = Literal["corrupt", "mean", "zero"]


@dataclass
class Problem:
    weights: Weights  # any architecture's (discovery.arch)
    graph: Graph
    batch: TokenizedTask
    ablation: Tensor  # [U, B, P, D] what flows through a removed edge
    clean: Tensor  # [U, B, P, D] node outputs of the full model on the clean prompts
    reference: Tensor  # [B, vocab] the full model's final logits
    metric: str  # "kl" or the task metric
    full_value: Tensor | None = None  # [1] the metric of the full model
    forward_passes: int = 0  # prompt batches run so far (each variant counts once)
    _suffix: SuffixContext | None = field(default=None, repr=False)
    _reference_lp: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, weights: Weights, graph: Graph, batch: TokenizedTask, *, metric: str,
              ablation: Ablation = "corrupt") -> Problem:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        with torch.no_grad():
            clean = clean_outputs(weights, graph, batch.clean)
            if ablation == "corrupt":
                abl = clean_outputs(weights, graph, batch.corrupt).outputs
            elif ablation == "mean":  # each node's mean output over the clean prompts, per position
                abl = clean.outputs.mean(1, keepdim=True).expand_as(clean.outputs).contiguous()
            elif ablation == "zero":
                abl = torch.zeros_like(clean.outputs)
            else:
                raise ValueError(f"unknown ablation {ablation!r}; use corrupt, mean or zero")
        reference = final_logits(clean.logits, batch.last)
        problem = cls(weights, graph, batch, abl, clean.outputs, reference, metric)
        problem.full_value = problem.metric_value(clean.logits)
        return problem

    # -- losses ----------------------------------------------------------------------------------
    def metric_value(self, logits: Tensor, metric: str | None = None) -> Tensor:
        """Mean ``metric`` (default: the problem's) per variant: logits ``[V*B, P, vocab]`` -> ``[V]``."""
        v = logits.shape[0] // len(self.batch)
        return self.metric_at_final(final_logits(logits, self.batch.last.repeat(v)), metric)

    def metric_at_final(self, final: Tensor, metric: str | None = None) -> Tensor:
        """Mean metric per variant from the last-position logits ``[V*B, vocab]`` -> ``[V]``."""
        b = len(self.batch)
        v = final.shape[0] // b
        final = final.float()
        if (metric or self.metric) == "kl":  # the reference's log-probabilities once, not per variant
            return kl_to(self._reference_logprobs(), final.view(v, b, -1)).mean(1)
        values = METRICS[metric or self.metric](final, self.batch.answers.repeat(v, 1),
                                      self.batch.wrongs.repeat(v, 1), self.reference.repeat(v, 1).float())
        return values.view(v, b).mean(1)

    def _reference_logprobs(self) -> tuple[Tensor, Tensor]:
        """The full model's next-token log-probabilities ``[B, vocab]`` and probabilities."""
        if self._reference_lp is None:
            logp = self.reference.float().log_softmax(-1)
            self._reference_lp = logp, logp.exp()
        return self._reference_lp

    def loss(self, logits: Tensor) -> Tensor:
        """[V] losses from full logits ``[V*B, P, vocab]``: 0 for the full model."""
        v = logits.shape[0] // len(self.batch)
        return self.loss_at_final(final_logits(logits, self.batch.last.repeat(v)))

    def loss_at_final(self, final: Tensor) -> Tensor:
        """[V] losses from last-position logits ``[V*B, vocab]``."""
        value = self.metric_at_final(final)
        if self.metric == "kl":
            return value
        return self.full_value - value

    # -- runs ------------------------------------------------------------------------------------
    def run(self, mask: Tensor) -> Tensor:
        """Loss of the circuit ``mask`` ``[U, I]`` (one full patched pass)."""
        self.forward_passes += 1
        with torch.no_grad():
            logits = patched_forward(self.weights, self.graph, self.batch.clean, self.ablation,
                                     mask).logits
        return self.loss(logits)[0]

    def run_cached(self, mask: Tensor, cache: NodeCache) -> Tensor:
        """Loss of the circuit ``mask`` from its node outputs ``cache`` (current for every node):
        only the logits' input and the unembedding, at each prompt's last position."""
        self.forward_passes += 1
        with torch.no_grad():
            final = self.suffix.node_inputs(cache, mask, [self.graph.n_inputs - 1])[0]
            final = final + free_bias(self.weights, self.graph.shape.n_layers, 2)
            return self.loss_at_final(unembed(self.weights, final_logits(final, self.batch.last)))[0]

    @property
    def suffix(self) -> SuffixContext:
        """Constants of fast ACDC's suffix passes (built on first use)."""
        if self._suffix is None:
            with torch.no_grad():
                self._suffix = SuffixContext(self.weights, self.graph, self.ablation, self.batch.last)
        return self._suffix

    def receiver(self, ks: int | list[int], mask: Tensor, cache: NodeCache) -> Receiver:
        """What the variants of receiver input(s) ``ks`` (one node's) share (:mod:`discovery.suffix`);
        ``cache`` must be current for every node, and only those columns of ``mask`` may change
        while it is used."""
        with torch.no_grad():
            return Receiver(self.suffix, cache, mask, ks)

    def run_variants(self, receiver: Receiver, columns: Tensor) -> Tensor:
        """Losses ``[V]`` of variants that differ only in the receiver's input, whose senders are
        the rows of ``columns`` ``[V, U]``, computing only what that input changes. NaN where the
        receiver does not reach the logits (nothing changes)."""
        self.forward_passes += columns.shape[0]
        with torch.no_grad():
            final = receiver.final_logits(columns)
        if final is None:
            return torch.full((columns.shape[0],), float("nan"))
        return self.loss_at_final(final)

    def outputs_of(self, mask: Tensor, *, start: tuple[int, int] = (0, 0),
                   cached: Tensor | None = None) -> Tensor:
        """Node outputs ``[U, B, P, D]`` of the circuit ``mask``; with ``cached`` (valid before
        ``start``) only the nodes from ``start`` on are recomputed."""
        with torch.no_grad():
            return forward_from(self.weights, self.graph, self.batch.clean, self.ablation, mask,
                                start=start, outputs=cached).outputs
