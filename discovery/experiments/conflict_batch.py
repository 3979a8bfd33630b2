"""Conflict prompts as the tensors the engine runs on (like :mod:`discovery.tasks.tokens`), and the
answer logits read from a forward pass: which task's answer wins on each prompt."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from discovery.experiments.conflicts import ConflictPrompt, ConflictValidationError
from discovery.experiments.result import ConflictSummary, pair_key


@dataclass
class ConflictBatch:
    """Conflict prompts tokenised: BOS first, right-padded, the last real position of each."""

    prompts: tuple[ConflictPrompt, ...]
    tokens: Tensor  # [B, P] token ids, right-padded
    last: Tensor  # [B] position of the last real token (where the answers compete)
    answer: dict[str, Tensor]  # task -> [B] token id of its answer

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.answer)

    def to(self, device: torch.device | str) -> ConflictBatch:
        return ConflictBatch(self.prompts, self.tokens.to(device), self.last.to(device),
                             {t: ids.to(device) for t, ids in self.answer.items()})

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _unknown(tokenizer, text: str) -> list[str]:
    """Words the tokenizer maps to its unknown token (our word-level tokenizers do that)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    return [w for w in text.split() if w != tokenizer.unk_token and unk in _ids(tokenizer, w)]


def _answer_id(tokenizer, answer: str, field: str) -> int:
    ids = _ids(tokenizer, answer)
    if len(ids) != 1:
        raise ConflictValidationError(f"{field}: {answer!r} is {len(ids)} tokens for this tokenizer; "
                                      "each answer must be exactly one token")
    if _unknown(tokenizer, answer):
        raise ConflictValidationError(f"{field}: {answer!r} unknown to the model's tokenizer; use a "
                                      "word of its vocabulary")
    return ids[0]


def _row(tokenizer, p: ConflictPrompt, where: str, n_ctx: int, tasks: tuple[str, str]):
    if set(p.answers) != set(tasks):
        raise ConflictValidationError(f"{where}.answers: tasks {sorted(p.answers)}; give exactly "
                                      f"{tasks[0]} and {tasks[1]}")
    bad = _unknown(tokenizer, p.prompt)
    if bad:
        raise ConflictValidationError(f"{where}.prompt: {bad[:5]} unknown to the model's tokenizer; "
                                      "use only words of its vocabulary")
    ids = [tokenizer.bos_token_id] + _ids(tokenizer, p.prompt)
    if len(ids) < 2 or len(ids) > n_ctx:
        raise ConflictValidationError(f"{where}.prompt: {len(ids) - 1} tokens; with BOS it must fit "
                                      f"the model's context of {n_ctx}: give 1 to {n_ctx - 1} tokens")
    answers = [_answer_id(tokenizer, p.answers[t], f"{where}.answers.{t}") for t in tasks]
    if answers[0] == answers[1]:
        raise ConflictValidationError(f"{where}.answers: both answers are token {answers[0]}; give "
                                      "different tokens")
    return ids, answers


def tokenize_conflicts(prompts: Sequence[ConflictPrompt], tokenizer, *, n_ctx: int,
                       tasks: tuple[str, str], where: str = "conflicts") -> ConflictBatch:
    """Tokenise and validate ``prompts`` (errors name ``conflicts[i]`` and the field)."""
    if not prompts:
        raise ConflictValidationError(f"{where}: empty; give at least one prompt")
    tasks = (tasks[0], tasks[1])
    rows = [_row(tokenizer, p, f"{where}[{i}]", n_ctx, tasks) for i, p in enumerate(prompts)]
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return ConflictBatch(
        prompts=tuple(prompts),
        tokens=torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
        last=torch.tensor([len(ids) - 1 for ids, _ in rows]),
        answer={t: torch.tensor([answers[k] for _, answers in rows]) for k, t in enumerate(tasks)},
    )


def answer_logits(logits: Tensor, batch: ConflictBatch) -> dict[str, Tensor]:
    """[B, P, V] logits -> per task the [B] logit of its answer at each prompt's last position."""
    rows = torch.arange(len(batch), device=logits.device)
    final = logits[rows, batch.last.to(logits.device)]  # [B, V]
    return {t: final[rows, ids.to(logits.device)] for t, ids in batch.answer.items()}


def summarize(logits: Tensor, batch: ConflictBatch, *, source: str,
              ablation: str = "none") -> ConflictSummary:
    """Win rates (which answer has the higher logit), top-1 rates (``other``: neither answer is the
    model's top token) and the mean logit(answer of a) - logit(answer of b) of a forward pass."""
    a, b = batch.tasks
    per_task = answer_logits(logits, batch)
    diff = (per_task[a] - per_task[b]).double()  # [B]
    rows = torch.arange(len(batch), device=logits.device)
    top = logits[rows, batch.last.to(logits.device)].argmax(-1)  # [B]
    top1 = {t: float((top == batch.answer[t].to(top.device)).double().mean()) for t in (a, b)}
    top1["other"] = 1.0 - top1[a] - top1[b]
    std = float(diff.std()) if len(batch) > 1 else 0.0
    return ConflictSummary(
        pair=pair_key(a, b), source=source, n_prompts=len(batch),
        win_rate={a: float((diff > 0).double().mean()), b: float((diff < 0).double().mean())},
        top1_rate=top1, logit_diff_mean=float(diff.mean()),
        logit_diff_std=std if math.isfinite(std) else 0.0, ablation=ablation,
    )
