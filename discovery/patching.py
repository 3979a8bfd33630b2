"""Patched forward passes of every supported architecture, edge by edge.

We never mutate the model: an architecture adapter (:mod:`discovery.arch`) reads its weights once
into a :class:`~discovery.arch.base.Weights`, and the forward pass below rebuilds every downstream
input (q, k, v of each head, each MLP, the logits) as the sum of its incoming edges, each taken
from this run or from the *ablation* (the corrupted prompt's activations by default, or their mean,
or zero). With every edge kept the pass equals the model's own forward (tested against the Hugging
Face model per architecture). Nothing needs undoing, so no hooks or context managers.

The module-level functions (``project_qkv``, ``heads_forward``, ``mlp_forward``, ``free_bias``,
``embed``, ``unembed``) are the pieces fast ACDC (:mod:`discovery.suffix`) and the attribution
methods share; each delegates what differs between architectures to the weights.

Shapes: ``B`` batch, ``P`` positions, ``D`` d_model, ``U`` upstream nodes, ``I`` inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from discovery.arch import read_weights
from discovery.arch.base import UnsupportedModelError, Weights
from discovery.arch.gpt2 import GPT2Weights
from discovery.graph import Graph
from discovery.mixing import mixer_of

__all__ = ["GPT2Weights", "PatchedRun", "UnsupportedModelError", "Weights", "clean_outputs",
           "embed", "forward_from", "free_bias", "heads_forward", "mlp_activations", "mlp_forward",
           "node_inputs", "patched_forward", "project_qkv", "read_weights", "unembed"]


def project_qkv(w: Weights, layer: int, q_in: Tensor, k_in: Tensor, v_in: Tensor,
                heads: slice | Tensor = slice(None),
                q_pos: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Each head's own inputs ``[H, B, P, D]`` through its norm and W_Q, W_K, W_V (and rotary) ->
    ``[H, B, P, d_head]``; with ``q_pos`` ``[B]`` the query is ``[H, B, 1, D]`` at those positions."""
    return w.project_qkv(layer, q_in, k_in, v_in, heads, q_pos)


def attention_mask(w: Weights, layer: int, n: int, q_pos: Tensor | None, device) -> Tensor:
    """Where a query may attend: ``[P, P]`` (queries at every position) or ``[B, 1, P]`` (one query
    per prompt at ``q_pos``): causal, and within the layer's sliding window if it has one."""
    keys = torch.arange(n, device=device)
    queries = keys[:, None] if q_pos is None else q_pos.to(device)[:, None, None]
    allowed = keys <= queries
    window = w.window(layer)
    if window is not None:
        allowed = allowed & (keys > queries - window)
    return allowed


def attend(w: Weights, layer: int, q: Tensor, k: Tensor, v: Tensor, heads: slice | Tensor,
           q_pos: Tensor | None = None) -> Tensor:
    """Softmax attention of projected ``q`` ``[H, B, Q, E]`` over ``k``, ``v`` ``[H, B, P, E]``,
    through the heads' W_O -> ``[H, B, Q, D]``."""
    scores = w.scale_scores(torch.einsum("hbqe,hbke->hbqk", q, k))
    allowed = attention_mask(w, layer, k.shape[2], q_pos, scores.device)
    scores = scores.masked_fill(~allowed if q_pos is None else ~allowed[None],
                                torch.finfo(scores.dtype).min)
    z = torch.einsum("hbqk,hbke->hbqe", scores.softmax(-1), v)
    return torch.einsum("hbqe,hed->hbqd", z, w.w_o[layer, heads])


def heads_forward(w: Weights, layer: int, q_in: Tensor, k_in: Tensor, v_in: Tensor,
                  heads: slice | Tensor = slice(None)) -> Tensor:
    """The ``heads`` of ``layer`` (default all) from their own q, k, v inputs ``[H, B, P, D]`` ->
    outputs ``[H, B, P, D]`` (without the layer's output bias, which belongs to no head)."""
    q, k, v = project_qkv(w, layer, q_in, k_in, v_in, heads)
    return attend(w, layer, q, k, v, heads)


