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
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from discovery.graph import Graph
from discovery.mixing import mixer_of
from discovery.patching import (
    Weights,
    attend,
    free_bias,
    heads_forward,
    mlp_forward,
    node_inputs,
    project_qkv,
    unembed,
)


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

    def node_inputs(self, outputs: Tensor, mask: Tensor, ks: list[int]) -> Tensor:
        """Inputs ``ks`` (same senders) of the circuit ``mask`` ``[len(ks), B, P, D]``, bias
        excluded: kept edges carry ``outputs``, removed ones the ablation."""
        n = self.graph.n_avail[ks[0]]
        if not self.mix.linear:
            return self.mix.inputs(outputs, self.ablation, mask, ks, n)
        return node_inputs(outputs, self.ablation, mask, ks, n, ablation_sum=self.sums[n])


def _at(x: Tensor, last: Tensor) -> Tensor:
    """``x[..., b, last[b], :]`` keeping a position axis of 1: ``[*, B, P, D] -> [*, B, 1, D]``."""
    return x[..., torch.arange(x.shape[-3], device=x.device), last.to(x.device), :][..., None, :]


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


def _heads_at_last(w: Weights, layer: int, q_in: Tensor, k_in: Tensor, v_in: Tensor,
                   last: Tensor, heads: slice | Tensor = slice(None)) -> Tensor:
    """Heads whose query is taken at ``last`` only: ``q_in`` ``[H, B, 1, D]``, keys and values at
    every position ``[H, B, P, D]`` -> ``[H, B, 1, D]`` (rotary at each prompt's ``last``)."""
    q, k, v = project_qkv(w, layer, q_in, k_in, v_in, heads, last)
    return attend(w, layer, q, k, v, heads, last)


class Receiver:
    """Everything shared by the variants of one receiver input ``k`` (with its tie set ``tie``,
    owned by the nodes ``owners``): the plan, the differences ``outputs - ablation`` and the shared
    parts of downstream inputs. Valid while only the tie's columns of ``mask`` change and
    ``outputs`` stays as it is (ACDC refreshes it after the receiver)."""

    def __init__(self, ctx: SuffixContext, outputs: Tensor, mask: Tensor, k: int):
        self.ctx, self.outputs, self.mask, self.k = ctx, outputs, mask, k
        self.mask_np = mask.cpu().numpy()
        graph = ctx.graph
        self.input = graph.inputs[k]
        self.tie = graph.tie_of(k)
        self.owners = [graph.owner[i] for i in self.tie]
        self.u0 = self.owners[0]
        start = self.u0 if len(self.owners) == 1 else self.owners
        self.plan = None if self.u0 < 0 else plan(graph, self.mask_np, start, ctx.is_kv)
        self.diff = outputs - ctx.ablation  # [U, B, P, D]
        self._diff_last: Tensor | None = None
        self.cache: dict = {}

    def diff_at_last(self) -> Tensor:
        if self._diff_last is None:
            self._diff_last = _at(self.diff, self.ctx.last)
        return self._diff_last

    def shared_inputs(self, ks: list[int], last_only: bool) -> Tensor:
        """The part of inputs ``ks`` no variant changes ``[len(ks), B, P', D]`` (bias excluded)."""
        key = (tuple(ks), last_only)
        if key not in self.cache:
            n = self.ctx.graph.n_avail[ks[0]]
            diff = self.diff_at_last() if last_only else self.diff
            sums = self.ctx.sums[n]
            sums = _at(sums, self.ctx.last) if last_only else sums
            m = self.mask[:n, ks].to(diff.dtype)
            self.cache[key] = torch.einsum("ubpd,ui->ibpd", diff[:n], m) + sums
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
        return _at(sums, self.ctx.last) if last_only else sums

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
            self.cache[key] = _at(self.outputs[u], self.ctx.last)
        return self.cache[key]

    def receiver_input(self, columns: Tensor, last_only: bool) -> Tensor:
        """Input ``k`` of each variant ``[V, B, P', D]`` (bias included); row v of ``columns``
        ``[V, U]`` says which senders keep their edge. The input under a snapshot of column ``k``
        is computed once; per variant only the senders where it departs from the snapshot are
        summed (ACDC's chains depart in a few senders)."""
        n, inp = self.ctx.graph.n_avail[self.k], self.input
        if not self.ctx.mix.linear:
            return self._receiver_input_grouped(columns, last_only)
        diff = (self.diff_at_last() if last_only else self.diff)[:n]
        key = ("receiver", last_only)
        if key not in self.cache:
            column = self.mask[:n, self.k].to(diff.dtype).clone()
            base = torch.einsum("ubpd,u->bpd", diff, column)
            sums = _at(self.ctx.sums[n], self.ctx.last) if last_only else self.ctx.sums[n]
            self.cache[key] = column, base + sums + free_bias(self.ctx.w, inp.layer, inp.stage)
        column, base = self.cache[key]
        change = columns[:, :n].to(diff.dtype) - column  # [V, n]
        senders = change.any(0).nonzero()[:, 0]
        return base[None] + torch.einsum("ubpd,vu->vbpd", diff[senders], change[:, senders])

    def _receiver_input_grouped(self, columns: Tensor, last_only: bool) -> Tensor:
        """:meth:`receiver_input` of a post-norm model: per sender group, the snapshot's sum plus
        the senders where a variant departs from it, closed per variant."""
        ctx, n, inp = self.ctx, self.ctx.graph.n_avail[self.k], self.input
        key = ("receiver-groups", last_only)
        if key not in self.cache:
            column = self.mask[:n, self.k].to(self.diff.dtype).clone()
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
        """Last-position logits ``[V*B, vocab]`` of the variants ``columns`` ``[V, U]``, or None
        when they cannot change the logits."""
        if self.input.stage == 2:
            return unembed(self.ctx.w, self.receiver_input(columns, True)[:, :, 0].flatten(0, 1))
        if self.plan is None:
            return None
        return _Pass(self, columns).run()


