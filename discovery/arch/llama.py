"""The Llama family (``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``): RMSNorm,
rotary from the model's own rotary module, grouped-query attention, SwiGLU MLP, optional q/k/v
biases (Qwen2), sliding windows (Mistral, Qwen2's sliding layers), tied embeddings through
``lm_head``. There is no positional node: ``embed`` is the token embedding.

Grouped-query attention: the graph gives every *query* head its own k and v inputs (separate
edges, MIB-compatible); heads of one key-value group share W_K and W_V (``kv_of`` maps a query head
to its group), so each head projects its own inputs with its group's weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from discovery.arch.base import Rotary, Weights, activation, norm_each, project_heads, rms_norm, stack


def _heads_in(w: Tensor, n: int) -> Tensor:
    """A Linear weight ``[L, n*E, D]`` -> per-head ``[L, n, D, E]``."""
    return w.view(w.shape[0], n, -1, w.shape[-1]).transpose(2, 3)


def _bias(blocks, get, n: int) -> Tensor | None:
    first = get(blocks[0])
    return None if first is None else stack(blocks, get).view(len(blocks), n, -1)


def grouped_qkv(w, layer: int, xs: tuple[Tensor, Tensor, Tensor],
                heads: slice | Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Grouped-query projection shared by the Llama and Gemma families: normed inputs ``xs``
    ``[H, B, P, D]`` of query heads ``heads`` through W_Q of each head and W_K, W_V (and biases)
    of its key-value group (``w.kv_of``) -> q, k, v ``[H, B, P, E]`` before rotary."""
    kv = w.kv_of[heads]
    biases = ((None,) * 3 if w.b_q is None
              else (w.b_q[layer, heads], w.b_k[layer, kv], w.b_v[layer, kv]))
    return project_heads(xs, (w.w_q[layer, heads], w.w_k[layer, kv], w.w_v[layer, kv]), biases)


