"""A discovery problem: one model, one task batch, one ablation, one loss. Built once, handed to
every algorithm (algorithms never load models or tasks themselves).

The loss is what ACDC thresholds: 0 for the full model, larger as the circuit drifts from it.
With ``kl`` it is KL(full model || circuit) (Conmy et al. 2023's default); with a task metric m it
is m(full) - m(circuit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from discovery.graph import Graph
from discovery.metrics import METRICS, final_logits
from discovery.patching import GPT2Weights, clean_outputs, forward_from, patched_forward
from discovery.tasks.base import TokenizedTask

Ablation = Literal["corrupt", "mean", "zero"]


@dataclass
class Problem:
    weights: GPT2Weights
    graph: Graph
    batch: TokenizedTask
    ablation: Tensor  # [U, B, P, D] what flows through a removed edge
    clean: Tensor  # [U, B, P, D] node outputs of the full model on the clean prompts
    reference: Tensor  # [B, vocab] the full model's final logits
    metric: str  # "kl" or the task metric
    full_value: Tensor | None = None  # [1] the metric of the full model
    forward_passes: int = 0  # prompt batches run so far (each variant counts once)

    @classmethod
    def build(cls, weights: GPT2Weights, graph: Graph, batch: TokenizedTask, *, metric: str,
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
    def metric_value(self, logits: Tensor) -> Tensor:
        """Mean task metric per variant: logits ``[V*B, P, vocab]`` -> ``[V]``."""
        b = len(self.batch)
        v = logits.shape[0] // b
        final = final_logits(logits, self.batch.last.repeat(v)).float()
        values = METRICS[self.metric](final, self.batch.answers.repeat(v, 1),
                                      self.batch.wrongs.repeat(v, 1), self.reference.repeat(v, 1).float())
        return values.view(v, b).mean(1)

    def loss(self, logits: Tensor) -> Tensor:
        """[V] losses: 0 for the full model."""
        value = self.metric_value(logits)
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

    def run_variants(self, mask: Tensor, k: int, columns: Tensor, outputs: Tensor) -> Tensor:
        """Losses of ``V`` variants that differ only in input ``k``'s column ``columns`` ``[V, U]``,
        recomputing only the suffix of the network from ``k``'s layer on. ``outputs`` are the
        current circuit's node outputs (valid for every node before ``k``)."""
        v, b = columns.shape[0], len(self.batch)
        self.forward_passes += v
        n = self.graph.n_avail[k]
        inp = self.graph.inputs[k]
        out, abl = outputs[:n], self.ablation[:n]
        x = torch.einsum("ubpd,vu->vbpd", out - abl, columns[:, :n].to(out.dtype)) + abl.sum(0)
        x = x + self._bias(inp.layer, inp.stage)
        start = (inp.layer, inp.stage)
        with torch.no_grad():
            run = forward_from(self.weights, self.graph, self.batch.clean.repeat(v, 1),
                               self.ablation.repeat(1, v, 1, 1), mask, start=start,
                               outputs=outputs.repeat(1, v, 1, 1),
                               override=(k, x.reshape(v * b, *x.shape[2:])))
        return self.loss(run.logits)

    def _bias(self, layer: int, stage: int) -> Tensor:
        """Residual-stream biases that belong to no node, as seen by an input at (layer, stage)."""
        b_o = self.weights.b_o
        return b_o[: layer + (1 if stage >= 1 else 0)].sum(0) if stage < 2 else b_o.sum(0)

    def outputs_of(self, mask: Tensor) -> Tensor:
        """Node outputs ``[U, B, P, D]`` of the circuit ``mask``."""
        with torch.no_grad():
            return patched_forward(self.weights, self.graph, self.batch.clean, self.ablation,
                                   mask).outputs