class _Pass:
    """One suffix pass over the planned nodes for ``V`` variants (batched as ``V*B``)."""

    def __init__(self, rx: Receiver, columns: Tensor):
        self.rx, self.ctx, self.columns = rx, rx.ctx, columns
        self.v = columns.shape[0]
        self.last = rx.ctx.last.repeat(self.v)  # [V*B]
        self.nodes: list[int] = []  # planned nodes computed so far
        self.delta: dict[tuple[int, bool], Tensor] = {}  # (u, last_only) -> new - cached [V*B, P', D]

    def add(self, u: int, value: Tensor, last_only: bool) -> None:
        cached = self.rx.output(u, last_only)
        # Broadcast over the variant axis instead of materialising a repeat of the cache.
        self.delta[(u, last_only)] = (value.view(self.v, *cached.shape) - cached[None]).view(value.shape)
        self.nodes.append(u)

    def _delta(self, u: int, last_only: bool) -> Tensor:
        if (u, last_only) not in self.delta:  # only last-position reads of a full node get here
            self.delta[(u, last_only)] = _at(self.delta[(u, False)], self.last)
        return self.delta[(u, last_only)]

    def inputs(self, ks: list[int], last_only: bool = False) -> Tensor:
        """Inputs ``ks`` of every variant ``[len(ks), V*B, P', D]``, bias included."""
        inp = self.ctx.graph.inputs[ks[0]]
        if not self.ctx.mix.linear:
            return self._inputs_grouped(ks, last_only)
        shared = self.rx.shared_inputs(ks, last_only) + free_bias(self.ctx.w, inp.layer, inp.stage)
        used = [u for u in self.nodes if self.rx.mask_np[u, ks].any()]
        if not used:
            return shared.repeat(1, self.v, 1, 1)
        m = self.rx.mask[used][:, ks].to(shared.dtype)  # [u, i]
        varying = torch.einsum("ubpd,ui->ibpd", torch.stack([self._delta(u, last_only) for u in used]), m)
        i, _, p, d = varying.shape
        return (varying.view(i, self.v, -1, p, d) + shared[:, None]).view(i, -1, p, d)

    def _inputs_grouped(self, ks: list[int], last_only: bool) -> Tensor:
        """:meth:`inputs` of a post-norm model: each sender group's shared part plus the planned
        nodes' differences in it, closed per variant; groups no planned node feeds closed once."""
        ctx, rx = self.ctx, self.rx
        inp, n = ctx.graph.inputs[ks[0]], ctx.graph.n_avail[ks[0]]
        used = [u for u in self.nodes if rx.mask_np[u, ks].any()]
        fixed = free_bias(ctx.w, inp.layer, inp.stage)
        varying = None
        for j, (g, part) in enumerate(zip(ctx.mix.groups(n), rx.shared_parts(ks, last_only),
                                          strict=True)):
            mine = [u for u in used if ctx.group_of[n].get(u) == j]
            if not mine:
                fixed = fixed + ctx.mix.close(g, part)
                continue
            m = rx.mask[mine][:, ks].to(part.dtype)  # [u, i]
            delta = torch.einsum("ubpd,ui->ibpd", torch.stack([self._delta(u, last_only) for u in mine]), m)
            i, _, p, d = delta.shape
            closed = ctx.mix.close(g, delta.view(i, self.v, -1, p, d) + part[:, None])
            varying = closed if varying is None else varying + closed
        if varying is None:
            return fixed.repeat(1, self.v, 1, 1)
        i, _, b, p, d = varying.shape
        fixed = fixed if fixed.dim() == 1 else fixed[:, None]  # bias only: every group varies
        return (varying + fixed).view(i, -1, p, d)

    def run(self) -> Tensor:
        rx, graph, w = self.rx, self.ctx.graph, self.ctx.w
        planned = rx.plan or {}
        if len(rx.owners) == 1:
            self._receiver(planned[rx.u0])
        else:
            for full in (True, False):
                self._tied_receiver([u for u in rx.owners if planned[u] == full], full)
        by_layer: dict[tuple[int, int], list[int]] = {}
        for u in planned:
            if u not in rx.owners:
                inp = graph.inputs[graph.inputs_of[u][0]]
                by_layer.setdefault((inp.layer, inp.stage), []).append(u)
        for (layer, stage), nodes in sorted(by_layer.items()):
            for full in (True, False):
                group = [u for u in nodes if planned[u] == full]
                if group and stage == 0:
                    self._heads(layer, group, full)
                elif group:
                    mlp_in = self.inputs(graph.inputs_of[group[0]], not full)[0]
                    self.add(group[0], mlp_forward(w, layer, mlp_in), not full)
        final = self.inputs([graph.n_inputs - 1], True)[0][:, 0]
        return unembed(w, final)

    def _receiver(self, full: bool) -> None:
        """The receiver's own node, from the variants' input ``k`` and its other (shared) inputs."""
        rx, w, inp = self.rx, self.ctx.w, self.rx.input
        if inp.stage == 1:
            x = rx.receiver_input(self.columns, not full)
            self.add(rx.u0, mlp_forward(w, inp.layer, x.flatten(0, 1)), not full)
            return
        q, k, v = rx.ctx.graph.inputs_of[rx.u0]
        one = slice(inp.head, inp.head + 1)

        def take(i: int, last_only: bool) -> Tensor:
            if i == rx.k:
                return rx.receiver_input(self.columns, last_only).flatten(0, 1)[None]
            return self.inputs([i], last_only)

        if full:
            out = heads_forward(w, inp.layer, take(q, False), take(k, False), take(v, False), one)
        else:
            out = _heads_at_last(w, inp.layer, take(q, True), take(k, False), take(v, False), self.last, one)
        self.add(rx.u0, out[0], not full)

    def _tied_receiver(self, nodes: list[int], full: bool) -> None:
        """The heads ``nodes`` owning the receiver's tie set, batched: the tied input (the same for
        each) from the variants, their other inputs shared. At every position or the last one."""
        if not nodes:
            return
        rx, graph, w = self.rx, self.ctx.graph, self.ctx.w
        tie = set(rx.tie)
        heads = torch.tensor([graph.inputs[graph.inputs_of[u][0]].head for u in nodes],
                             device=self.ctx.ablation.device)

        def take(x: int, last_only: bool) -> Tensor:  # x: 0 q, 1 k, 2 v -> [len(nodes), V*B, P', D]
            own = [graph.inputs_of[u][x] for u in nodes]
            if own[0] in tie:
                shared = rx.receiver_input(self.columns, last_only).flatten(0, 1)
                return shared[None].expand(len(nodes), *shared.shape)
            return self.inputs(own, last_only)

        if full:
            out = heads_forward(w, rx.input.layer, take(0, False), take(1, False), take(2, False), heads)
        else:
            out = _heads_at_last(w, rx.input.layer, take(0, True), take(1, False), take(2, False),
                                 self.last, heads)
        for j, u in enumerate(nodes):
            self.add(u, out[j], not full)

    def _heads(self, layer: int, nodes: list[int], full: bool) -> None:
        """Heads ``nodes`` of ``layer``, batched; at every position or at the last one."""
        graph, w = self.ctx.graph, self.ctx.w
        heads = torch.tensor([graph.inputs[graph.inputs_of[u][0]].head for u in nodes],
                             device=self.ctx.ablation.device)
        q_ks = [graph.inputs_of[u][0] for u in nodes]
        kv = self.inputs([i for u in nodes for i in graph.inputs_of[u][1:]])
        kv = kv.view(len(nodes), 2, *kv.shape[1:])  # [heads, k|v, V*B, P, D]
        if full:
            out = heads_forward(w, layer, self.inputs(q_ks), kv[:, 0], kv[:, 1], heads=heads)
        else:
            out = _heads_at_last(w, layer, self.inputs(q_ks, True), kv[:, 0], kv[:, 1], self.last, heads)
        for j, u in enumerate(nodes):
            self.add(u, out[j], not full)


def refresh_after(ctx: SuffixContext, outputs: Tensor, mask: Tensor, node: str | list[str]) -> int:
    """Bring the cache ``outputs`` up to date after the inputs of ``node`` (or of each of a list of
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
        x = ctx.node_inputs(outputs, mask, ks) + free_bias(w, inp.layer, inp.stage)
        if inp.stage == 0:
            h = slice(inp.head, inp.head + 1)
            outputs[u] = heads_forward(w, inp.layer, x[0:1], x[1:2], x[2:3], heads=h)[0]
        else:
            outputs[u] = mlp_forward(w, inp.layer, x[0])
        changed.append(u)
    return len(changed)