@dataclass
class LlamaWeights(Weights):
    wte: Tensor  # [vocab, D]
    ln1_w: Tensor  # [L, D]
    w_q: Tensor  # [L, H, D, E]
    w_k: Tensor  # [L, H_kv, D, E]
    w_v: Tensor
    b_q: Tensor | None  # [L, H, E]
    b_k: Tensor | None  # [L, H_kv, E]
    b_v: Tensor | None
    w_o: Tensor  # [L, H, E, D]
    b_o: Tensor  # [L, D] (zeros without o_proj bias)
    ln2_w: Tensor  # [L, D]
    w_gate: Tensor  # [L, D, F]
    w_up: Tensor  # [L, D, F]
    w_down: Tensor  # [L, F, D]
    b_gate: Tensor | None  # [L, F]
    b_up: Tensor | None
    b_down: Tensor | None  # [L, D]
    lnf_w: Tensor  # [D]
    w_u: Tensor  # [D, vocab]
    eps: float
    act: str
    n_heads: int
    kv_of: Tensor  # [H] key-value group of each query head
    rotary: Rotary
    scale: float
    windows: tuple[int | None, ...]  # per layer
    family: str = "llama"

    @classmethod
    def from_hf(cls, model) -> LlamaWeights:
        """Read a Llama-family ``transformers`` model (weights are views, not copies, where the
        layout allows; the per-layer stacks are the one copy)."""
        cfg, m = model.config, model.model
        blocks = list(m.layers)
        n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
        attn = blocks[0].self_attn
        o_bias = getattr(attn.o_proj, "bias", None)
        d = cfg.hidden_size
        w_o = stack(blocks, lambda b: b.self_attn.o_proj.weight)  # [L, D, H*E]
        mlp = blocks[0].mlp
        opt = lambda get: None if get(mlp) is None else stack(blocks, lambda b: get(b.mlp))  # noqa: E731
        return cls(
            wte=m.embed_tokens.weight.detach(),
            ln1_w=stack(blocks, lambda b: b.input_layernorm.weight),
            w_q=_heads_in(stack(blocks, lambda b: b.self_attn.q_proj.weight), n_heads),
            w_k=_heads_in(stack(blocks, lambda b: b.self_attn.k_proj.weight), n_kv),
            w_v=_heads_in(stack(blocks, lambda b: b.self_attn.v_proj.weight), n_kv),
            b_q=_bias(blocks, lambda b: b.self_attn.q_proj.bias, n_heads),
            b_k=_bias(blocks, lambda b: b.self_attn.k_proj.bias, n_kv),
            b_v=_bias(blocks, lambda b: b.self_attn.v_proj.bias, n_kv),
            w_o=w_o.transpose(1, 2).reshape(len(blocks), n_heads, head_dim, d),
            b_o=(stack(blocks, lambda b: b.self_attn.o_proj.bias) if o_bias is not None
                 else torch.zeros(len(blocks), d, dtype=w_o.dtype, device=w_o.device)),
            ln2_w=stack(blocks, lambda b: b.post_attention_layernorm.weight),
            w_gate=stack(blocks, lambda b: b.mlp.gate_proj.weight).transpose(1, 2),
            w_up=stack(blocks, lambda b: b.mlp.up_proj.weight).transpose(1, 2),
            w_down=stack(blocks, lambda b: b.mlp.down_proj.weight).transpose(1, 2),
            b_gate=opt(lambda x: x.gate_proj.bias), b_up=opt(lambda x: x.up_proj.bias),
            b_down=opt(lambda x: x.down_proj.bias),
            lnf_w=m.norm.weight.detach(), w_u=model.lm_head.weight.detach().T,
            eps=cfg.rms_norm_eps, act=cfg.hidden_act, n_heads=n_heads,
            kv_of=torch.arange(n_heads, device=w_o.device) // (n_heads // n_kv),
            rotary=Rotary(m.rotary_emb, head_dim),
            scale=float(getattr(attn, "scaling", head_dim ** -0.5)),
            windows=tuple(_window(cfg, b.self_attn) for b in blocks),
            family=type(model).__name__.removesuffix("ForCausalLM").lower(),
        )

    @classmethod
    def from_safetensors(cls, config: dict, tensors: dict[str, Tensor]) -> LlamaWeights | None:
        """The same weights from a saved Llama/Mistral/Qwen2 ``config.json`` and its safetensors
        (``model.layers.{i}.self_attn.q_proj.weight`` ...), without building the ``transformers``
        model (start-up time). Rotary cos/sin come from :mod:`discovery.arch.rope` (default and
        linear rope); None, so that the caller reads the ``transformers`` model, for any other rope
        type, a partial rotary factor (Llama's default rope ignores it) or a Qwen2 config without
        ``layer_types`` (its sliding layers are derived by the config class). Biases are read
        where the file has them; ``lm_head`` is the token embedding when the weights are tied."""
        from discovery.arch.rope import rotary_from_config

        required = ("num_attention_heads", "hidden_size", "num_hidden_layers")
        if any(k not in config for k in required) or "model.embed_tokens.weight" not in tensors:
            return None  # not a Llama-family file: transformers says what is wrong with it
        n_heads, d, n_layers = config["num_attention_heads"], config["hidden_size"], config["num_hidden_layers"]
        n_kv = config.get("num_key_value_heads") or n_heads
        head_dim = config.get("head_dim") or d // n_heads
        arch = (config.get("architectures") or ["LlamaForCausalLM"])[0]
        rope = rotary_from_config(config, head_dim)
        if rope is None or rope[1] != head_dim:
            return None
        if arch == "Qwen2ForCausalLM":
            types = config.get("layer_types")
            if types is None:
                return None
            windows = tuple(config.get("sliding_window") if t == "sliding_attention" else None for t in types)
        else:  # Mistral: one window for every layer; Llama: none
            windows = (config.get("sliding_window"),) * n_layers
        w_u = tensors.get("lm_head.weight")
        if w_u is None:
            if not config.get("tie_word_embeddings", False):
                return None  # transformers would say what is missing
            w_u = tensors["model.embed_tokens.weight"]

        def layers(name: str) -> Tensor | None:  # [L, ...] of model.layers.{i}.name, None if absent
            first = tensors.get(f"model.layers.0.{name}")
            return None if first is None else torch.stack([tensors[f"model.layers.{i}.{name}"]
                                                           for i in range(n_layers)])

        def bias(name: str, n: int) -> Tensor | None:
            b = layers(name)
            return None if b is None else b.view(n_layers, n, -1)

        w_o = layers("self_attn.o_proj.weight")  # [L, D, H*E]
        b_o = layers("self_attn.o_proj.bias")
        return cls(
            wte=tensors["model.embed_tokens.weight"], ln1_w=layers("input_layernorm.weight"),
            w_q=_heads_in(layers("self_attn.q_proj.weight"), n_heads),
            w_k=_heads_in(layers("self_attn.k_proj.weight"), n_kv),
            w_v=_heads_in(layers("self_attn.v_proj.weight"), n_kv),
            b_q=bias("self_attn.q_proj.bias", n_heads), b_k=bias("self_attn.k_proj.bias", n_kv),
            b_v=bias("self_attn.v_proj.bias", n_kv),
            w_o=w_o.transpose(1, 2).reshape(n_layers, n_heads, head_dim, d),
            b_o=b_o if b_o is not None else torch.zeros(n_layers, d, dtype=w_o.dtype, device=w_o.device),
            ln2_w=layers("post_attention_layernorm.weight"),
            w_gate=layers("mlp.gate_proj.weight").transpose(1, 2), w_up=layers("mlp.up_proj.weight").transpose(1, 2),
            w_down=layers("mlp.down_proj.weight").transpose(1, 2),
            b_gate=layers("mlp.gate_proj.bias"), b_up=layers("mlp.up_proj.bias"), b_down=layers("mlp.down_proj.bias"),
            lnf_w=tensors["model.norm.weight"], w_u=w_u.T,
            eps=config.get("rms_norm_eps", 1e-6), act=config.get("hidden_act", "silu"), n_heads=n_heads,
            kv_of=torch.arange(n_heads, device=w_o.device) // (n_heads // n_kv),
            rotary=Rotary(rope[0], head_dim), scale=float(head_dim ** -0.5), windows=windows,
            family=arch.removesuffix("ForCausalLM").lower(),
        )

    def window(self, layer: int) -> int | None:
        return self.windows[layer]

    def scale_scores(self, scores: Tensor) -> Tensor:
        return scores * self.scale

    def embed(self, tokens: Tensor) -> Tensor:
        return self.wte[tokens]

    def project_qkv(self, layer, q_in, k_in, v_in, heads=slice(None), q_pos=None):
        norm = lambda x: rms_norm(x, self.ln1_w[layer], self.eps)  # noqa: E731
        q, k, v = grouped_qkv(self, layer, tuple(norm_each(norm, q_in, k_in, v_in)), heads)
        n = k.shape[2]
        return self.rotary.apply(q, n, q_pos), self.rotary.apply(k, n, None), v

    def mlp_activations(self, layer: int, x: Tensor) -> Tensor:
        h = rms_norm(x, self.ln2_w[layer], self.eps)
        gate, up = h @ self.w_gate[layer], h @ self.w_up[layer]
        if self.b_gate is not None:
            gate, up = gate + self.b_gate[layer], up + self.b_up[layer]
        return activation(self.act, gate) * up

    def mlp_output(self, layer: int, post: Tensor) -> Tensor:
        out = post @ self.w_down[layer]
        return out if self.b_down is None else out + self.b_down[layer]

    def unembed(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.lnf_w, self.eps) @ self.w_u


def _window(cfg, attn) -> int | None:
    """The layer's sliding window: Qwen2 sets it per attention module (``layer_types``), Mistral
    applies ``config.sliding_window`` to every layer; Llama has none."""
    if hasattr(attn, "sliding_window"):
        return attn.sliding_window
    return getattr(cfg, "sliding_window", None)
