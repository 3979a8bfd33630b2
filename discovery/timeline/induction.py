"""Induction diagnostics of one model (Olsson et al. 2022), for the timeline's induction analysis:
every head's previous-token and induction (prefix-matching) scores from attention patterns
(discovery.heads, over the TransformerBridge's hooks) and the in-context loss from the model's own
logits, all on ``[BOS, R, R]`` for random sequences R of distinct words."""

from __future__ import annotations

import torch
from torch import Tensor

from discovery.heads import head_scores, repeated_sequences
from discovery.models import LoadedModel
from discovery.zoo.language import NAMES, OBJECTS, PLACES

#: Words the repeated sequences are drawn from (single tokens in our toy language).
DEFAULT_WORDS: tuple[str, ...] = NAMES + PLACES + OBJECTS


def vocab_ids(tokenizer, words: tuple[str, ...] = DEFAULT_WORDS) -> list[int]:  # noqa: ANN001
    """Ids of the ``words`` the tokenizer knows as one token (unknown ones dropped)."""
    ids = tokenizer.convert_tokens_to_ids(list(words))
    unk = getattr(tokenizer, "unk_token_id", None)
    return sorted({i for i in ids if i is not None and i != unk})


@torch.no_grad()
def in_context_loss(logits: Tensor, tokens: Tensor, length: int) -> dict[str, float]:
    """Loss on late tokens minus loss on early tokens of ``tokens`` ``[n, 1 + 2 * length]``
    (BOS, R, R) given ``logits`` ``[n, 1 + 2 * length, vocab]`` (position t predicts t + 1).

    Early: the tokens of the first copy after its first (positions 2..length, only guessable from
    unigram statistics). Late: the second copy after its first token (positions length + 2 ..
    2 * length, each predictable by induction from the first copy). Negative when the model
    learns in context; about 0 before induction heads form."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [n, T - 1, vocab]
    nll = -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # [n, T - 1]; column j: token j + 1
    early = nll[:, 1:length].mean().item()  # tokens 2 .. length
    late = nll[:, length + 1:].mean().item()  # tokens length + 2 .. 2 * length
    return {"early_loss": early, "late_loss": late, "in_context_loss": late - early}


def induction_diagnostics(model: LoadedModel, *, n: int = 20, length: int = 8, seed: int = 0,
                          words: tuple[str, ...] = DEFAULT_WORDS) -> dict:
    """``{"heads": {"a1.h0": {"previous_token": s, "induction": s}}, "in_context_loss": x,
    "early_loss": e, "late_loss": l}`` for ``n`` sequences of ``length`` distinct words, twice.
    Head scores are attention probabilities, so in [0, 1]."""
    ids = vocab_ids(model.tokenizer, words)
    if len(ids) < length:
        raise ValueError(f"length {length} needs that many distinct known words; the tokenizer "
                         f"knows {len(ids)} of the given words: pass more words or a smaller length")
    tokens = repeated_sequences(ids, n=n, length=length, bos=model.tokenizer.bos_token_id, seed=seed)
    heads = head_scores(model.bridge, tokens, length)
    hf = model.hf_model
    device = next(hf.parameters()).device
    logits = hf(tokens.to(device)).logits.cpu()  # [n, 1 + 2 * length, vocab]
    return {"heads": heads, **in_context_loss(logits, tokens, length)}
