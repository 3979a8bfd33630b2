"""One suffix pass of fast ACDC (:mod:`discovery.suffix`): the planned nodes of one receiver,
recomputed for ``V`` variants at once (batched as ``V*B`` rows, variant-major).

What no variant changes is computed once per receiver, on ``B`` rows, and only broadcast:

* the receiver node's other inputs (they come from earlier nodes, which keep their outputs), and
  any input of a later head that no planned node feeds, are *fixed*;
* a head slot (q, k or v) whose inputs are all fixed is projected once per receiver (cached on the
  :class:`~discovery.suffix.Receiver`, whose chains run several passes) and repeated over the
  variants after projection, which is far cheaper than norming and projecting ``V`` copies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from discovery.patching import Weights, attend, free_bias, mlp_forward, project_qkv, unembed

if TYPE_CHECKING:
    from discovery.suffix import Receiver

#: One head slot (q, k or v) of a batched attention: the varying input ``[H, V*B, P', D]``, or a
#: fixed one as (cache key, a function giving it ``[H, B, P', D]``), projected once per receiver.
Slot = Tensor | tuple[tuple, Callable[[], Tensor]]


def at_last(x: Tensor, last: Tensor) -> Tensor:
    """``x[..., b, last[b], :]`` keeping a position axis of 1: ``[*, B, P, D] -> [*, B, 1, D]``."""
    return x[..., torch.arange(x.shape[-3], device=x.device), last.to(x.device), :][..., None, :]


def project_slots(w: Weights, layer: int, xs: list[Tensor | None], heads: slice | Tensor,
                  q_pos: Tensor | None, positions: int) -> list[Tensor | None]:
    """Project only the given slots of ``xs`` = [q, k, v] inputs ``[H, R, P', D]`` (None: skip).
    Every architecture projects q, k and v independently, so a skipped slot goes through as an
    empty batch and costs nothing; ``q_pos`` ``[R]`` is the query rows' positions (last-only),
    and a skipped k keeps ``positions`` (rotary tables are sized from it)."""
    given = next(x for x in xs if x is not None)
    h, d = given.shape[0], given.shape[-1]
    q_len = 1 if q_pos is not None else positions

    def empty(p: int) -> Tensor:
        return given.new_empty(h, 0, p, d)

    q = xs[0] if xs[0] is not None else empty(q_len)
    pos = q_pos if q_pos is None or xs[0] is not None else q_pos[:0]
    k = xs[1] if xs[1] is not None else empty(positions)
    v = xs[2] if xs[2] is not None else empty(positions)
    out = project_qkv(w, layer, q, k, v, heads, pos)
    return [o if x is not None else None for o, x in zip(out, xs, strict=True)]


class SuffixPass:
    """One suffix pass over the planned nodes for ``V`` variants (batched as ``V*B``)."""

    def __init__(self, rx: Receiver, columns: Tensor):
        """``columns`` ``[V, U, S]``: each variant's column of every receiver input."""
        self.rx, self.ctx, self.columns = rx, rx.ctx, columns
        self.v = columns.shape[0]
        self.last = rx.ctx.last.repeat(self.v)  # [V*B]
        self.positions = rx.ctx.ablation.shape[2]
        self.nodes: list[int] = []  # planned nodes computed so far
        self.delta: dict[tuple[int, bool], Tensor] = {}  # (u, last_only) -> new - cached [V*B, P', D]

    # -- node outputs --------------------------------------------------------------------------
    def add(self, u: int, value: Tensor, last_only: bool) -> None:
        cached = self.rx.output(u, last_only)
        # Broadcast over the variant axis instead of materialising a repeat of the cache.
        self.delta[(u, last_only)] = (value.view(self.v, *cached.shape) - cached[None]).view(value.shape)
        self.nodes.append(u)

    def _delta(self, u: int, last_only: bool) -> Tensor:
        if (u, last_only) not in self.delta:  # only last-position reads of a full node get here
            self.delta[(u, last_only)] = at_last(self.delta[(u, False)], self.last)
        return self.delta[(u, last_only)]

    # -- inputs --------------------------------------------------------------------------------
    def _used(self, ks: list[int]) -> list[int]:
        """The planned nodes computed so far that feed any of inputs ``ks`` through a kept edge."""
        return [u for u in self.nodes if self.rx.mask_np[u, ks].any()]

    def fixed_inputs(self, ks: list[int], last_only: bool) -> Tensor:
        """Inputs ``ks`` as no variant changes them ``[len(ks), B, P', D]``, bias included: the
        whole input when no planned node feeds it."""
        if self.ctx.mix.linear:
            return self.rx.shared_inputs(ks, last_only)
        inp, n = self.ctx.graph.inputs[ks[0]], self.ctx.graph.n_avail[ks[0]]
        bias = free_bias(self.ctx.w, inp.layer, inp.stage)
        closed = [self.ctx.mix.close(g, part) for g, part in
                  zip(self.ctx.mix.groups(n), self.rx.shared_parts(ks, last_only), strict=True)]
        return sum(closed, bias)

    def inputs(self, ks: list[int], last_only: bool = False) -> Tensor:
        """Inputs ``ks`` of every variant ``[len(ks), V*B, P', D]``, bias included."""
        used = self._used(ks)
        if not used:
            return self.fixed_inputs(ks, last_only).repeat(1, self.v, 1, 1)
        if not self.ctx.mix.linear:
            return self._inputs_grouped(ks, last_only, used)
        shared = self.rx.shared_inputs(ks, last_only)
        m = self.rx.mask[used][:, ks].to(shared.dtype)  # [u, i]
        varying = torch.einsum("ubpd,ui->ibpd", torch.stack([self._delta(u, last_only) for u in used]), m)
        i, _, p, d = varying.shape
        return (varying.view(i, self.v, -1, p, d) + shared[:, None]).view(i, -1, p, d)

    def _inputs_grouped(self, ks: list[int], last_only: bool, used: list[int]) -> Tensor:
        """:meth:`inputs` of a post-norm model: each sender group's shared part plus the planned
        nodes' differences in it, closed per variant; groups no planned node feeds closed once."""
        ctx, rx = self.ctx, self.rx
        inp, n = ctx.graph.inputs[ks[0]], ctx.graph.n_avail[ks[0]]
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
        if varying is None:  # the planned nodes feed these inputs through no group
            return fixed.repeat(1, self.v, 1, 1)
        i, _, b, p, d = varying.shape
        fixed = fixed if fixed.dim() == 1 else fixed[:, None]  # bias only: every group varies
        return (varying + fixed).view(i, -1, p, d)

    # -- heads ---------------------------------------------------------------------------------
    def _attention(self, layer: int, heads: Tensor | slice, slots: list[Slot], full: bool) -> Tensor:
        """Outputs ``[H, V*B, P', D]`` of ``heads`` of ``layer`` from their [q, k, v] ``slots``:
        each a varying input ``[H, V*B, P', D]`` or a fixed one (:data:`Slot`), projected once
        per receiver and repeated over the variants."""
        w, cache = self.ctx.w, self.rx.cache
        varying = [x if isinstance(x, Tensor) else None for x in slots]
        out = (project_slots(w, layer, varying, heads, None if full else self.last, self.positions)
               if any(x is not None for x in varying) else [None] * 3)
        for s, x in enumerate(slots):
            if isinstance(x, Tensor):
                continue
            key, make = x
            name = ("projected", layer, full, s, key)
            if name not in cache:
                xs: list[Tensor | None] = [None, None, None]
                xs[s] = make()
                cache[name] = project_slots(w, layer, xs, heads, None if full else self.ctx.last,
                                            self.positions)[s]
            out[s] = cache[name].repeat(1, self.v, 1, 1)
        return attend(w, layer, out[0], out[1], out[2], heads, None if full else self.last)

    def _slot(self, ks: list[int], last_only: bool) -> Slot:
        """The slot of downstream heads whose inputs are ``ks``: varying where a planned node feeds
        any of them, else fixed."""
        if self._used(ks):
            return self.inputs(ks, last_only)
        return (("in", tuple(ks)), lambda: self.fixed_inputs(ks, last_only))

    def _receiver_slot(self, i: int, nodes: tuple[int, ...], last_only: bool) -> Slot:
        """The slot of the receiver's owner heads ``nodes`` that reads input ``i``. Not a
        receiver input: fixed (it comes from earlier nodes). A receiver input is varying unless
        every variant has the same column (the chain is deciding another input of the node):
        then it is fixed under that column, cached by its content."""
        rx = self.rx
        s = rx.slot_of(i)
        if s is None:
            return (("in", (i,)), lambda: self.fixed_inputs([i], last_only))
        columns = self.columns[:, :, s]
        if bool((columns == columns[:1]).all()):
            key = ("receiver", s, nodes, columns[0].cpu().numpy().tobytes())
            return (key, lambda: rx.receiver_input(columns[:1], last_only, s).expand(len(nodes), -1, -1, -1))
        x = rx.receiver_input(columns, last_only, s).flatten(0, 1)
        return x[None].expand(len(nodes), *x.shape)

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
        """The receiver's own node, from the variants' receiver inputs; its other inputs come from
        earlier nodes, so they are fixed."""
        rx, w, inp = self.rx, self.ctx.w, self.rx.input
        if inp.stage == 1:
            x = rx.receiver_input(self.columns[:, :, 0], not full)
            self.add(rx.u0, mlp_forward(w, inp.layer, x.flatten(0, 1)), not full)
            return
        slots = [self._receiver_slot(i, (rx.u0,), s == 0 and not full)
                 for s, i in enumerate(self.ctx.graph.inputs_of[rx.u0])]
        out = self._attention(inp.layer, slice(inp.head, inp.head + 1), slots, full)
        self.add(rx.u0, out[0], not full)

    def _tied_receiver(self, nodes: list[int], full: bool) -> None:
        """The heads ``nodes`` owning the receiver's tie sets, batched: each tied input (the same
        for each head) from the variants, their other inputs fixed. At every position or the last."""
        if not nodes:
            return
        rx, graph = self.rx, self.ctx.graph
        heads = torch.tensor([graph.inputs[graph.inputs_of[u][0]].head for u in nodes],
                             device=self.ctx.ablation.device)
        own = [[graph.inputs_of[u][s] for u in nodes] for s in range(3)]
        slots = [self._receiver_slot(own[s][0], tuple(nodes), s == 0 and not full)
                 if rx.slot_of(own[s][0]) is not None else self._slot(own[s], s == 0 and not full)
                 for s in range(3)]
        out = self._attention(rx.input.layer, heads, slots, full)
        for j, u in enumerate(nodes):
            self.add(u, out[j], not full)

    def _heads(self, layer: int, nodes: list[int], full: bool) -> None:
        """Heads ``nodes`` of ``layer``, batched; at every position or at the last one."""
        graph = self.ctx.graph
        heads = torch.tensor([graph.inputs[graph.inputs_of[u][0]].head for u in nodes],
                             device=self.ctx.ablation.device)
        own = [[graph.inputs_of[u][s] for u in nodes] for s in range(3)]
        slots = [self._slot(own[s], s == 0 and not full) for s in range(3)]
        out = self._attention(layer, heads, slots, full)
        for j, u in enumerate(nodes):
            self.add(u, out[j], not full)
