"""The Gemma family (``GemmaForCausalLM``, ``Gemma2ForCausalLM``, ``Gemma3ForCausalLM``): one
:class:`GemmaWeights` whose flags say what differs between the three generations.

What makes Gemma different from Llama, reproduced exactly as ``transformers`` 5.x computes it:

- the token embedding is multiplied by ``sqrt(hidden_size)`` cast to the weights' dtype (the
  ``embed_scale`` buffer of ``GemmaTextScaledWordEmbedding``); there is no positional node;
- RMSNorm scales by ``1 + w`` in fp32 and casts afterwards (:func:`gemma_rms_norm`);
- Gemma 2/3 post-norm both sublayers: ``post_attention_layernorm`` is applied to the attention
  output (so ``post_attn_norm`` is True and the engine recomputes it per receiver through
  :meth:`GemmaWeights.attn_out_norm`), ``post_feedforward_layernorm`` to the MLP output (inside
  :meth:`GemmaWeights.mlp_output`: the MLP is one node, so the engine stays linear in it);
  their pre-MLP norm is ``pre_feedforward_layernorm`` (Gemma 1: ``post_attention_layernorm``);
- attention scaling is the module's ``scaling`` (Gemma 2/3: ``query_pre_attn_scalar ** -0.5``),
  then Gemma 2's attention logit soft-capping ``tanh(s / cap) * cap``. Gemma 3's attention does
  not pass ``attn_logit_softcapping`` to its attention function, so neither do we;
- Gemma 3 normalises q and k per head (over ``head_dim``) before rotary, and its local (sliding)
  and global layers use different rotary bases: each layer takes the rotary of its
  ``config.layer_types`` entry from the model's own ``Gemma3RotaryEmbedding``;
- sliding windows per layer (the attention module's ``sliding_window``: Gemma 2 alternates,
  Gemma 3 follows ``layer_types``); transformers masks ``key > query - window``, which is
  :func:`discovery.patching.attention_mask`'s rule;
- the logits are soft-capped by ``final_logit_softcapping`` when set (Gemma 2/3).

Grouped-query attention as in :mod:`discovery.arch.llama`: every query head has its own k and v
inputs; ``kv_of`` maps a query head to the key-value group whose W_K, W_V (and k norm) it uses.

Shapes: ``L`` layers, ``H`` query heads, ``H_kv`` key-value heads, ``D`` d_model, ``E`` head_dim,
``F`` d_mlp, ``B`` batch, ``P`` positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from discovery.arch.base import Rotary, UnsupportedModelError, Weights, activation, project_heads, stack
from discovery.arch.llama import _bias, _heads_in


def gemma_rms_norm(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """Gemma's RMSNorm of ``x`` ``[..., N]`` with weight ``w`` ``[N]``: normalised and scaled by
    ``1 + w`` in fp32, then cast back to ``x``'s dtype (Llama casts before scaling; in fp16/bf16
    the two differ, see transformers PR 29402)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * (1.0 + w.float())).type_as(x)


def softcap(x: Tensor, cap: float | None) -> Tensor:
    """Gemma's soft-capping ``tanh(x / cap) * cap`` (identity when ``cap`` is None)."""
    return x if cap is None else torch.tanh(x / cap) * cap


@dataclass(frozen=True)
class _Generation:
    """What one Gemma generation does. ``act_field``: the config field its MLP's activation is
    read from; ``post_norm``: post-attention and post-feedforward norms; ``qk_norm``: per-head q/k
    norms; ``attn_softcap``: its attention applies ``config.attn_logit_softcapping``;
    ``rotary_per_layer_type``: its rotary module takes a ``layer_type`` argument."""

    family: str
    act_field: str
    post_norm: bool
    qk_norm: bool
    attn_softcap: bool
    rotary_per_layer_type: bool


GENERATIONS: dict[str, _Generation] = {
    "GemmaForCausalLM": _Generation("gemma", "hidden_act", False, False, False, False),
    "Gemma2ForCausalLM": _Generation("gemma2", "hidden_activation", True, False, True, False),
    "Gemma3ForCausalLM": _Generation("gemma3", "hidden_activation", True, True, False, True),
}


