"""Patched forward passes of GPT-2-architecture models, edge by edge.

We never mutate the model: its weights are read once into :class:`GPT2Weights` and the forward pass
below rebuilds every downstream input (q, k, v of each head, each MLP, the logits) as the sum of its
incoming edges, each taken from this run or from the *ablation* (the corrupted prompt's activations
by default, or their mean, or zero). With every edge kept the pass equals the model's own forward
(tested against the TransformerBridge). Nothing needs undoing, so no hooks or context managers.

Shapes: ``B`` batch, ``P`` positions, ``D`` d_model, ``U`` upstream nodes, ``I`` inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers.activations import ACT2FN

from discovery.graph import Graph


class UnsupportedModelError(ValueError):
    """Edge-level patching needs a GPT-2-architecture model."""


@dataclass
class GPT2Weights:
    """The weights the patched forward needs, per layer stacked along dim 0."""

    wte: Tensor  # [vocab, D]
    wpe: Tensor  # [n_ctx, D]
    ln1_w: Tensor  # [L, D]
    ln1_b: Tensor
    w_q: Tensor  # [L, H, D, d_head]
    w_k: Tensor
    w_v: Tensor
    b_q: Tensor  # [L, H, d_head]
    b_k: Tensor
    b_v: Tensor
    w_o: Tensor  # [L, H, d_head, D]
    b_o: Tensor  # [L, D]
    ln2_w: Tensor
    ln2_b: Tensor
    w_in: Tensor  # [L, D, d_mlp]
    b_in: Tensor  # [L, d_mlp]
    w_out: Tensor  # [L, d_mlp, D]
    b_out: Tensor  # [L, D]
    lnf_w: Tensor  # [D]
    lnf_b: Tensor
    w_u: Tensor  # [D, vocab]
    b_u: Tensor | None
    eps: float
    act: str
    n_heads: int

    @property
    def n_layers(self) -> int:
        return self.ln1_w.shape[0]

    @classmethod
    def from_hf(cls, model) -> GPT2Weights:
        """Read a ``transformers`` GPT2LMHeadModel (what a TransformerBridge wraps)."""
        if type(model).__name__ != "GPT2LMHeadModel":
            raise UnsupportedModelError(
                f"edge-level discovery supports GPT-2-architecture models (GPT2LMHeadModel); "
                f"this model is {type(model).__name__}"
            )
        cfg, t = model.config, model.transformer
        n_heads, d = cfg.n_head, cfg.n_embd
        d_head = d // n_heads

        def stack(get) -> Tensor:
            return torch.stack([get(block).detach() for block in t.h])

        qkv_w = stack(lambda b: b.attn.c_attn.weight)  # [L, D, 3D] (Conv1D: x @ W)
        qkv_b = stack(lambda b: b.attn.c_attn.bias)  # [L, 3D]
        w_q, w_k, w_v = (qkv_w[:, :, i * d:(i + 1) * d].reshape(-1, d, n_heads, d_head).transpose(1, 2)
                         for i in range(3))
        b_q, b_k, b_v = (qkv_b[:, i * d:(i + 1) * d].reshape(-1, n_heads, d_head) for i in range(3))
        lm_bias = getattr(model.lm_head, "bias", None)
        return cls(
            wte=t.wte.weight.detach(), wpe=t.wpe.weight.detach(),
            ln1_w=stack(lambda b: b.ln_1.weight), ln1_b=stack(lambda b: b.ln_1.bias),
            w_q=w_q, w_k=w_k, w_v=w_v, b_q=b_q, b_k=b_k, b_v=b_v,
            w_o=stack(lambda b: b.attn.c_proj.weight).reshape(-1, n_heads, d_head, d),
            b_o=stack(lambda b: b.attn.c_proj.bias),
            ln2_w=stack(lambda b: b.ln_2.weight), ln2_b=stack(lambda b: b.ln_2.bias),
            w_in=stack(lambda b: b.mlp.c_fc.weight), b_in=stack(lambda b: b.mlp.c_fc.bias),
            w_out=stack(lambda b: b.mlp.c_proj.weight), b_out=stack(lambda b: b.mlp.c_proj.bias),
            lnf_w=t.ln_f.weight.detach(), lnf_b=t.ln_f.bias.detach(),
            w_u=model.lm_head.weight.detach().T, b_u=None if lm_bias is None else lm_bias.detach(),
            eps=cfg.layer_norm_epsilon, act=cfg.activation_function, n_heads=n_heads,
        )


def _ln(x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


def project_qkv(w: GPT2Weights, layer: int, q_in: Tensor, k_in: Tensor, v_in: Tensor,
                heads: slice | Tensor = slice(None)) -> tuple[Tensor, Tensor, Tensor]:
    """Each head's own inputs ``[H, B, P, D]`` through ln_1 and its W_Q, W_K, W_V -> ``[H, B, P, d_head]``."""
    ln = lambda x: _ln(x, w.ln1_w[layer], w.ln1_b[layer], w.eps)  # noqa: E731
    q = torch.einsum("hbpd,hde->hbpe", ln(q_in), w.w_q[layer, heads]) + w.b_q[layer, heads][:, None, None]
    k = torch.einsum("hbpd,hde->hbpe", ln(k_in), w.w_k[layer, heads]) + w.b_k[layer, heads][:, None, None]
    v = torch.einsum("hbpd,hde->hbpe", ln(v_in), w.w_v[layer, heads]) + w.b_v[layer, heads][:, None, None]
    return q, k, v


