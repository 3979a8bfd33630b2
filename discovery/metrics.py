"""Task metrics on the logits at each prompt's last real position. All return one value per
prompt (``[batch]``); callers average. Signature shared through :data:`METRICS`:
``metric(final_logits, answers, wrongs, reference) -> Tensor[batch]``.

``answers``/``wrongs`` are ``[batch, n]`` token ids padded with -1; ``reference`` is the full
model's final logits (only KL uses it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def final_logits(logits: Tensor, last: Tensor) -> Tensor:
    """``logits[b, last[b]]``: [batch, pos, vocab] -> [batch, vocab]."""
    return logits[torch.arange(logits.shape[0], device=logits.device), last]


def _gather(values: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Values at token ``ids`` ([batch, n], -1 = none) and the mask of real ids."""
    mask = ids >= 0
    return values.gather(1, ids.clamp(min=0)), mask


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum(1) / mask.sum(1).clamp(min=1)


def logit_diff(final: Tensor, answers: Tensor, wrongs: Tensor, reference: Tensor | None = None) -> Tensor:
    """Mean logit of the answers minus mean logit of the wrong tokens (IOI: logit(IO) - logit(S))."""
    right, right_mask = _gather(final, answers)
    wrong, wrong_mask = _gather(final, wrongs)
    return _masked_mean(right, right_mask) - _masked_mean(wrong, wrong_mask)


def prob_diff(final: Tensor, answers: Tensor, wrongs: Tensor, reference: Tensor | None = None) -> Tensor:
    """Probability on the answers minus probability on the wrong tokens (greater-than)."""
    probs = final.softmax(-1)
    right, right_mask = _gather(probs, answers)
    wrong, wrong_mask = _gather(probs, wrongs)
    return (right * right_mask).sum(1) - (wrong * wrong_mask).sum(1)


def logprob(final: Tensor, answers: Tensor, wrongs: Tensor, reference: Tensor | None = None) -> Tensor:
    """Log of the total probability on the answers."""
    logp, mask = _gather(final.log_softmax(-1), answers)
    return logp.masked_fill(~mask, float("-inf")).logsumexp(1)


def kl(final: Tensor, answers: Tensor, wrongs: Tensor, reference: Tensor | None = None) -> Tensor:
    """KL(reference || model) of the next-token distributions; 0 for the full model itself.
    ACDC's default (Conmy et al. 2023). Lower is better, unlike the other metrics."""
    if reference is None:
        return torch.zeros(final.shape[0], device=final.device)
    logp = reference.log_softmax(-1)
    return kl_to((logp, logp.exp()), final)


def kl_to(reference: tuple[Tensor, Tensor], final: Tensor) -> Tensor:
    """:func:`kl` from the reference's log-probabilities and probabilities ``[B, vocab]`` (computed
    once) to logits ``[V, B, vocab]`` -> ``[V, B]`` (or ``[B, vocab]`` -> ``[B]``): a caller scoring many
    variants normalises the reference once."""
    logp, p = reference
    return (p * (logp - final.log_softmax(-1))).sum(-1)


def answer_mass(final: Tensor, answers: Tensor) -> Tensor:
    """Total probability on the answers."""
    probs, mask = _gather(final.softmax(-1), answers)
    return (probs * mask).sum(1)


def top1_correct(final: Tensor, answers: Tensor) -> Tensor:
    """True where the argmax token is one of the answers."""
    return (final.argmax(-1, keepdim=True) == answers).any(1)


Metric = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]
METRICS: dict[str, Metric] = {
    "logit_diff": logit_diff,
    "prob_diff": prob_diff,
    "logprob": logprob,
    "kl": kl,
}