class _LayerTypeRotary:
    """Gemma 3's rotary module for one layer type, called as ``module(x, position_ids)`` ->
    ``(cos, sin)`` like every other model's (what :class:`~discovery.arch.base.Rotary` expects)."""

    def __init__(self, module: Any, layer_type: str):
        self.module, self.layer_type = module, layer_type

    def __call__(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.module(x, position_ids, self.layer_type)


@dataclass
class GemmaWeights(Weights):
    wte: Tensor  # [vocab, D]
    embed_scale: Tensor  # [] sqrt(D) in the weights' dtype
    ln1_w: Tensor  # [L, D] input_layernorm
    w_q: Tensor  # [L, H, D, E]
    w_k: Tensor  # [L, H_kv, D, E]
    w_v: Tensor
    b_q: Tensor | None  # [L, H, E]
    b_k: Tensor | None  # [L, H_kv, E]
    b_v: Tensor | None
    q_norm_w: Tensor | None  # [L, E] (Gemma 3)
    k_norm_w: Tensor | None  # [L, E]
    w_o: Tensor  # [L, H, E, D]
    b_o: Tensor  # [L, D] (zeros without o_proj bias)
    post_attn_w: Tensor | None  # [L, D] post_attention_layernorm on the attention output (2/3)
    pre_mlp_w: Tensor  # [L, D] the MLP's input norm
    post_mlp_w: Tensor | None  # [L, D] post_feedforward_layernorm (2/3)
    w_gate: Tensor  # [L, D, F]
    w_up: Tensor  # [L, D, F]
    w_down: Tensor  # [L, F, D]
    lnf_w: Tensor  # [D]
    w_u: Tensor  # [D, vocab]
    eps: float
    act: str
    n_heads: int
    kv_of: Tensor  # [H] key-value group of each query head
    rotaries: tuple[Rotary, ...]  # per layer (Gemma 3's local and global layers differ)
    scale: float
    attn_softcap: float | None
    final_softcap: float | None
    windows: tuple[int | None, ...]  # per layer
    family: str = "gemma"
    post_attn_norm: bool = False

    @classmethod
    def from_hf(cls, model) -> GemmaWeights:
        """Read a Gemma, Gemma 2 or Gemma 3 (text-only) ``transformers`` model; the per-layer
        stacks are the one copy of the weights."""
        name = type(model).__name__
        gen = GENERATIONS.get(name)
        if gen is None:
            raise UnsupportedModelError(
                f"GemmaWeights reads {', '.join(GENERATIONS)}, not {name}"
                + ("; for the multimodal Gemma 3 load the text-only Gemma3ForCausalLM "
                   "(a Gemma3TextConfig)" if name == "Gemma3ForConditionalGeneration" else ""))
        cfg, m = model.config, model.model
        if getattr(cfg, "use_bidirectional_attention", False):
            raise UnsupportedModelError(
                f"{name} with config.use_bidirectional_attention=True is not causal; edge-level "
                "discovery needs causal attention: set use_bidirectional_attention=False")
        blocks = list(m.layers)
        n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
        attn = blocks[0].self_attn
        head_dim = attn.head_dim
        d = cfg.hidden_size
        w_o = stack(blocks, lambda b: b.self_attn.o_proj.weight)  # [L, D, H*E]
        zeros = torch.zeros(len(blocks), d, dtype=w_o.dtype, device=w_o.device)
        layer_w = lambda get: stack(blocks, lambda b: get(b).weight)  # noqa: E731
        wte = m.embed_tokens.weight.detach()
        return cls(
            wte=wte,
            embed_scale=m.embed_tokens.embed_scale.detach().to(wte.dtype),
            ln1_w=layer_w(lambda b: b.input_layernorm),
            w_q=_heads_in(stack(blocks, lambda b: b.self_attn.q_proj.weight), n_heads),
            w_k=_heads_in(stack(blocks, lambda b: b.self_attn.k_proj.weight), n_kv),
            w_v=_heads_in(stack(blocks, lambda b: b.self_attn.v_proj.weight), n_kv),
            b_q=_bias(blocks, lambda b: b.self_attn.q_proj.bias, n_heads),
            b_k=_bias(blocks, lambda b: b.self_attn.k_proj.bias, n_kv),
            b_v=_bias(blocks, lambda b: b.self_attn.v_proj.bias, n_kv),
            q_norm_w=layer_w(lambda b: b.self_attn.q_norm) if gen.qk_norm else None,
            k_norm_w=layer_w(lambda b: b.self_attn.k_norm) if gen.qk_norm else None,
            w_o=w_o.transpose(1, 2).reshape(len(blocks), n_heads, head_dim, d),
            b_o=(stack(blocks, lambda b: b.self_attn.o_proj.bias)
                 if attn.o_proj.bias is not None else zeros),
            post_attn_w=layer_w(lambda b: b.post_attention_layernorm) if gen.post_norm else None,
            pre_mlp_w=layer_w(lambda b: b.pre_feedforward_layernorm if gen.post_norm
                              else b.post_attention_layernorm),
            post_mlp_w=layer_w(lambda b: b.post_feedforward_layernorm) if gen.post_norm else None,
            w_gate=stack(blocks, lambda b: b.mlp.gate_proj.weight).transpose(1, 2),
            w_up=stack(blocks, lambda b: b.mlp.up_proj.weight).transpose(1, 2),
            w_down=stack(blocks, lambda b: b.mlp.down_proj.weight).transpose(1, 2),
            lnf_w=m.norm.weight.detach(), w_u=model.lm_head.weight.detach().T,
            eps=cfg.rms_norm_eps, act=getattr(cfg, gen.act_field), n_heads=n_heads,
            kv_of=torch.arange(n_heads, device=w_o.device) // (n_heads // n_kv),
            rotaries=_rotaries(m, cfg, gen, head_dim, len(blocks)),
            scale=float(getattr(attn, "scaling", head_dim ** -0.5)),
            attn_softcap=getattr(cfg, "attn_logit_softcapping", None) if gen.attn_softcap else None,
            final_softcap=getattr(cfg, "final_logit_softcapping", None),
            windows=tuple(getattr(b.self_attn, "sliding_window", None) for b in blocks),
            family=gen.family, post_attn_norm=gen.post_norm,
        )

    def window(self, layer: int) -> int | None:
        return self.windows[layer]

    def scale_scores(self, scores: Tensor) -> Tensor:
        """``q . k`` ``[H, B, Q, P]`` times the model's scaling, then soft-capped (Gemma 2), in
        transformers' order; the mask is applied after this by the engine, as there."""
        return softcap(scores * self.scale, self.attn_softcap)

    def attn_out_norm(self, layer: int, s: Tensor) -> Tensor:
        """Gemma 2/3: ``post_attention_layernorm`` of the heads' summed output ``s`` ``[..., D]``
        (b_o included); Gemma 1: ``s``."""
        return s if self.post_attn_w is None else gemma_rms_norm(s, self.post_attn_w[layer], self.eps)

    def embed(self, tokens: Tensor) -> Tensor:
        return self.wte[tokens] * self.embed_scale

    def project_qkv(self, layer, q_in, k_in, v_in, heads=slice(None), q_pos=None):
        norm = lambda x: gemma_rms_norm(x, self.ln1_w[layer], self.eps)  # noqa: E731
        kv = self.kv_of[heads]
        biases = ((None,) * 3 if self.b_q is None
                  else (self.b_q[layer, heads], self.b_k[layer, kv], self.b_v[layer, kv]))
        q, k, v = project_heads((norm(q_in), norm(k_in), norm(v_in)),
                                (self.w_q[layer, heads], self.w_k[layer, kv], self.w_v[layer, kv]), biases)
        if self.q_norm_w is not None:  # Gemma 3: per head over E, before rotary
            q = gemma_rms_norm(q, self.q_norm_w[layer], self.eps)
            k = gemma_rms_norm(k, self.k_norm_w[layer], self.eps)
        n, rotary = k.shape[2], self.rotaries[layer]
        return rotary.apply(q, n, q_pos), rotary.apply(k, n, None), v

    def mlp_activations(self, layer: int, x: Tensor) -> Tensor:
        h = gemma_rms_norm(x, self.pre_mlp_w[layer], self.eps)
        return activation(self.act, h @ self.w_gate[layer]) * (h @ self.w_up[layer])

    def mlp_output(self, layer: int, post: Tensor) -> Tensor:
        """``down_proj`` of the neurons ``[B, P, F]``, then (Gemma 2/3) post_feedforward_layernorm:
        what the residual stream receives ``[B, P, D]``."""
        out = post @ self.w_down[layer]
        return out if self.post_mlp_w is None else gemma_rms_norm(out, self.post_mlp_w[layer], self.eps)

    def unembed(self, x: Tensor) -> Tensor:
        return softcap(gemma_rms_norm(x, self.lnf_w, self.eps) @ self.w_u, self.final_softcap)


def _rotaries(m, cfg, gen: _Generation, head_dim: int, n_layers: int) -> tuple[Rotary, ...]:
    """One :class:`Rotary` per layer from the model's own rotary module; Gemma 3 shares one per
    ``layer_type`` (its local and global layers have different bases), as Gemma3TextModel does."""
    if not gen.rotary_per_layer_type:
        return (Rotary(m.rotary_emb, head_dim),) * n_layers
    by_type = {t: Rotary(_LayerTypeRotary(m.rotary_emb, t), head_dim) for t in set(cfg.layer_types)}
    return tuple(by_type[cfg.layer_types[i]] for i in range(n_layers))