def heads_forward(w: GPT2Weights, layer: int, q_in: Tensor, k_in: Tensor, v_in: Tensor,
                  heads: slice = slice(None)) -> Tensor:
    """The ``heads`` of ``layer`` (default all) from their own q, k, v inputs ``[H, B, P, D]`` ->
    outputs ``[H, B, P, D]`` (without the layer's output bias, which belongs to no head)."""
    q, k, v = project_qkv(w, layer, q_in, k_in, v_in, heads)
    scores = torch.einsum("hbqe,hbke->hbqk", q, k) / math.sqrt(q.shape[-1])
    n = scores.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
    scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    z = torch.einsum("hbqk,hbke->hbqe", scores.softmax(-1), v)
    return torch.einsum("hbqe,hed->hbqd", z, w.w_o[layer, heads])


def _act(name: str, x: Tensor) -> Tensor:
    """The MLP nonlinearity; GPT-2's tanh-approximated GELU through torch's fused kernel (the same
    formula as transformers' ``gelu_new``, several times faster than its Python version)."""
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return torch.nn.functional.gelu(x, approximate="tanh")
    return ACT2FN[name](x)


def mlp_forward(w: GPT2Weights, layer: int, x: Tensor, neuron_mask: Tensor | None = None,
                neuron_ablation: Tensor | None = None) -> Tensor:
    """MLP of ``layer`` on its input ``[B, P, D]``. With ``neuron_mask`` ``[d_mlp]`` (1 keep, 0 ablate)
    the ablated neurons take ``neuron_ablation`` ``[B, P, d_mlp]`` as their activation."""
    post = _act(w.act, _ln(x, w.ln2_w[layer], w.ln2_b[layer], w.eps) @ w.w_in[layer] + w.b_in[layer])
    if neuron_mask is not None:
        post = post * neuron_mask + neuron_ablation * (1 - neuron_mask)
    return post @ w.w_out[layer] + w.b_out[layer]


def mlp_activations(w: GPT2Weights, layer: int, x: Tensor) -> Tensor:
    """The MLP's post-activation neurons ``[B, P, d_mlp]``."""
    return _act(w.act, _ln(x, w.ln2_w[layer], w.ln2_b[layer], w.eps) @ w.w_in[layer] + w.b_in[layer])


def embed(w: GPT2Weights, tokens: Tensor) -> Tensor:
    """Token + position embedding ``[B, P, D]``: the node ``embed``."""
    return w.wte[tokens] + w.wpe[: tokens.shape[1]]


def unembed(w: GPT2Weights, x: Tensor) -> Tensor:
    logits = _ln(x, w.lnf_w, w.lnf_b, w.eps) @ w.w_u
    return logits if w.b_u is None else logits + w.b_u


@dataclass
class PatchedRun:
    """Everything one patched pass produced: node outputs ``[U, B, P, D]`` and logits."""

    outputs: Tensor
    logits: Tensor


def free_bias(w: GPT2Weights, layer: int, stage: int) -> Tensor:
    """Residual-stream bias seen by an input at (layer, stage) that belongs to no node: the
    attention output biases of the layers before it (and of its own layer, for an MLP)."""
    n = layer + (1 if stage >= 1 else 0)
    return w.b_o[:n].sum(0) if n > 0 else torch.zeros_like(w.b_o[0])


def node_inputs(outputs: Tensor, ablation: Tensor, mask: Tensor, inputs: list[int],
                n_avail: int, ablation_sum: Tensor | None = None,
                scale: Tensor | None = None) -> Tensor:
    """Inputs ``[len(inputs), B, P, D]``: edge u->i carries ``outputs[u]`` where ``mask[u, i]`` is 1
    and ``ablation[u]`` where it is 0. All inputs listed share the same ``n_avail`` senders.
    ``ablation_sum``: ``ablation[:n_avail].sum(0)`` when the caller has it already. ``scale``
    ``[U]``: kept edges carry ``scale[u] * outputs[u]`` instead (dose-response experiments)."""
    out, abl = outputs[:n_avail], ablation[:n_avail]
    if scale is not None:
        out = out * scale[:n_avail].to(out.dtype).view(-1, *([1] * (out.dim() - 1)))
    m = mask[:n_avail, inputs].to(out.dtype)  # [u, i]
    return torch.einsum("ubpd,ui->ibpd", out - abl, m) + (abl.sum(0) if ablation_sum is None else ablation_sum)


