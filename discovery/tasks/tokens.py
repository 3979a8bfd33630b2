"""A task as the tensors the engine runs on: token ids of clean and corrupted prompts, the last
real position of each, and the answer and counter-answer token ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from discovery.tasks.base import TaskData, TaskValidationError


@dataclass
class TokenizedTask:
    """A task as tensors. ``answers``/``wrongs`` are padded with -1 (not a token)."""

    data: TaskData
    clean: torch.Tensor  # [batch, pos] token ids, right-padded
    corrupt: torch.Tensor  # [batch, pos]
    last: torch.Tensor  # [batch] position of the last real token (where the answer is predicted)
    answers: torch.Tensor  # [batch, n_answers] token ids, -1 = none
    wrongs: torch.Tensor  # [batch, n_wrongs] token ids, -1 = none
    prepend_bos: bool = True  # a BOS token was put before every prompt (provenance records it)

    def to(self, device: torch.device | str) -> TokenizedTask:
        return TokenizedTask(self.data, self.clean.to(device), self.corrupt.to(device),
                             self.last.to(device), self.answers.to(device), self.wrongs.to(device),
                             self.prepend_bos)

    def __len__(self) -> int:
        return self.clean.shape[0]


def _ids(tokenizer, text: str, *, bos: bool) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if bos else []) + list(ids)


def _single_tokens(tokenizer, words: Sequence[str], index: int, field_name: str) -> list[int]:
    ids = []
    for word in words:
        toks = _ids(tokenizer, word, bos=False)
        if len(toks) != 1:
            raise TaskValidationError(
                f"pairs[{index}].{field_name}: {word!r} is {len(toks)} tokens for this tokenizer; "
                "each answer must be exactly one token"
            )
        ids.append(toks[0])
    return ids


def _check_known(tokenizer, text: str, index: int, field_name: str) -> None:
    """Words the tokenizer maps to its unknown token (our word-level tokenizers do that)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return
    bad = [w for w in text.split() if w != tokenizer.unk_token and unk in _ids(tokenizer, w, bos=False)]
    if bad:
        raise TaskValidationError(
            f"pairs[{index}].{field_name}: {bad} unknown to the model's tokenizer; use only words "
            "of its vocabulary (`circuits tasks show TASK` prints examples)"
        )


def tokenize_task(data: TaskData, tokenizer, *, n_ctx: int, prepend_bos: bool = True) -> TokenizedTask:
    """Tokenise and validate ``data``; errors name the pair index and the field."""
    if not data.pairs:
        raise TaskValidationError("pairs: the task has no pairs; give at least one")
    rows = []
    for i, pair in enumerate(data.pairs):
        clean = _ids(tokenizer, pair.clean, bos=prepend_bos)
        corrupt = _ids(tokenizer, pair.corrupt, bos=prepend_bos)
        _check_known(tokenizer, pair.clean, i, "clean")
        _check_known(tokenizer, pair.corrupt, i, "corrupt")
        if len(clean) != len(corrupt):
            raise TaskValidationError(
                f"pairs[{i}]: clean is {len(clean)} tokens but corrupt is {len(corrupt)}; "
                "a pair's prompts must have equal token length"
            )
        if len(clean) > n_ctx:
            raise TaskValidationError(
                f"pairs[{i}].clean: {len(clean)} tokens is longer than the model's context of {n_ctx}"
            )
        if not pair.answers:
            raise TaskValidationError(f"pairs[{i}].answer: empty; give at least one answer token")
        if data.metric in ("logit_diff", "prob_diff") and not pair.wrongs:
            raise TaskValidationError(
                f"pairs[{i}].wrong: empty; metric {data.metric} needs at least one wrong token"
            )
        answers = _single_tokens(tokenizer, pair.answers, i, "answer")
        wrongs = _single_tokens(tokenizer, pair.wrongs, i, "wrong")
        rows.append((clean, corrupt, answers, wrongs))
    width = max(len(r[0]) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def matrix(column: int, fill: int, size: int) -> torch.Tensor:
        return torch.tensor([r[column] + [fill] * (size - len(r[column])) for r in rows])

    return TokenizedTask(
        data=data,
        clean=matrix(0, pad, width),
        corrupt=matrix(1, pad, width),
        last=torch.tensor([len(r[0]) - 1 for r in rows]),
        answers=matrix(2, -1, max(len(r[2]) for r in rows)),
        wrongs=matrix(3, -1, max(1, max(len(r[3]) for r in rows))),
        prepend_bos=prepend_bos,
    )


def tokenizer_sha256(tokenizer) -> str:
    """sha256 of the tokenizer's canonical JSON (keys sorted): the same for the same vocabulary,
    merges, normaliser and special tokens however the tokenizer was loaded. "" for a tokenizer
    without a Hugging Face fast backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return ""
    canonical = json.dumps(json.loads(backend.to_str()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def token_rows(batch: TokenizedTask) -> list[dict]:
    """Per pair the exact token ids the engine ran on (no padding) and the answer ids: what a
    second tool compares its own tokenisation against."""
    rows = []
    for i in range(len(batch)):
        n = int(batch.last[i]) + 1
        rows.append({"clean": batch.clean[i, :n].tolist(), "corrupt": batch.corrupt[i, :n].tolist(),
                     "answers": [t for t in batch.answers[i].tolist() if t >= 0],
                     "wrongs": [t for t in batch.wrongs[i].tolist() if t >= 0]})
    return rows
