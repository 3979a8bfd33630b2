"""Fast ACDC's inner loop: the losses of many variants of one circuit that differ only in one
input, computing only what they change.

* Every node before the receiver keeps its cached output, shared by all variants; the receiver's
  own node is computed per variant, and so is every node after it. An input downstream is the
  shared part (from the cache, computed once for all variants) plus, over the recomputed nodes u,
  ``mask[u, i] * (new[u] - cached[u])``: one einsum over a buffer of those differences.
* A node none of whose kept inputs comes from a recomputed node has the output it had: it is not
  recomputed. Late in the search most of the network is pruned, so most suffixes are a few nodes;
  when nothing reaches the logits the variants' loss is the current one, with no pass at all.
* The loss reads the logits at each prompt's last position only, so the last layer's heads query
  from that position alone, and its MLP and the unembedding run there alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from discovery.graph import Graph
from discovery.patching import (
    GPT2Weights,
    free_bias,
    heads_forward,
    mlp_forward,
    node_inputs,
    project_qkv,
    unembed,
)


class _Variants:
    """Per-variant state of one suffix pass: differences of recomputed nodes from the cache."""

    def __init__(self, graph: Graph, outputs: Tensor, ablation: Tensor, mask: Tensor, v: int,
                 shared: dict | None = None):
        self.graph, self.outputs, self.ablation, self.v = graph, outputs, ablation, v
        self.shared = {} if shared is None else shared  # cached shared parts, see inputs()
        self.mask = mask.to(outputs.dtype)
        self.bool_mask = mask
        self.nodes: list[int] = []  # upstream indices with a per-variant difference
        self.delta: list[Tensor] = []  # new - cached, [V*B, P', D]

    def add(self, u: int, value: Tensor, last: Tensor | None = None) -> None:
        cached = self.outputs[u]
        if last is not None:  # value holds the last positions only
            cached = _at(cached, last[: cached.shape[0]])
        # Broadcast over the variant axis instead of materialising a repeat of the cache.
        delta = value.view(self.v, *cached.shape) - cached[None]
        self.nodes.append(u)
        self.delta.append(delta.view(value.shape))

    def affected(self, ks: list[int]) -> bool:
        """Whether any of inputs ``ks`` keeps an edge from a recomputed node."""
        return bool(self.nodes) and bool(self.bool_mask[self.nodes][:, ks].any())

    def inputs(self, ks: list[int], last: Tensor | None = None) -> Tensor:
        """Inputs ``ks`` for every variant ``[len(ks), V*B, P, D]`` (``P = 1`` with ``last``)."""
        n = self.graph.n_avail[ks[0]]
        key = (tuple(ks), last is not None)
        if key not in self.shared:  # the same for every chain of one receiver
            shared = node_inputs(self.outputs, self.ablation, self.bool_mask, ks, n)  # [i, B, P, D]
            self.shared[key] = _at(shared, last[: shared.shape[1]]) if last is not None else shared
        shared = self.shared[key]
        used = [j for j, u in enumerate(self.nodes) if u < n]
        if not used:
            return shared.repeat(1, self.v, 1, 1)
        deltas = [self.delta[j] for j in used]
        if last is not None:
            deltas = [d if d.shape[1] == 1 else _at(d, last) for d in deltas]
        m = self.mask[[self.nodes[j] for j in used]][:, ks]  # [u, i]
        varying = torch.einsum("ubpd,ui->ibpd", torch.stack(deltas), m)  # [i, V*B, P', D]
        i, _, p, d = varying.shape
        return (varying.view(i, self.v, -1, p, d) + shared[:, None]).view(i, -1, p, d)


def _heads_at_last(w: GPT2Weights, layer: int, q_in: Tensor, k_in: Tensor, v_in: Tensor,
                   last: Tensor, heads: slice = slice(None)) -> Tensor:
    """Heads whose query is taken at ``last`` only: ``q_in`` ``[H, B, 1, D]``, keys and values at
    every position ``[H, B, P, D]`` -> ``[H, B, 1, D]``."""
    q, k, v = project_qkv(w, layer, q_in, k_in, v_in, heads)
    scores = torch.einsum("hbqe,hbke->hbqk", q, k) / math.sqrt(q.shape[-1])
    future = torch.arange(k.shape[2], device=k.device)[None, :] > last[:, None]  # [B, P]
    scores = scores.masked_fill(future[None, :, None, :], torch.finfo(scores.dtype).min)
    z = torch.einsum("hbqk,hbke->hbqe", scores.softmax(-1), v)
    return torch.einsum("hbqe,hed->hbqd", z, w.w_o[layer, heads])


def _at(x: Tensor, last: Tensor) -> Tensor:
    """``x[..., b, last[b], :]`` keeping a position axis of 1: ``[*, B, P, D] -> [*, B, 1, D]``."""
    return x[..., torch.arange(x.shape[-3], device=x.device), last.to(x.device), :][..., None, :]


def variant_final_logits(w: GPT2Weights, graph: Graph, outputs: Tensor, ablation: Tensor,
                         mask: Tensor, k: int, x: Tensor, last: Tensor,
                         shared: dict | None = None) -> Tensor | None:
    """Final logits ``[V*B, vocab]`` (at each prompt's ``last`` position) when input ``k`` takes
    the per-variant values ``x`` ``[V, B, P, D]`` (bias included) and every other input follows
    ``mask``; None when the variants cannot change the logits. ``outputs`` ``[U, B, P, D]`` must be
    the current circuit's node outputs. ``shared`` caches the parts of inputs that do not depend on
    input ``k``: pass the same dict for every call about one receiver, a new one for the next."""
    v, b = x.shape[0], x.shape[1]
    x = x.reshape(v * b, *x.shape[2:])
    last = last.repeat(v)
    inp = graph.inputs[k]
    n_layers, n_heads, has_mlp = graph.shape.n_layers, graph.shape.n_heads, graph.shape.mlp
    per_layer, final_layer = n_heads + int(has_mlp), graph.shape.n_layers - 1
    state = _Variants(graph, outputs, ablation, mask, v, shared)
    if inp.stage == 2:
        return unembed(w, _at(x, last)[:, 0])
    layer = inp.layer
    at_end = layer == final_layer
    if inp.stage == 0:  # one head: its other two inputs are the same for every variant
        h, ks = inp.head, [graph.in_index[(inp.node, c)] for c in "qkv"]
        qkv = state.inputs(ks) + free_bias(w, layer, 0)
        qkv[ks.index(k)] = x
        one = slice(h, h + 1)
        if at_end:
            out = _heads_at_last(w, layer, _at(qkv[0:1], last), qkv[1:2], qkv[2:3], last, one)[0]
        else:
            out = heads_forward(w, layer, qkv[0:1], qkv[1:2], qkv[2:3], heads=one)[0]
        state.add(1 + layer * per_layer + h, out, last if at_end else None)
    mk = [graph.in_index[(f"m{layer}", "mlp")]] if has_mlp else []
    if inp.stage == 1 or (mk and state.affected(mk)):
        if inp.stage == 1:
            mlp_in = _at(x, last) if at_end else x
        else:
            mlp_in = state.inputs(mk, last if at_end else None)[0] + free_bias(w, layer, 1)
        state.add(1 + layer * per_layer + n_heads, mlp_forward(w, layer, mlp_in), last if at_end else None)
    for later in range(layer + 1, n_layers):
        end = later == final_layer
        first = 1 + later * per_layer
        heads = [h for h in range(n_heads)
                 if state.affected([graph.in_index[(f"a{later}.h{h}", c)] for c in "qkv"])]
        if heads:
            ks = [graph.in_index[(f"a{later}.h{h}", c)] for h in heads for c in "qkv"]
            heads_in = (state.inputs(ks) + free_bias(w, later, 0)).view(len(heads), 3, v * b, *x.shape[1:])
            which = torch.tensor(heads, device=x.device)
            if end:
                out = _heads_at_last(w, later, _at(heads_in[:, 0], last), heads_in[:, 1],
                                     heads_in[:, 2], last, which)
            else:
                out = heads_forward(w, later, heads_in[:, 0], heads_in[:, 1], heads_in[:, 2], heads=which)
            for j, h in enumerate(heads):
                state.add(first + h, out[j], last if end else None)
        mk = graph.inputs_of_layer(later, 1) if has_mlp else []
        if mk and state.affected(mk):
            mlp_in = state.inputs(mk, last if end else None)[0] + free_bias(w, later, 1)
            state.add(first + n_heads, mlp_forward(w, later, mlp_in), last if end else None)
    k_out = graph.n_inputs - 1
    if not state.affected([k_out]):
        return None  # nothing the variants change reaches the logits
    final = state.inputs([k_out], last)[0][:, 0]
    return unembed(w, final + free_bias(w, n_layers, 2))


def refresh_node(w: GPT2Weights, graph: Graph, outputs: Tensor, ablation: Tensor, mask: Tensor,
                 node: str) -> None:
    """Recompute ``node``'s cached output in place under the current ``mask`` (after ACDC has
    decided all of its inputs)."""
    u = graph.up_index[node]
    if node.startswith("a"):
        layer, h = (int(p[1:]) for p in node.split("."))
        ks = [graph.in_index[(node, c)] for c in "qkv"]
        qkv = node_inputs(outputs, ablation, mask, ks, graph.n_avail[ks[0]]) + free_bias(w, layer, 0)
        outputs[u] = heads_forward(w, layer, qkv[0:1], qkv[1:2], qkv[2:3], heads=slice(h, h + 1))[0]
    elif node.startswith("m"):
        layer = int(node[1:])
        ks = [graph.in_index[(node, "mlp")]]
        x = node_inputs(outputs, ablation, mask, ks, graph.n_avail[ks[0]])[0] + free_bias(w, layer, 1)
        outputs[u] = mlp_forward(w, layer, x)


def refresh_after(w: GPT2Weights, graph: Graph, outputs: Tensor, ablation: Tensor, mask: Tensor,
                  node: str) -> int:
    """Bring the cache up to date after ``node``'s inputs changed: recompute it, then every later
    node that keeps an edge from a recomputed one. Returns how many nodes were recomputed."""
    changed = [graph.up_index[node]]
    refresh_node(w, graph, outputs, ablation, mask, node)
    inputs_of: dict[str, list[int]] = {}
    for k, inp in enumerate(graph.inputs):
        inputs_of.setdefault(inp.node, []).append(k)
    for u in range(changed[0] + 1, graph.n_upstream):
        name = graph.upstream[u]
        if bool(mask[changed][:, inputs_of[name]].any()):
            refresh_node(w, graph, outputs, ablation, mask, name)
            changed.append(u)
    return len(changed)
