"""How a receiver's input is mixed from its incoming edges, for pre-norm and post-norm models.

In a pre-norm model (GPT-2, Llama, NeoX, Gemma 1) the residual stream is a plain sum, so an input is
``sum_u ablation[u] + mask[u, i] * (outputs[u] - ablation[u])`` over its senders: one einsum.

In a post-norm model (Gemma 2/3) the residual stream receives ``norm_L(sum of layer L's heads +
b_o[L])`` from the attention of layer L, and a norm of a sum is not a sum of norms. So each
receiver recomputes that norm from *its own* mix of layer L's heads: the senders fall into
groups, one per attention layer (summed, then ``Weights.attn_out_norm``) and one of ``embed`` and
the MLPs (summed as is; an MLP's post-norm is inside its node's output). With every edge kept this
is the model's own forward; with none kept, the ablated run's.

Shapes: ``U`` upstream nodes, ``I`` inputs mixed, ``B`` batch, ``P`` positions, ``D`` d_model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from discovery.arch.base import Weights
from discovery.circuit import head_name, mlp_name
from discovery.graph import Graph


@dataclass(frozen=True)
class Group:
    """Senders whose edges into one input are summed together: ``rows`` (upstream indices) and
    the attention ``layer`` whose post-norm the sum goes through (None: summed as is)."""

    rows: tuple[int, ...]
    layer: int | None

    def index(self, device: torch.device | str) -> Tensor | slice:
        """The rows as a slice where contiguous (no gather), else an index tensor (built once per
        rows and device: this runs in every patched pass)."""
        first, last = self.rows[0], self.rows[-1]
        if last - first + 1 == len(self.rows):
            return slice(first, last + 1)
        return _index_tensor(self.rows, str(device))


@lru_cache(maxsize=256)
def _index_tensor(rows: tuple[int, ...], device: str) -> Tensor:
    return torch.tensor(rows, device=device)


class Mixer:
    """The sender groups of a model's inputs and how a group's sum reaches the receiver."""

    def __init__(self, w: Weights, graph: Graph):
        self.w, self.graph = w, graph
        self.linear = not w.post_attn_norm
        self._groups: dict[int, tuple[Group, ...]] = {}

    def groups(self, n: int) -> tuple[Group, ...]:
        """The groups of an input whose senders are upstream nodes ``0..n-1``."""
        if n not in self._groups:
            self._groups[n] = ((Group(tuple(range(n)), None),) if self.linear
                               else self._post_norm_groups(n))
        return self._groups[n]

    def _post_norm_groups(self, n: int) -> tuple[Group, ...]:
        s, up = self.graph.shape, self.graph.up_index
        plain, heads = [0], []
        for layer in range(s.n_layers):
            rows = tuple(up[head_name(layer, h)] for h in range(s.n_heads))
            if rows[-1] < n:
                heads.append(Group(rows, layer))
            if s.mlp and up[mlp_name(layer)] < n:
                plain.append(up[mlp_name(layer)])
        return (Group(tuple(plain), None), *heads)

    def close(self, group: Group, part: Tensor) -> Tensor:
        """A group's summed edges ``[..., D]`` as the receiver sees them."""
        if group.layer is None:
            return part
        return self.w.attn_out_norm(group.layer, part + self.w.b_o[group.layer])

    def inputs(self, outputs: Tensor, ablation: Tensor, mask: Tensor, ks: list[int], n: int, *,
               scale: Tensor | None = None,
               pre_deltas: dict[int, Tensor] | None = None) -> Tensor:
        """Inputs ``ks`` ``[len(ks), B, P, D]`` (free bias excluded) whose senders are ``0..n-1``:
        edge u->i carries ``outputs[u]`` where ``mask[u, i]`` is 1 (fractions interpolate) and
        ``ablation[u]`` where it is 0. ``scale`` ``[U]`` multiplies kept edges' outputs;
        ``pre_deltas[layer]`` ``[len(ks), B, P, D]`` is added to layer's head sum before its
        post-norm (attribution's gradients through the norm)."""
        total = None
        for group in self.groups(n):
            rows = group.index(outputs.device)
            out, abl = outputs[rows], ablation[rows]
            if scale is not None:
                out = out * scale[rows].to(out.dtype).view(-1, *([1] * (out.dim() - 1)))
            m = mask[rows][:, ks].to(out.dtype)  # [u, i]
            part = torch.einsum("ubpd,ui->ibpd", out - abl, m) + abl.sum(0)
            if pre_deltas is not None and group.layer in pre_deltas:
                part = part + pre_deltas[group.layer]
            closed = self.close(group, part)
            total = closed if total is None else total + closed
        return total


def mixer_of(w: Weights, graph: Graph) -> Mixer:
    """The mixer of ``w`` on ``graph``, cached on the weights (its groups are reused by every
    pass of a search)."""
    cache = w.__dict__.setdefault("_mixers", {})
    key = id(graph)
    if key not in cache or cache[key].graph is not graph:
        cache[key] = Mixer(w, graph)
    return cache[key]
