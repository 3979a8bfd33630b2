"""Rotary cos/sin from a saved ``config.json`` without the ``transformers`` model (start-up time):
what the saved-weight readers (``LlamaWeights.from_safetensors``, ``NeoXWeights.from_safetensors``)
give :class:`~discovery.arch.base.Rotary` in place of the model's own rotary module.

Only the rope types whose cos/sin are a plain function of the config are computed here, exactly
as ``transformers`` 5 does (same float32 operations, so equal to the bit): ``default`` and
``linear`` (inverse frequencies divided by ``factor``), both with ``attention_scaling`` 1.0. Any
other type (``llama3``, ``yarn``, ``dynamic``, per-layer-type parameters ...) or a config without
``rope_parameters`` gives None: the reader then returns None and the ``transformers`` model's own
rotary module is used (the issue's rule: recomputing rope from a config misses its scaling).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

#: rope types computed here (the others go through the transformers model)
SIMPLE_ROPE_TYPES = ("default", "linear")


class ConfigRotary:
    """Called as the model's rotary module is: ``(x, position_ids [B, P]) -> (cos, sin)``, each
    ``[B, P, dim]`` in ``x``'s dtype, ``dim`` the rotating dims of a head (inverse frequencies
    ``[dim / 2]`` repeated twice, as ``transformers``' ``cat((freqs, freqs))``)."""

    def __init__(self, inv_freq: Tensor, attention_scaling: float = 1.0):
        self.inv_freq = inv_freq  # [dim / 2] float32
        self.attention_scaling = attention_scaling

    def __call__(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)  # [B, P, dim]
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rope_parameters(config: dict[str, Any]) -> dict[str, Any] | None:
    """The config's single ``rope_parameters`` dict when its type is computed here, else None."""
    params = config.get("rope_parameters")
    if not isinstance(params, dict) or "rope_theta" not in params:
        return None  # absent (an older config format) or one dict per layer type
    if params.get("rope_type", params.get("type", "default")) not in SIMPLE_ROPE_TYPES:
        return None
    return params


def rotary_from_config(config: dict[str, Any], head_dim: int) -> tuple[ConfigRotary, int] | None:
    """The rotary module and its rotating dims per head (``head_dim * partial_rotary_factor``, as
    ``int()`` truncates it), or None when the rope type is not one of :data:`SIMPLE_ROPE_TYPES`."""
    params = rope_parameters(config)
    if params is None:
        return None
    dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
    base = params["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))
    if params.get("rope_type", params.get("type", "default")) == "linear":
        inv_freq = inv_freq / params["factor"]
    return ConfigRotary(inv_freq), dim
