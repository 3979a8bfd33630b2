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

from discovery.arch.base import Rotary, UnsupportedModelError, Weights, activation, norm_each, stack
from discovery.arch.llama import _bias, _heads_in, grouped_qkv


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

    @classmethod
    def from_safetensors(cls, config: dict, tensors: dict[str, Tensor]) -> GemmaWeights | None:
        """The same weights as :meth:`from_hf` from a saved Gemma / Gemma 2 / Gemma 3 (text)
        ``config.json`` and its safetensors, without building the ``transformers`` model
        (start-up time). Defaults are the config classes' (Gemma 2: ``query_pre_attn_scalar`` 256,
        soft-caps 50 / 30, ``sliding_window`` 4096, ``layer_types`` alternating from sliding;
        Gemma 3: one full layer in 6). Rotary comes from :mod:`discovery.arch.rope` (Gemma 3: one
        per layer type from its own ``rope_parameters`` entry, default rope only). None, so that
        the caller reads the ``transformers`` model, for a file or config it cannot reproduce: no
        ``head_dim`` / ``num_key_value_heads`` (class defaults that do not follow the shapes),
        another rope type or a partial rotary factor, bidirectional attention, an untied file
        without ``lm_head.weight``."""
        archs = config.get("architectures") or []
        gen = GENERATIONS.get(archs[0]) if archs else None
        required = ("num_attention_heads", "hidden_size", "num_hidden_layers", "head_dim", "num_key_value_heads")
        if (gen is None or any(not config.get(k) for k in required)
                or "model.embed_tokens.weight" not in tensors or config.get("use_bidirectional_attention")):
            return None
        n_heads, d, n_layers = config["num_attention_heads"], config["hidden_size"], config["num_hidden_layers"]
        n_kv, head_dim = config["num_key_value_heads"], config["head_dim"]
        rotaries = _saved_rotaries(config, gen, head_dim, n_layers)
        if rotaries is None:
            return None
        wte = tensors["model.embed_tokens.weight"]
        w_u = tensors.get("lm_head.weight")
        if w_u is None:
            if not config.get("tie_word_embeddings", True):
                return None  # transformers would say what is missing
            w_u = wte
        if gen.family == "gemma":
            act = config.get("hidden_act", "gelu_pytorch_tanh")
            act = "gelu_pytorch_tanh" if act == "gelu" else act  # GemmaConfig's legacy conversion
            scale, windows, attn_cap = head_dim ** -0.5, (None,) * n_layers, None
            final_cap = config.get("final_logit_softcapping")
        else:
            act = config.get("hidden_activation", "gelu_pytorch_tanh")
            scale = config.get("query_pre_attn_scalar", 256) ** -0.5
            types = _layer_types(config, gen, n_layers)
            window = config.get("sliding_window", 4096)
            windows = tuple(window if t == "sliding_attention" else None for t in types)
            attn_cap = config.get("attn_logit_softcapping", 50.0) if gen.attn_softcap else None
            final_cap = config.get("final_logit_softcapping", 30.0 if gen.family == "gemma2" else None)

        def layers(name: str) -> Tensor | None:  # [L, ...] of model.layers.{i}.name, None if absent
            if f"model.layers.0.{name}" not in tensors:
                return None
            return torch.stack([tensors[f"model.layers.{i}.{name}"] for i in range(n_layers)])

        def bias(name: str, n: int) -> Tensor | None:
            b = layers(name)
            return None if b is None else b.view(n_layers, n, -1)

        w_o = layers("self_attn.o_proj.weight")  # [L, D, H*E]
        b_o = layers("self_attn.o_proj.bias")
        post = gen.post_norm
        return cls(
            wte=wte, embed_scale=torch.tensor(d ** 0.5, device=wte.device).to(wte.dtype),
            ln1_w=layers("input_layernorm.weight"),
            w_q=_heads_in(layers("self_attn.q_proj.weight"), n_heads),
            w_k=_heads_in(layers("self_attn.k_proj.weight"), n_kv),
            w_v=_heads_in(layers("self_attn.v_proj.weight"), n_kv),
            b_q=bias("self_attn.q_proj.bias", n_heads), b_k=bias("self_attn.k_proj.bias", n_kv),
            b_v=bias("self_attn.v_proj.bias", n_kv),
            q_norm_w=layers("self_attn.q_norm.weight") if gen.qk_norm else None,
            k_norm_w=layers("self_attn.k_norm.weight") if gen.qk_norm else None,
            w_o=w_o.transpose(1, 2).reshape(n_layers, n_heads, head_dim, d),
            b_o=b_o if b_o is not None else torch.zeros(n_layers, d, dtype=w_o.dtype, device=w_o.device),
            post_attn_w=layers("post_attention_layernorm.weight") if post else None,
            pre_mlp_w=layers("pre_feedforward_layernorm.weight" if post else "post_attention_layernorm.weight"),
            post_mlp_w=layers("post_feedforward_layernorm.weight") if post else None,
            w_gate=layers("mlp.gate_proj.weight").transpose(1, 2), w_up=layers("mlp.up_proj.weight").transpose(1, 2),
            w_down=layers("mlp.down_proj.weight").transpose(1, 2),
            lnf_w=tensors["model.norm.weight"], w_u=w_u.T,
            eps=config.get("rms_norm_eps", 1e-6), act=act, n_heads=n_heads,
            kv_of=torch.arange(n_heads, device=w_o.device) // (n_heads // n_kv),
            rotaries=rotaries, scale=float(scale), attn_softcap=attn_cap, final_softcap=final_cap,
            windows=windows, family=gen.family, post_attn_norm=post,
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
        q, k, v = grouped_qkv(self, layer, tuple(norm_each(norm, q_in, k_in, v_in)), heads)
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


def _layer_types(config: dict, gen: _Generation, n_layers: int) -> list[str]:
    """``config.layer_types``, or the config class's default: Gemma 2 alternates sliding / full,
    Gemma 3 has one full layer every ``sliding_window_pattern`` (6)."""
    types = config.get("layer_types")
    if types is not None:
        return types
    every = 2 if gen.family == "gemma2" else config.get("sliding_window_pattern", 6)
    return ["sliding_attention" if (i + 1) % every else "full_attention" for i in range(n_layers)]


def _saved_rotaries(config: dict, gen: _Generation, head_dim: int, n_layers: int) -> tuple[Rotary, ...] | None:
    """Per-layer :class:`Rotary` from the config alone (:func:`discovery.arch.rope.rotary_from_config`),
    or None when it cannot be reproduced exactly. Gemma 1/2: one rope (default or linear) over the
    whole head. Gemma 3: one per layer type from ``rope_parameters[layer_type]``, default rope
    only (its own ``compute_default_rope_parameters``: ``rope_theta`` over the whole head, scaling 1;
    the other types go through ``per_layer_config``, not reproduced here)."""
    from discovery.arch.rope import rotary_from_config

    if not gen.rotary_per_layer_type:
        rope = rotary_from_config(config, head_dim)
        return None if rope is None or rope[1] != head_dim else (Rotary(rope[0], head_dim),) * n_layers
    params = config.get("rope_parameters")
    types = _layer_types(config, gen, n_layers)
    if not isinstance(params, dict) or len(types) != n_layers:
        return None
    by_type = {}
    for t in set(types):
        p = params.get(t)
        if (not isinstance(p, dict) or p.get("rope_type", "default") != "default"
                or p.get("partial_rotary_factor", 1.0) != 1.0 or "rope_theta" not in p):
            return None
        rope = rotary_from_config({"rope_parameters": p}, head_dim)
        if rope is None or rope[1] != head_dim:
            return None
        by_type[t] = Rotary(rope[0], head_dim)
    return tuple(by_type[t] for t in types)
