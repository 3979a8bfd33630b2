"""Metrics on hand-computed logits."""

from __future__ import annotations

import math

import torch

from discovery.metrics import (
    answer_mass,
    final_logits,
    kl,
    logit_diff,
    logprob,
    prob_diff,
    top1_correct,
)

LOGITS = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 3.0, 0.0, 0.0]])
ANSWERS = torch.tensor([[0, -1], [1, 2]])
WRONGS = torch.tensor([[2], [0]])


def test_final_logits_takes_each_prompts_last_position():
    logits = torch.arange(2 * 3 * 4, dtype=torch.float).reshape(2, 3, 4)
    assert torch.equal(final_logits(logits, torch.tensor([2, 0])), torch.stack([logits[0, 2], logits[1, 0]]))


def test_logit_diff_averages_answers_and_ignores_padding():
    assert torch.allclose(logit_diff(LOGITS, ANSWERS, WRONGS), torch.tensor([1.0, 1.5]))


def test_prob_diff_and_mass():
    p = LOGITS.softmax(-1)
    assert torch.allclose(prob_diff(LOGITS, ANSWERS, WRONGS), torch.stack([p[0, 0] - p[0, 2], p[1, 1] + p[1, 2] - p[1, 0]]))
    assert torch.allclose(answer_mass(LOGITS, ANSWERS), torch.stack([p[0, 0], p[1, 1] + p[1, 2]]))


def test_logprob_is_log_of_answer_mass():
    assert torch.allclose(logprob(LOGITS, ANSWERS, WRONGS), answer_mass(LOGITS, ANSWERS).log())


def test_kl_zero_for_itself_and_positive_otherwise():
    assert torch.allclose(kl(LOGITS, ANSWERS, WRONGS, LOGITS), torch.zeros(2), atol=1e-6)
    value = kl(torch.zeros(1, 2), ANSWERS[:1], WRONGS[:1], torch.tensor([[math.log(3.0), 0.0]]))
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert abs(value.item() - expected) < 1e-6


def test_top1():
    assert top1_correct(LOGITS, ANSWERS).tolist() == [True, True]
    assert top1_correct(LOGITS, torch.tensor([[1, -1], [0, -1]])).tolist() == [False, False]
