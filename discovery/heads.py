"""Classic head diagnostics read off attention patterns (Olsson et al. 2022): how much a head
attends to the previous token, and how much it does induction (on ``R R`` for a random sequence R,
from position t in the repeat to the token right after t's earlier occurrence). Patterns come from
the TransformerBridge's own hooks, independent of our patching code."""

from __future__ import annotations

import torch
from torch import Tensor


def repeated_sequences(vocab_ids: list[int], *, n: int, length: int, bos: int, seed: int = 0) -> Tensor:
    """``[n, 1 + 2 * length]``: BOS, then a random sequence of distinct tokens, twice."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor(vocab_ids)
    rows = [ids[torch.randperm(len(ids), generator=g)[:length]] for _ in range(n)]
    seq = torch.stack(rows)
    return torch.cat([torch.full((n, 1), bos), seq, seq], dim=1)


@torch.no_grad()
def head_scores(bridge, tokens: Tensor, length: int) -> dict[str, dict[str, float]]:
    """``{"a1.h3": {"previous_token": s, "induction": s}}`` for every head."""
    tokens = tokens.to(next(bridge.parameters()).device)
    _, cache = bridge.run_with_cache(tokens)
    scores = {}
    second = torch.arange(1 + length, 1 + 2 * length, device=tokens.device)  # the repeat
    for layer in range(bridge.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [batch, head, query, key]
        for head in range(bridge.cfg.n_heads):
            p = pattern[:, head]
            pos = torch.arange(1, p.shape[1], device=p.device)
            prev = p[:, pos, pos - 1].mean().item()
            induction = p[:, second, second - length + 1].mean().item()
            scores[f"a{layer}.h{head}"] = {"previous_token": prev, "induction": induction}
    return scores