def mlp_forward(w: Weights, layer: int, x: Tensor, neuron_mask: Tensor | None = None,
                neuron_ablation: Tensor | None = None) -> Tensor:
    """MLP of ``layer`` on its input ``[B, P, D]``. With ``neuron_mask`` ``[d_mlp]`` (1 keep, 0 ablate)
    the ablated neurons take ``neuron_ablation`` ``[B, P, d_mlp]`` as their activation."""
    post = w.mlp_activations(layer, x)
    if neuron_mask is not None:
        post = post * neuron_mask + neuron_ablation * (1 - neuron_mask)
    return w.mlp_output(layer, post)


def mlp_activations(w: Weights, layer: int, x: Tensor) -> Tensor:
    """The MLP's post-activation neurons ``[B, P, d_mlp]`` (gated MLPs: act(gate) * up)."""
    return w.mlp_activations(layer, x)


def embed(w: Weights, tokens: Tensor) -> Tensor:
    """The node ``embed`` ``[B, P, D]`` (GPT-2: token + position; rotary models: token only)."""
    return w.embed(tokens)


def unembed(w: Weights, x: Tensor) -> Tensor:
    return w.unembed(x)


class PatchedRun:
    """Everything one patched pass produced: node outputs ``[U, B, P, D]`` (gathered on first
    use: a gradient pass that reads only the logits never joins them) and logits."""

    def __init__(self, outputs: Callable[[], Tensor], logits: Tensor):
        self._outputs, self.logits = outputs, logits

    @property
    def outputs(self) -> Tensor:
        if callable(self._outputs):
            self._outputs = self._outputs()
        return self._outputs


def free_bias(w: Weights, layer: int, stage: int) -> Tensor:
    """Residual-stream bias seen by an input at (layer, stage) that belongs to no node: the
    attention output biases of the layers before it (and of its own layer, for a sequential MLP)."""
    return w.free_bias(layer, stage)


def node_inputs(outputs: Tensor, ablation: Tensor, mask: Tensor, inputs: list[int],
                n_avail: int, ablation_sum: Tensor | None = None,
                scale: Tensor | None = None, diff: Tensor | None = None) -> Tensor:
    """Inputs ``[len(inputs), B, P, D]``: edge u->i carries ``outputs[u]`` where ``mask[u, i]`` is 1
    and ``ablation[u]`` where it is 0. All inputs listed share the same ``n_avail`` senders.
    ``ablation_sum``: ``ablation[:n_avail].sum(0)`` when the caller has it already. ``scale``
    ``[U]``: kept edges carry ``scale[u] * outputs[u]`` instead (dose-response experiments).
    ``diff``: ``outputs - ablation`` when the caller keeps it (fast ACDC's cache)."""
    out, abl = outputs[:n_avail], ablation[:n_avail]
    if scale is not None:
        out = out * scale[:n_avail].to(out.dtype).view(-1, *([1] * (out.dim() - 1)))
    m = mask[:n_avail, inputs].to(out.dtype)  # [u, i]
    change = out - abl if diff is None or scale is not None else diff[:n_avail]
    return torch.einsum("ubpd,ui->ibpd", change, m) + (abl.sum(0) if ablation_sum is None else ablation_sum)


def patched_forward(w: Weights, graph: Graph, tokens: Tensor, ablation: Tensor,
                    mask: Tensor) -> PatchedRun:
    """Run ``tokens`` with every edge where ``mask`` ``[U, I]`` is 0 replaced by ``ablation``."""
    return forward_from(w, graph, tokens, ablation, mask, start=(0, 0), outputs=None)