def patched_forward(w: GPT2Weights, graph: Graph, tokens: Tensor, ablation: Tensor,
                    mask: Tensor) -> PatchedRun:
    """Run ``tokens`` with every edge where ``mask`` ``[U, I]`` is 0 replaced by ``ablation``."""
    return forward_from(w, graph, tokens, ablation, mask, start=(0, 0), outputs=None)


def forward_from(w: GPT2Weights, graph: Graph, tokens: Tensor, ablation: Tensor, mask: Tensor,
                 *, start: tuple[int, int], outputs: Tensor | None,
                 override: tuple[int, Tensor] | None = None,
                 deltas: dict[tuple[int, int], Tensor] | None = None,
                 neurons: dict[int, tuple[Tensor, Tensor]] | None = None,
                 scale: Tensor | None = None) -> PatchedRun:
    """The patched pass from ``start`` = (layer, stage) on, reusing ``outputs`` for every node
    computed before it (the suffix recomputation of fast ACDC). Stage 0: heads, 1: MLP, 2: logits.

    ``override = (k, x)`` replaces input ``k`` by ``x`` ``[B, P, D]`` (fast ACDC's candidates).
    ``deltas[(layer, stage)]`` ``[n_inputs_of_stage, B, P, D]`` is added to that stage's inputs:
    zeros that require grad, so backward gives the gradient at every input (EAP).
    ``neurons[layer] = (mask [d_mlp], ablated [B, P, d_mlp])``: MLP ``layer``'s neurons where the
    mask is 0 take their ablated activation (neuron-level circuits).
    ``scale`` ``[U]`` multiplies each node's output as its receivers see it (through kept edges;
    ``outputs`` stay unscaled): the dose-response experiments. None (the default) is scale 1."""

    def adjust(ks: list[int], x: Tensor, stage_key: tuple[int, int]) -> Tensor:
        if override is not None and override[0] in ks:
            x = x.clone()
            x[ks.index(override[0])] = override[1]
        if deltas is not None and stage_key in deltas:
            x = x + deltas[stage_key]
        return x

    n_layers, n_heads = graph.shape.n_layers, graph.shape.n_heads
    if outputs is None:
        outputs = torch.zeros_like(ablation)
        outputs[0] = embed(w, tokens)
    else:
        outputs = outputs.clone()
    up = 1 + start[0] * (n_heads + int(graph.shape.mlp))
    for layer in range(start[0], n_layers):
        if (layer, 0) >= start:
            ks = graph.inputs_of_layer(layer, 0)
            x = node_inputs(outputs, ablation, mask, ks, graph.n_avail[ks[0]],
                            scale=scale) + free_bias(w, layer, 0)
            x = adjust(ks, x, (layer, 0))
            x = x.view(n_heads, 3, *x.shape[1:])
            outputs[up:up + n_heads] = heads_forward(w, layer, x[:, 0], x[:, 1], x[:, 2])
        up += n_heads
        if graph.shape.mlp:
            ks = graph.inputs_of_layer(layer, 1)
            x = node_inputs(outputs, ablation, mask, ks, graph.n_avail[ks[0]],
                            scale=scale) + free_bias(w, layer, 1)
            neuron = (neurons or {}).get(layer, (None, None))
            outputs[up] = mlp_forward(w, layer, adjust(ks, x, (layer, 1))[0], *neuron)
            up += 1
    k = graph.n_inputs - 1
    final = node_inputs(outputs, ablation, mask, [k], graph.n_avail[k], scale=scale) + free_bias(w, n_layers, 2)
    return PatchedRun(outputs, unembed(w, adjust([k], final, (n_layers, 2))[0]))


def clean_outputs(w: GPT2Weights, graph: Graph, tokens: Tensor) -> PatchedRun:
    """The unpatched run: every node's output on ``tokens`` (also how ablations are computed)."""
    every = torch.ones(graph.n_upstream, graph.n_inputs, dtype=torch.bool, device=tokens.device)
    zeros = torch.zeros(graph.n_upstream, *tokens.shape, w.wte.shape[1], device=tokens.device,
                        dtype=w.wte.dtype)
    return patched_forward(w, graph, tokens, zeros, every)
