"""GPT-2 (``GPT2LMHeadModel``): LayerNorm, learned positions, fused Conv1D q/k/v, GELU MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from discovery.arch.base import UnsupportedModelError, Weights, activation, layer_norm, norm_each, stack


@dataclass
class GPT2Weights(Weights):
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
    family = "gpt2"
    parallel = False

    @classmethod
    def from_hf(cls, model) -> GPT2Weights:
        """Read a ``transformers`` GPT2LMHeadModel (what a TransformerBridge wraps)."""
        if type(model).__name__ != "GPT2LMHeadModel":
            raise UnsupportedModelError(
                f"GPT2Weights reads GPT2LMHeadModel only; this model is {type(model).__name__} "
                f"(use discovery.arch.read_weights, which picks the adapter for the architecture)"
            )
        cfg, t = model.config, model.transformer
        n_heads, d = cfg.n_head, cfg.n_embd
        d_head = d // n_heads
        qkv_w = stack(t.h, lambda b: b.attn.c_attn.weight)  # [L, D, 3D] (Conv1D: x @ W)
        qkv_b = stack(t.h, lambda b: b.attn.c_attn.bias)  # [L, 3D]
        w_q, w_k, w_v = (qkv_w[:, :, i * d:(i + 1) * d].reshape(-1, d, n_heads, d_head).transpose(1, 2)
                         for i in range(3))
        b_q, b_k, b_v = (qkv_b[:, i * d:(i + 1) * d].reshape(-1, n_heads, d_head) for i in range(3))
        lm_bias = getattr(model.lm_head, "bias", None)
        return cls(
            wte=t.wte.weight.detach(), wpe=t.wpe.weight.detach(),
            ln1_w=stack(t.h, lambda b: b.ln_1.weight), ln1_b=stack(t.h, lambda b: b.ln_1.bias),
            w_q=w_q, w_k=w_k, w_v=w_v, b_q=b_q, b_k=b_k, b_v=b_v,
            w_o=stack(t.h, lambda b: b.attn.c_proj.weight).reshape(-1, n_heads, d_head, d),
            b_o=stack(t.h, lambda b: b.attn.c_proj.bias),
            ln2_w=stack(t.h, lambda b: b.ln_2.weight), ln2_b=stack(t.h, lambda b: b.ln_2.bias),
            w_in=stack(t.h, lambda b: b.mlp.c_fc.weight), b_in=stack(t.h, lambda b: b.mlp.c_fc.bias),
            w_out=stack(t.h, lambda b: b.mlp.c_proj.weight), b_out=stack(t.h, lambda b: b.mlp.c_proj.bias),
            lnf_w=t.ln_f.weight.detach(), lnf_b=t.ln_f.bias.detach(),
            w_u=model.lm_head.weight.detach().T, b_u=None if lm_bias is None else lm_bias.detach(),
            eps=cfg.layer_norm_epsilon, act=cfg.activation_function, n_heads=n_heads,
        )

    @classmethod
    def from_safetensors(cls, config: dict, tensors: dict[str, Tensor]) -> GPT2Weights:
        """The same weights from a saved GPT2LMHeadModel's ``config.json`` and its safetensors
        (``transformer.h.{i}.attn.c_attn.weight`` ...), without building the ``transformers``
        model: discovery then skips the modeling import (~1.5 s of start-up). ``lm_head`` falls
        back to the token embedding when the file does not hold it (tied weights)."""
        n_heads, d, n_layers = config["n_head"], config["n_embd"], config["n_layer"]
        d_head = d // n_heads

        def get(name: str) -> Tensor:
            return tensors[f"transformer.{name}"]

        def stack(name: str) -> Tensor:
            return torch.stack([get(f"h.{i}.{name}") for i in range(n_layers)])

        qkv_w, qkv_b = stack("attn.c_attn.weight"), stack("attn.c_attn.bias")
        w_q, w_k, w_v = (qkv_w[:, :, i * d:(i + 1) * d].reshape(-1, d, n_heads, d_head).transpose(1, 2)
                         for i in range(3))
        b_q, b_k, b_v = (qkv_b[:, i * d:(i + 1) * d].reshape(-1, n_heads, d_head) for i in range(3))
        w_u = tensors.get("lm_head.weight", get("wte.weight"))
        return cls(
            wte=get("wte.weight"), wpe=get("wpe.weight"),
            ln1_w=stack("ln_1.weight"), ln1_b=stack("ln_1.bias"),
            w_q=w_q, w_k=w_k, w_v=w_v, b_q=b_q, b_k=b_k, b_v=b_v,
            w_o=stack("attn.c_proj.weight").reshape(-1, n_heads, d_head, d), b_o=stack("attn.c_proj.bias"),
            ln2_w=stack("ln_2.weight"), ln2_b=stack("ln_2.bias"),
            w_in=stack("mlp.c_fc.weight"), b_in=stack("mlp.c_fc.bias"),
            w_out=stack("mlp.c_proj.weight"), b_out=stack("mlp.c_proj.bias"),
            lnf_w=get("ln_f.weight"), lnf_b=get("ln_f.bias"), w_u=w_u.T, b_u=tensors.get("lm_head.bias"),
            eps=config.get("layer_norm_epsilon", 1e-5), act=config.get("activation_function", "gelu_new"),
            n_heads=n_heads,
        )

    def embed(self, tokens: Tensor) -> Tensor:
        """Token + position embedding ``[B, P, D]``."""
        return self.wte[tokens] + self.wpe[: tokens.shape[1]]

    def project_qkv(self, layer, q_in, k_in, v_in, heads=slice(None), q_pos=None):
        ln = lambda x: layer_norm(x, self.ln1_w[layer], self.ln1_b[layer], self.eps)  # noqa: E731
        q_in, k_in, v_in = norm_each(ln, q_in, k_in, v_in)
        q = torch.einsum("hbpd,hde->hbpe", q_in, self.w_q[layer, heads]) + self.b_q[layer, heads][:, None, None]
        k = torch.einsum("hbpd,hde->hbpe", k_in, self.w_k[layer, heads]) + self.b_k[layer, heads][:, None, None]
        v = torch.einsum("hbpd,hde->hbpe", v_in, self.w_v[layer, heads]) + self.b_v[layer, heads][:, None, None]
        return q, k, v

    def mlp_activations(self, layer: int, x: Tensor) -> Tensor:
        pre = layer_norm(x, self.ln2_w[layer], self.ln2_b[layer], self.eps) @ self.w_in[layer] + self.b_in[layer]
        return activation(self.act, pre)

    def mlp_output(self, layer: int, post: Tensor) -> Tensor:
        return post @ self.w_out[layer] + self.b_out[layer]

    def unembed(self, x: Tensor) -> Tensor:
        logits = layer_norm(x, self.lnf_w, self.lnf_b, self.eps) @ self.w_u
        return logits if self.b_u is None else logits + self.b_u