def forward_from(w: Weights, graph: Graph, tokens: Tensor, ablation: Tensor, mask: Tensor,
                 *, start: tuple[int, int], outputs: Tensor | None,
                 override: tuple[int, Tensor] | None = None,
                 deltas: dict[tuple[int, int], Tensor] | None = None,
                 neurons: dict[int, tuple[Tensor, Tensor]] | None = None,
                 scale: Tensor | None = None,
                 pre_deltas: dict[tuple[int, int], dict[int, Tensor]] | None = None) -> PatchedRun:
    """The patched pass from ``start`` = (layer, stage) on, reusing ``outputs`` for every node
    computed before it (the suffix recomputation of fast ACDC). Stage 0: heads, 1: MLP, 2: logits.

    ``override = (k, x)`` replaces input ``k`` by ``x`` ``[B, P, D]`` (fast ACDC's candidates).
    ``deltas[(layer, stage)]`` ``[n_inputs_of_stage, B, P, D]`` is added to that stage's inputs:
    zeros that require grad, so backward gives the gradient at every input (EAP).
    ``neurons[layer] = (mask [d_mlp], ablated [B, P, d_mlp])``: MLP ``layer``'s neurons where the
    mask is 0 take their ablated activation (neuron-level circuits).
    ``scale`` ``[U]`` multiplies each node's output as its receivers see it (through kept edges;
    ``outputs`` stay unscaled): the dose-response experiments. None (the default) is scale 1.
    ``pre_deltas[(layer, stage)][L]`` ``[n_inputs_of_stage, B, P, D]`` is added inside attention
    layer L's post-norm as those inputs see it (post-norm models: EAP's gradients there).

    Post-norm models (Gemma 2/3) mix each input through :class:`discovery.mixing.Mixer`: every
    receiver recomputes each attention layer's post-norm from its own mix of that layer's heads."""
    mix = mixer_of(w, graph)
    n_layers, n_heads = graph.shape.n_layers, graph.shape.n_heads
    up = 1 + start[0] * (n_heads + int(graph.shape.mlp))
    if outputs is None:
        first = embed(w, tokens)[None]
        rows = first.new_empty if start == (0, 0) else first.new_zeros  # every row is written first
        nodes = _Nodes(first, 1, lambda: rows(graph.n_upstream, *first.shape[1:]))
        nodes.skip(up - 1)
    else:
        nodes = _Nodes(outputs, up, outputs.clone)

    def gather(ks: list[int], layer: int, stage: int) -> Tensor:
        n = graph.n_avail[ks[0]]
        if mix.linear and (scale is None or bool((scale[:n] == 1).all())) \
                and (override is None or override[0] not in ks) and bool((mask[:n, ks] == 1).all()):
            # Every edge into these inputs kept: each is the residual stream, as in the model
            # itself; one sum, broadcast over the inputs ([1, B, P, D]), not one per input.
            return nodes.residual(n)[None] + free_bias(w, layer, stage)
        out = nodes.tensor()
        if mix.linear:
            x = node_inputs(out, ablation, mask, ks, n, scale=scale)
        else:
            x = mix.inputs(out, ablation, mask, ks, n, scale=scale,
                           pre_deltas=(pre_deltas or {}).get((layer, stage)))
        return x + free_bias(w, layer, stage)

    def adjust(ks: list[int], x: Tensor, stage_key: tuple[int, int]) -> Tensor:
        if override is not None and override[0] in ks:
            x = x.clone()
            x[ks.index(override[0])] = override[1]
        if deltas is not None and stage_key in deltas:
            x = x + deltas[stage_key]
        return x

    for layer in range(start[0], n_layers):
        if (layer, 0) >= start:
            ks = graph.inputs_of_layer(layer, 0)
            x = adjust(ks, gather(ks, layer, 0), (layer, 0))
            if x.shape[0] == 1:  # one residual stream for every head's q, k and v
                nodes.add(heads_forward(w, layer, x, x, x))
            else:
                x = x.view(n_heads, 3, *x.shape[1:])
                nodes.add(heads_forward(w, layer, x[:, 0], x[:, 1], x[:, 2]))
        else:
            nodes.skip(n_heads)
        if graph.shape.mlp:
            ks = graph.inputs_of_layer(layer, 1)
            neuron = (neurons or {}).get(layer, (None, None))
            nodes.add(mlp_forward(w, layer, adjust(ks, gather(ks, layer, 1), (layer, 1))[0], *neuron)[None])
    k = graph.n_inputs - 1
    final = gather([k], n_layers, 2)
    return PatchedRun(nodes.tensor, unembed(w, adjust([k], final, (n_layers, 2))[0]))


