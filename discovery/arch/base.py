"""What every architecture adapter provides to the patched forward: the :class:`Weights` interface
and the shared pieces (norms, rotary, activations).

An adapter reads a ``transformers`` model's weights once into a ``Weights`` subclass; the patched
forward (:mod:`discovery.patching`), fast ACDC's suffix passes and the attribution methods only
call the methods below, so they run unchanged on every registered architecture.

Shapes: ``H`` heads, ``B`` batch, ``P`` positions, ``D`` d_model, ``E`` d_head, ``F`` d_mlp.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


class UnsupportedModelError(ValueError):
    """Edge-level patching has no adapter for this model's architecture."""


def layer_norm(x: Tensor, w: Tensor, b: Tensor | None, eps: float) -> Tensor:
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


def rms_norm(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """Llama's RMSNorm, computed in fp32 as ``transformers`` does, then scaled by ``w``."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def activation(name: str, x: Tensor) -> Tensor:
    """The MLP nonlinearity; GPT-2's tanh-approximated GELU through torch's fused kernel (the same
    formula as transformers' ``gelu_new``, several times faster than its Python version)."""
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return torch.nn.functional.gelu(x, approximate="tanh")
    if name in ("silu", "swish"):
        return torch.nn.functional.silu(x)
    if name == "gelu":
        return torch.nn.functional.gelu(x)
    if name == "relu":
        return torch.nn.functional.relu(x)
    # Rare ones from transformers' table; imported here only (transformers.activations costs ~0.6 s
    # of start-up through its distributed-tensor imports).
    from transformers.activations import ACT2FN

    return ACT2FN[name](x)


def norm_each(norm, *xs: Tensor) -> list[Tensor]:
    """``norm`` of each input, computed once per distinct tensor (a full-model pass gives every
    head's q, k and v the same residual stream)."""
    done: dict[int, Tensor] = {}
    for x in xs:
        if id(x) not in done:
            done[id(x)] = norm(x)
    return [done[id(x)] for x in xs]


def project_heads(xs: tuple[Tensor, Tensor, Tensor], ws: tuple[Tensor, Tensor, Tensor],
                  bs: tuple[Tensor | None, Tensor | None, Tensor | None]) -> tuple[Tensor, Tensor, Tensor]:
    """Each head's normed q, k, v inputs ``[H, B, P, D]`` through its own ``[H, D, E]`` weights
    (a key-value group's, under grouped-query attention) plus ``[H, E]`` biases where there are
    any -> q, k, v ``[H, B, P, E]`` (before rotary)."""
    out = []
    for x, w, bias in zip(xs, ws, bs, strict=True):
        y = torch.einsum("hbpd,hde->hbpe", x, w)
        out.append(y if bias is None else y + bias[:, None, None])
    return out[0], out[1], out[2]


def stack(blocks, get) -> Tensor:
    """``get(block)`` of every layer, detached and stacked along a new dim 0 (no copy of a layer's
    tensor beyond the stack itself)."""
    return torch.stack([get(block).detach() for block in blocks])


class Rotary:
    """Rotary position embedding with cos/sin taken from the model's own rotary module (so rope
    scaling, ``attention_scaling`` and partial rotary are exactly the model's). Only the first
    ``dim`` dims of each head rotate (GPT-NeoX's ``rotary_pct``); cos/sin are cached per length."""

    def __init__(self, module: Any, dim: int):
        self.module, self.dim = module, dim
        self._cache: dict[tuple[int, torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    def cos_sin(self, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin ``[n, dim]`` for positions ``0..n-1``."""
        key = (n, like.dtype, like.device)
        if key not in self._cache:
            with torch.no_grad():
                pos = torch.arange(n, device=like.device)[None]
                cos, sin = self.module(like, pos)
            self._cache[key] = cos[0].detach(), sin[0].detach()
        return self._cache[key]

    def apply(self, x: Tensor, n: int, positions: Tensor | None) -> Tensor:
        """Rotate ``x`` ``[H, B, P', E]``: at positions ``0..P'-1`` (``positions`` None, then
        ``n == P'``) or, with ``P' == 1``, each prompt's query at ``positions`` ``[B]``."""
        cos, sin = self.cos_sin(n, x)
        if positions is None:
            cos, sin = cos[None, None], sin[None, None]  # [1, 1, P, r]
        else:
            cos, sin = cos[positions][None, :, None], sin[positions][None, :, None]  # [1, B, 1, r]
        r = self.dim
        rot, rest = x[..., :r], x[..., r:]
        half = r // 2
        rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
        out = rot * cos + rotated * sin
        return out if rest.shape[-1] == 0 else torch.cat((out, rest), dim=-1)


class Weights:
    """The interface the patched forward uses. Subclasses hold the weights, per layer stacked along
    dim 0, and must set ``wte`` ``[vocab, D]``, ``w_o`` ``[L, H, E, D]``, ``b_o`` ``[L, D]``,
    ``n_heads``, ``parallel`` (attention and MLP of a layer read the same residual stream)."""

    wte: Tensor
    w_o: Tensor
    b_o: Tensor
    n_heads: int
    parallel: bool = False
    #: name of the architecture family (stored with circuits, shown in errors)
    family: str = ""
    #: post-norm attention (Gemma 2/3): the residual stream receives
    #: ``attn_out_norm(layer, sum of the layer's heads + b_o[layer])``, so every receiver
    #: recomputes that norm from its own mix of the layer's heads (the engine does this).
    post_attn_norm: bool = False

    @property
    def n_layers(self) -> int:
        return self.w_o.shape[0]

    @property
    def n_kv_heads(self) -> int:
        """Key-value groups of grouped-query attention: ``n_heads`` unless the adapter maps query
        heads to shared K/V weights (``kv_of`` ``[H]``, Llama/Mistral/Qwen2/Gemma)."""
        kv_of = getattr(self, "kv_of", None)
        return self.n_heads if kv_of is None else int(kv_of.max()) + 1

    def window(self, layer: int) -> int | None:
        """Sliding-window length of ``layer``'s attention (None: full causal attention)."""
        return None

    def scale_scores(self, scores: Tensor) -> Tensor:
        """Attention scores ``q . k`` scaled: by 1/sqrt(d_head) unless the model says otherwise."""
        return scores / math.sqrt(self.w_o.shape[2])

    def attn_out_norm(self, layer: int, s: Tensor) -> Tensor:
        """What the residual stream receives from ``layer``'s attention, given the sum ``s``
        ``[..., D]`` of its heads' outputs and ``b_o[layer]``: ``s`` itself unless post-norm."""
        return s

    def embed(self, tokens: Tensor) -> Tensor:
        """The node ``embed`` ``[B, P, D]`` from tokens ``[B, P]``."""
        raise NotImplementedError

    def project_qkv(self, layer: int, q_in: Tensor, k_in: Tensor, v_in: Tensor,
                    heads: slice | Tensor = slice(None),
                    q_pos: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Each head's inputs ``[H, B, P, D]`` -> q, k, v ``[H, B, P, E]`` (rotary applied). With
        ``q_pos`` ``[B]`` the query input is ``[H, B, 1, D]``, taken at those positions."""
        raise NotImplementedError

    def mlp_activations(self, layer: int, x: Tensor) -> Tensor:
        """MLP ``layer``'s neurons ``[B, P, F]`` on its input ``[B, P, D]`` (gated: act(gate)*up)."""
        raise NotImplementedError

    def mlp_output(self, layer: int, post: Tensor) -> Tensor:
        """MLP ``layer``'s output ``[B, P, D]`` from its neurons ``[B, P, F]`` (bias included)."""
        raise NotImplementedError

    def unembed(self, x: Tensor) -> Tensor:
        """Logits ``[..., vocab]`` from the final residual stream ``[..., D]``."""
        raise NotImplementedError

    def free_bias(self, layer: int, stage: int) -> Tensor:
        """Residual-stream bias ``[D]`` seen by an input at (layer, stage) that belongs to no node:
        the attention output biases of the layers before it (and of its own layer, for a
        sequential MLP). Stage 0: heads, 1: MLP, 2: logits (``layer`` = n_layers)."""
        if self.post_attn_norm:  # b_o is inside the post-norm: the engine adds it there
            return torch.zeros_like(self.b_o[0])
        n = layer + (1 if stage == 1 and not self.parallel else 0)
        return self.b_o[:n].sum(0) if n > 0 else torch.zeros_like(self.b_o[0])
