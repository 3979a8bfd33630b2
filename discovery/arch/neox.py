"""GPT-NeoX / Pythia (``GPTNeoXForCausalLM``): LayerNorm, fused per-head q/k/v, partial rotary
(``rotary_pct``: only the first dims of each head rotate), GELU MLP, untied ``embed_out``, and
usually *parallel* blocks: attention and MLP of one layer both read the residual stream before the
layer (``use_parallel_residual``), so the graph is built with ``GraphShape(parallel=True)``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from discovery.arch.base import Rotary, Weights, activation, layer_norm, stack


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

    def scale_scores(self, scores: Tensor) -> Tensor:
        return scores * self.scale

    def embed(self, tokens: Tensor) -> Tensor:
        return self.wte[tokens]

    def project_qkv(self, layer, q_in, k_in, v_in, heads=slice(None), q_pos=None):
        ln = lambda x: layer_norm(x, self.ln1_w[layer], self.ln1_b[layer], self.eps)  # noqa: E731
        q = torch.einsum("hbpd,hde->hbpe", ln(q_in), self.w_q[layer, heads])
        k = torch.einsum("hbpd,hde->hbpe", ln(k_in), self.w_k[layer, heads])
        v = torch.einsum("hbpd,hde->hbpe", ln(v_in), self.w_v[layer, heads])
        if self.b_q is not None:
            q = q + self.b_q[layer, heads][:, None, None]
            k = k + self.b_k[layer, heads][:, None, None]
            v = v + self.b_v[layer, heads][:, None, None]
        n = k.shape[2]
        return self.rotary.apply(q, n, q_pos), self.rotary.apply(k, n, None), v

    def mlp_activations(self, layer: int, x: Tensor) -> Tensor:
        pre = layer_norm(x, self.ln2_w[layer], self.ln2_b[layer], self.eps) @ self.w_in[layer] + self.b_in[layer]
        return activation(self.act, pre)

    def mlp_output(self, layer: int, post: Tensor) -> Tensor:
        return post @ self.w_out[layer] + self.b_out[layer]

    def unembed(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.lnf_w, self.lnf_b, self.eps) @ self.w_u