class _Nodes:
    """A pass's node outputs ``[U, B, P, D]``, computed in forward order after a valid prefix.
    Without autograd: rows of one tensor written in place. With it: blocks joined on demand, as
    in-place writes into one big tensor make the backward build a full-size gradient for every
    write (25 copies of ``[U, B, P, D]`` on GPT-2 small). The residual stream (the sum of the
    first ``n`` outputs, ``n`` growing) is added up once, block by block."""

    def __init__(self, source: Tensor, done: int, buffer):
        """``source``'s first ``done`` rows are valid, later ones are read only by :meth:`skip`;
        ``buffer()`` makes the in-place tensor (a clone of a given cache, or a new one)."""
        self.source, self.done, self.n, self.total = source, done, 0, None
        if torch.is_grad_enabled():
            self.blocks: list[Tensor] | None = [source[:done]]
        else:
            self.blocks, self.buffer = None, buffer()
            self.buffer[:done] = source[:done]

    def add(self, block: Tensor) -> None:
        """The next ``len(block)`` node outputs."""
        if self.blocks is not None:
            self.blocks.append(block)
        else:
            self.buffer[self.done:self.done + len(block)] = block
        self.done += len(block)

    def skip(self, rows: int) -> None:
        """The next ``rows`` outputs are the source's own (a cached prefix, or rows written later)."""
        cached = self.source[self.done:self.done + rows]
        if len(cached) < rows:  # no cache given (a later start without one): zeros, as ever
            cached = self.source.new_zeros(rows, *self.source.shape[1:])
        if rows and self.blocks is not None:
            self.blocks.append(cached)
        elif rows:
            self.buffer[self.done:self.done + rows] = cached
        self.done += rows

    def residual(self, n: int) -> Tensor:
        """The sum of ``outputs[:n]`` ``[B, P, D]`` (``n`` at most the rows computed so far)."""
        if n < self.n:  # an earlier prefix (not in forward order): sum it afresh
            return self.tensor()[:n].sum(0)
        if n > self.n:
            parts = [part.sum(0) for part in self._rows(self.n, n)]
            more = sum(parts[1:], parts[0])
            self.total = more if self.total is None else self.total + more
            self.n = n
        return self.total

    def _rows(self, a: int, b: int) -> list[Tensor]:
        """Rows ``a:b`` as slices of the blocks that hold them (no concatenation: its backward
        would build full-size gradients)."""
        if self.blocks is None:
            return [self.buffer[a:b]]
        parts, start = [], 0
        for block in self.blocks:
            end = start + len(block)
            if end > a and start < b:
                parts.append(block[max(a - start, 0):min(b, end) - start])
            start = end
        return parts

    def tensor(self) -> Tensor:
        """The outputs ``[U, B, P, D]``; only the first rows computed so far are valid."""
        if self.blocks is None:
            return self.buffer
        if len(self.blocks) > 1:
            self.blocks = [torch.cat(self.blocks)]
        return self.blocks[0]


def clean_outputs(w: Weights, graph: Graph, tokens: Tensor) -> PatchedRun:
    """The unpatched run: every node's output on ``tokens`` (also how ablations are computed)."""
    every = torch.ones(graph.n_upstream, graph.n_inputs, dtype=torch.bool, device=tokens.device)
    zeros = torch.zeros(graph.n_upstream, *tokens.shape, w.wte.shape[1], device=tokens.device,
                        dtype=w.wte.dtype)
    return patched_forward(w, graph, tokens, zeros, every)
