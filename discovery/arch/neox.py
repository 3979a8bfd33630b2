"""GPT-NeoX / Pythia (``GPTNeoXForCausalLM``): LayerNorm, fused per-head q/k/v, partial rotary
(``rotary_pct``: only the first dims of each head rotate), GELU MLP, untied ``embed_out``, and
usually *parallel* blocks: attention and MLP of one layer both read the residual stream before the
layer (``use_parallel_residual``), so the graph is built with ``GraphShape(parallel=True)``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from discovery.arch.base import Rotary, Weights, activation, layer_norm, norm_each, project_heads, stack


@dataclass
class NeoXWeights(Weights):
    wte: Tensor  # [vocab, D]
    ln1_w: Tensor  # [L, D]
    ln1_b: Tensor
    w_q: Tensor  # [L, H, D, E]
    w_k: Tensor
    w_v: Tensor
    b_q: Tensor | None  # [L, H, E]
    b_k: Tensor | None
    b_v: Tensor | None
    w_o: Tensor  # [L, H, E, D]
    b_o: Tensor  # [L, D]
    ln2_w: Tensor
    ln2_b: Tensor
    w_in: Tensor  # [L, D, F]
    b_in: Tensor  # [L, F]
    w_out: Tensor  # [L, F, D]
    b_out: Tensor  # [L, D]
    lnf_w: Tensor  # [D]
    lnf_b: Tensor
    w_u: Tensor  # [D, vocab]
    eps: float
    act: str
    n_heads: int
    rotary: Rotary
    scale: float
    parallel: bool = True
    family: str = "gpt_neox"

    @classmethod
    def from_hf(cls, model) -> NeoXWeights:
        cfg, t = model.config, model.gpt_neox
        blocks = list(t.layers)
        n, d = cfg.num_attention_heads, cfg.hidden_size
        e = d // n
        qkv = stack(blocks, lambda b: b.attention.query_key_value.weight).view(len(blocks), n, 3, e, d)
        w_q, w_k, w_v = (qkv[:, :, i].transpose(2, 3) for i in range(3))  # [L, H, D, E]
        has_bias = blocks[0].attention.query_key_value.bias is not None
        if has_bias:
            qkv_b = stack(blocks, lambda b: b.attention.query_key_value.bias).view(len(blocks), n, 3, e)
            b_q, b_k, b_v = (qkv_b[:, :, i] for i in range(3))
        else:
            b_q = b_k = b_v = None
        dense_b = blocks[0].attention.dense.bias
        attn = blocks[0].attention
        return cls(
            wte=t.embed_in.weight.detach(),
            ln1_w=stack(blocks, lambda b: b.input_layernorm.weight),
            ln1_b=stack(blocks, lambda b: b.input_layernorm.bias),
            w_q=w_q, w_k=w_k, w_v=w_v, b_q=b_q, b_k=b_k, b_v=b_v,
            w_o=stack(blocks, lambda b: b.attention.dense.weight).transpose(1, 2).reshape(len(blocks), n, e, d),
            b_o=(stack(blocks, lambda b: b.attention.dense.bias) if dense_b is not None
                 else torch.zeros(len(blocks), d, dtype=qkv.dtype, device=qkv.device)),
            ln2_w=stack(blocks, lambda b: b.post_attention_layernorm.weight),
            ln2_b=stack(blocks, lambda b: b.post_attention_layernorm.bias),
            w_in=stack(blocks, lambda b: b.mlp.dense_h_to_4h.weight).transpose(1, 2),
            b_in=stack(blocks, lambda b: b.mlp.dense_h_to_4h.bias),
            w_out=stack(blocks, lambda b: b.mlp.dense_4h_to_h.weight).transpose(1, 2),
            b_out=stack(blocks, lambda b: b.mlp.dense_4h_to_h.bias),
            lnf_w=t.final_layer_norm.weight.detach(), lnf_b=t.final_layer_norm.bias.detach(),
            w_u=model.get_output_embeddings().weight.detach().T, eps=cfg.layer_norm_eps, act=cfg.hidden_act,
            n_heads=n, rotary=Rotary(t.rotary_emb, attn.rotary_ndims),
            scale=float(getattr(attn, "scaling", e ** -0.5)),
            parallel=bool(cfg.use_parallel_residual),
        )

    @classmethod
    def from_safetensors(cls, config: dict, tensors: dict[str, Tensor]) -> NeoXWeights | None:
        """The same weights from a saved GPTNeoXForCausalLM's ``config.json`` and its safetensors
        (``gpt_neox.layers.{i}.attention.query_key_value.weight`` ...), without building the
        ``transformers`` model (start-up time). Partial rotary cos/sin come from
        :mod:`discovery.arch.rope`; None (the caller then reads the ``transformers`` model) for a
        rope type it does not compute."""
        from discovery.arch.rope import rotary_from_config

        required = ("num_attention_heads", "hidden_size", "num_hidden_layers")
        if any(k not in config for k in required) or "gpt_neox.embed_in.weight" not in tensors:
            return None  # not a GPT-NeoX file: transformers says what is wrong with it
        n, d, n_layers = config["num_attention_heads"], config["hidden_size"], config["num_hidden_layers"]
        e = d // n
        rope = rotary_from_config(config, e)
        if rope is None:
            return None

        def layers(name: str) -> Tensor | None:  # [L, ...] of gpt_neox.layers.{i}.name, None if absent
            if f"gpt_neox.layers.0.{name}" not in tensors:
                return None
            return torch.stack([tensors[f"gpt_neox.layers.{i}.{name}"] for i in range(n_layers)])

        qkv = layers("attention.query_key_value.weight").view(n_layers, n, 3, e, d)
        w_q, w_k, w_v = (qkv[:, :, i].transpose(2, 3) for i in range(3))  # [L, H, D, E]
        qkv_b = layers("attention.query_key_value.bias")
        b_q, b_k, b_v = ((None,) * 3 if qkv_b is None
                         else (qkv_b.view(n_layers, n, 3, e)[:, :, i] for i in range(3)))
        b_o = layers("attention.dense.bias")
        return cls(
            wte=tensors["gpt_neox.embed_in.weight"],
            ln1_w=layers("input_layernorm.weight"), ln1_b=layers("input_layernorm.bias"),
            w_q=w_q, w_k=w_k, w_v=w_v, b_q=b_q, b_k=b_k, b_v=b_v,
            w_o=layers("attention.dense.weight").transpose(1, 2).reshape(n_layers, n, e, d),
            b_o=b_o if b_o is not None else torch.zeros(n_layers, d, dtype=qkv.dtype, device=qkv.device),
            ln2_w=layers("post_attention_layernorm.weight"), ln2_b=layers("post_attention_layernorm.bias"),
            w_in=layers("mlp.dense_h_to_4h.weight").transpose(1, 2), b_in=layers("mlp.dense_h_to_4h.bias"),
            w_out=layers("mlp.dense_4h_to_h.weight").transpose(1, 2), b_out=layers("mlp.dense_4h_to_h.bias"),
            lnf_w=tensors["gpt_neox.final_layer_norm.weight"], lnf_b=tensors["gpt_neox.final_layer_norm.bias"],
            w_u=tensors.get("embed_out.weight", tensors["gpt_neox.embed_in.weight"]).T,
            eps=config.get("layer_norm_eps", 1e-5), act=config.get("hidden_act", "gelu"), n_heads=n,
            rotary=Rotary(rope[0], rope[1]), scale=float(e ** -0.5),
            parallel=bool(config.get("use_parallel_residual", True)),
        )

    def scale_scores(self, scores: Tensor) -> Tensor:
        return scores * self.scale

    def embed(self, tokens: Tensor) -> Tensor:
        return self.wte[tokens]

    def project_qkv(self, layer, q_in, k_in, v_in, heads=slice(None), q_pos=None):
        ln = lambda x: layer_norm(x, self.ln1_w[layer], self.ln1_b[layer], self.eps)  # noqa: E731
        biases = ((None,) * 3 if self.b_q is None
                  else (self.b_q[layer, heads], self.b_k[layer, heads], self.b_v[layer, heads]))
        q, k, v = project_heads(tuple(norm_each(ln, q_in, k_in, v_in)),
                                (self.w_q[layer, heads], self.w_k[layer, heads], self.w_v[layer, heads]), biases)
        n = k.shape[2]
        return self.rotary.apply(q, n, q_pos), self.rotary.apply(k, n, None), v

    def mlp_activations(self, layer: int, x: Tensor) -> Tensor:
        pre = layer_norm(x, self.ln2_w[layer], self.ln2_b[layer], self.eps) @ self.w_in[layer] + self.b_in[layer]
        return activation(self.act, pre)

    def mlp_output(self, layer: int, post: Tensor) -> Tensor:
        return post @ self.w_out[layer] + self.b_out[layer]

    def unembed(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.lnf_w, self.lnf_b, self.eps) @ self.w_u
