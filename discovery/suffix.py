"""Fast ACDC's inner loop: the losses of many variants of one circuit that differ only in one
input (the receiver's), computing only what they change.

* Every node before the receiver keeps its cached output, shared by all variants. The nodes the
  variants can change are planned once per receiver: its own node, then every later node that keeps
  an edge from a node already in the plan. Late in the search most of the network is pruned, so a
  plan is a few nodes; when none of them reaches the logits the loss is the current one, with no
  pass at all.
* An input downstream is the shared part (computed once per receiver) plus, over the planned nodes
  u, ``mask[u, i] * (new[u] - cached[u])``: one einsum over a buffer of those differences.
* Post-norm models (Gemma 2/3): an input is a sum over sender groups, each attention layer's
  group through that layer's post-norm (:mod:`discovery.mixing`). The shared part and the
  variants' differences are then kept per group, and each group is closed (normed) per variant.
* The loss reads the logits at each prompt's last position only. A planned node whose output no
  planned head reads as a key or value (directly, or through nodes that need every position) is
  computed at that position alone: its heads query from there, its MLP runs there.
* Tied inputs (one k/v input per key-value group, :attr:`discovery.graph.Graph.ties`): the
  receiver is the tie set, owned by several heads of one layer. Its input is computed once (it is
  the same for every tied column) and all the owners are recomputed, batched; the plan starts
  from them all. A singleton tie (every per-head graph) takes the one-head path as before.
* A receiver may be several inputs of one node (a head's v, k and q, visited one after another):
  a variant is then one column per input, ``[V, U, S]``, and an input every variant leaves as it
  is stays fixed (projected once). The pass itself is :mod:`discovery.suffix_pass`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from discovery.graph import Graph
from discovery.mixing import mixer_of
from discovery.patching import Weights, free_bias, heads_forward, mlp_forward, node_inputs, unembed
from discovery.suffix_pass import SuffixPass, at_last


class SuffixContext:
    """What every suffix pass of one problem shares: weights, graph, the ablation ``[U, B, P, D]``,
    each prompt's last position ``[B]``, and the ablation's prefix sums (an input's ablated part)."""

    def __init__(self, w: Weights, graph: Graph, ablation: Tensor, last: Tensor):
        self.w, self.graph, self.ablation, self.last = w, graph, ablation, last
        self.sums = {n: ablation[:n].sum(0) for n in sorted(set(graph.n_avail))}  # n -> [B, P, D]
        self.is_kv = np.array([i.input in ("k", "v") for i in graph.inputs])
        self.mix = mixer_of(w, graph)
        #: post-norm models: per input size n, each group's ablation sum ``[B, P, D]``
        self.group_sums = {} if self.mix.linear else {
            n: [ablation[g.index(ablation.device)].sum(0) for g in self.mix.groups(n)]
            for n in sorted(set(graph.n_avail))}
        #: post-norm models: the group (index into ``mix.groups(n)``) of each sender, per n
        self.group_of = {n: {u: j for j, g in enumerate(self.mix.groups(n)) for u in g.rows}
                         for n in self.group_sums}

    def node_inputs(self, cache: NodeCache, mask: Tensor, ks: list[int]) -> Tensor:
        """Inputs ``ks`` (same senders) of the circuit ``mask`` ``[len(ks), B, P, D]``, bias
        excluded: kept edges carry the cached outputs, removed ones the ablation."""
        n = self.graph.n_avail[ks[0]]
        if not self.mix.linear:
            return self.mix.inputs(cache.outputs, self.ablation, mask, ks, n)
        return node_inputs(cache.outputs, self.ablation, mask, ks, n, ablation_sum=self.sums[n],
                           diff=cache.diff)


class NodeCache:
    """Fast ACDC's cache of the circuit as it stands: node outputs ``[U, B, P, D]`` and their
    differences from the ablation, kept in step (every input sum and every receiver reads the
    differences; recomputing them per receiver cost more than the passes of a pruned circuit)."""

    def __init__(self, outputs: Tensor, ablation: Tensor, diff: Tensor | None = None):
        self.outputs, self.ablation = outputs, ablation
        self.diff = outputs - ablation if diff is None else diff

    def set(self, u: int, value: Tensor) -> None:
        """Node ``u``'s new output ``[B, P, D]``."""
        self.outputs[u] = value
        self.diff[u] = value - self.ablation[u]

    def clone(self) -> NodeCache:
        return NodeCache(self.outputs.clone(), self.ablation, self.diff.clone())


def plan(graph: Graph, mask: np.ndarray, u0: int | list[int],
         is_kv: np.ndarray) -> dict[int, bool] | None:
    """The nodes a change at upstream node ``u0`` (or at each of a list of them, the owners of a
    tie set) reaches through kept edges of ``mask`` ``[U, I]``, in topological order, each mapped
    to whether it is needed at every position (True) or only at the last one. None when the
    change cannot reach the logits."""
    starts = sorted(u0) if isinstance(u0, list) else [u0]
    reached = [starts[0]]
    for u in range(starts[0] + 1, graph.n_upstream):
        if u in starts or mask[np.ix_(reached, graph.inputs_of[u])].any():
            reached.append(u)
    if not mask[reached, graph.n_inputs - 1].any():
        return None
    full: dict[int, bool] = {}
    for u in reversed(reached):
        kept = np.flatnonzero(mask[u])
        full[u] = bool(is_kv[kept].any()) or any(full.get(graph.owner[i], False) for i in kept)
    return {u: full[u] for u in reached}


class Receiver:
    """Everything shared by the variants of one receiver: the inputs ``ks`` of one node (each the
    first input of its tie set; all owned by the nodes ``owners``), visited one after another. The
    plan, the differences ``outputs - ablation`` and the shared parts of downstream inputs. Valid
    while only the receiver's columns of ``mask`` change and the cache stays as it is (ACDC
    refreshes it after the receiver). A variant is a column per receiver input: ``[V, U, S]``."""

    def __init__(self, ctx: SuffixContext, cache: NodeCache, mask: Tensor, ks: int | list[int]):
        ks = [ks] if isinstance(ks, int) else list(ks)
        self.ctx, self.outputs, self.mask, self.ks, self.k = ctx, cache.outputs, mask, ks, ks[0]
        self.mask_np = mask.cpu().numpy()
        self.snapshot = mask[:, ks].clone()  # [U, S] the receiver's columns as the visit began
        graph = ctx.graph
        self.input = graph.inputs[self.k]
        self.tie = graph.tie_of(self.k)
        self.owners = [graph.owner[i] for i in self.tie]
        self.u0 = self.owners[0]
        #: each receiver input's tie set, to find the slot an owner's input belongs to
        self._slot = {i: s for s, k in enumerate(ks) for i in graph.tie_of(k)}
        start = self.u0 if len(self.owners) == 1 else self.owners
        self.plan = None if self.u0 < 0 else plan(graph, self.mask_np, start, ctx.is_kv)
        self.diff = cache.diff  # [U, B, P, D] outputs - ablation
        self._diff_last: Tensor | None = None
        self.cache: dict = {}

    def slot_of(self, i: int) -> int | None:
        """The slot (index into ``ks``) of input ``i``, or None when it is not a receiver input."""
        return self._slot.get(i)

    def diff_at_last(self) -> Tensor:
        if self._diff_last is None:
            self._diff_last = at_last(self.diff, self.ctx.last)
        return self._diff_last

    def shared_inputs(self, ks: list[int], last_only: bool) -> Tensor:
        """The part of inputs ``ks`` no variant changes ``[len(ks), B, P', D]``, bias included."""
        key = (tuple(ks), last_only)
        if key not in self.cache:
            n, inp = self.ctx.graph.n_avail[ks[0]], self.ctx.graph.inputs[ks[0]]
            diff = self.diff_at_last() if last_only else self.diff
            sums = self.ctx.sums[n]
            sums = at_last(sums, self.ctx.last) if last_only else sums
            m = self.mask[:n, ks].to(diff.dtype)
            shared = torch.einsum("ubpd,ui->ibpd", diff[:n], m) + sums
            self.cache[key] = shared + free_bias(self.ctx.w, inp.layer, inp.stage)
        return self.cache[key]

    def diff_rows(self, n: int, j: int, last_only: bool) -> Tensor:
        """``outputs - ablation`` of the senders of group ``j`` of an input with ``n`` senders."""
        key = ("diff", n, j, last_only)
        if key not in self.cache:
            diff = self.diff_at_last() if last_only else self.diff
            self.cache[key] = diff[self.ctx.mix.groups(n)[j].index(diff.device)]
        return self.cache[key]

    def group_sum(self, n: int, j: int, last_only: bool) -> Tensor:
        sums = self.ctx.group_sums[n][j]
        return at_last(sums, self.ctx.last) if last_only else sums

    def shared_parts(self, ks: list[int], last_only: bool) -> list[Tensor]:
        """Post-norm models: the part of inputs ``ks`` no variant changes, per sender group, before
        the group's norm ``[len(ks), B, P', D]`` each."""
        key = ("parts", tuple(ks), last_only)
        if key not in self.cache:
            n, parts = self.ctx.graph.n_avail[ks[0]], []
            for j, g in enumerate(self.ctx.mix.groups(n)):
                diff = self.diff_rows(n, j, last_only)
                m = self.mask[g.index(diff.device)][:, ks].to(diff.dtype)
                parts.append(torch.einsum("ubpd,ui->ibpd", diff, m) + self.group_sum(n, j, last_only))
            self.cache[key] = parts
        return self.cache[key]

    def output(self, u: int, last_only: bool) -> Tensor:
        """Cached output of node ``u`` ``[B, P', D]``."""
        if not last_only:
            return self.outputs[u]
        key = ("out", u)
        if key not in self.cache:
            self.cache[key] = at_last(self.outputs[u], self.ctx.last)
        return self.cache[key]

    def receiver_input(self, columns: Tensor, last_only: bool, s: int = 0) -> Tensor:
        """Receiver input ``ks[s]`` of each variant ``[V, B, P', D]`` (bias included); row v of
        ``columns`` ``[V, U]`` says which senders keep their edge. The input under the snapshot of
        the column is computed once; per variant only the senders where it departs from the
        snapshot are summed (ACDC's chains depart in a few senders)."""
        k = self.ks[s]
        n, inp = self.ctx.graph.n_avail[k], self.ctx.graph.inputs[k]
        if not self.ctx.mix.linear:
            return self._receiver_input_grouped(columns, last_only, s)
        diff = (self.diff_at_last() if last_only else self.diff)[:n]
        key = ("receiver", s, last_only)
        if key not in self.cache:
            column = self.snapshot[:n, s].to(diff.dtype)
            base = torch.einsum("ubpd,u->bpd", diff, column)
            sums = at_last(self.ctx.sums[n], self.ctx.last) if last_only else self.ctx.sums[n]
            self.cache[key] = column, base + sums + free_bias(self.ctx.w, inp.layer, inp.stage)
        column, base = self.cache[key]
        change = columns[:, :n].to(diff.dtype) - column  # [V, n]
        senders = change.any(0).nonzero()[:, 0]
        return base[None] + torch.einsum("ubpd,vu->vbpd", diff[senders], change[:, senders])

    def _receiver_input_grouped(self, columns: Tensor, last_only: bool, s: int) -> Tensor:
        """:meth:`receiver_input` of a post-norm model: per sender group, the snapshot's sum plus
        the senders where a variant departs from it, closed per variant."""
        ctx, k = self.ctx, self.ks[s]
        n, inp = ctx.graph.n_avail[k], ctx.graph.inputs[k]
        key = ("receiver-groups", s, last_only)
        if key not in self.cache:
            column = self.snapshot[:n, s].to(self.diff.dtype)
            bases = [torch.einsum("ubpd,u->bpd", self.diff_rows(n, j, last_only),
                                  column[list(g.rows)]) + self.group_sum(n, j, last_only)
                     for j, g in enumerate(ctx.mix.groups(n))]
            self.cache[key] = column, bases
        column, bases = self.cache[key]
        change = columns[:, :n].to(column.dtype) - column  # [V, n]
        total = free_bias(ctx.w, inp.layer, inp.stage)
        for j, g in enumerate(ctx.mix.groups(n)):
            c = change[:, list(g.rows)]  # [V, rows]
            senders = c.any(0).nonzero()[:, 0]
            part = bases[j][None]
            if len(senders):
                part = part + torch.einsum("ubpd,vu->vbpd", self.diff_rows(n, j, last_only)[senders],
                                           c[:, senders])
            total = total + ctx.mix.close(g, part)
        return total.expand(columns.shape[0], *total.shape[1:]) if total.shape[0] == 1 else total

    def final_logits(self, columns: Tensor) -> Tensor | None:
        """Last-position logits ``[V*B, vocab]`` of the variants ``columns`` ``[V, U, S]`` (or
        ``[V, U]`` for one receiver input), or None when they cannot change the logits."""
        columns = columns[..., None] if columns.dim() == 2 else columns
        if self.input.stage == 2:
            return unembed(self.ctx.w, self.receiver_input(columns[:, :, 0], True)[:, :, 0].flatten(0, 1))
        if self.plan is None:
            return None
        return SuffixPass(self, columns).run()


def refresh_after(ctx: SuffixContext, cache: NodeCache, mask: Tensor, node: str | list[str]) -> int:
    """Bring the ``cache`` up to date after the inputs of ``node`` (or of each of a list of
    nodes: the owners of a tie set) changed: recompute it, then every later node that keeps an
    edge from a recomputed one. Returns how many were recomputed."""
    graph, w = ctx.graph, ctx.w
    mask_np = mask.cpu().numpy()
    starts = {graph.up_index[n] for n in ([node] if isinstance(node, str) else node)}
    changed: list[int] = []
    for u in range(min(starts), graph.n_upstream):
        ks = graph.inputs_of[u]
        if u not in starts and not (changed and mask_np[np.ix_(changed, ks)].any()):
            continue
        inp = graph.inputs[ks[0]]
        x = ctx.node_inputs(cache, mask, ks) + free_bias(w, inp.layer, inp.stage)
        if inp.stage == 0:
            h = slice(inp.head, inp.head + 1)
            cache.set(u, heads_forward(w, inp.layer, x[0:1], x[1:2], x[2:3], heads=h)[0])
        else:
            cache.set(u, mlp_forward(w, inp.layer, x[0]))
        changed.append(u)
    return len(changed)
