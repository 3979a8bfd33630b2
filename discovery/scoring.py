"""Per-task scores of a model on held-out prompts: top-1 accuracy, probability mass on the right
answers, and the task's own metric. Used by the model card and ``circuits eval``; works with any
function from tokens to logits (a Hugging Face model or a TransformerBridge)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from discovery.metrics import METRICS, answer_mass, final_logits, top1_correct
from discovery.tasks import get_task
from discovery.tasks.tokens import tokenize_task

LogitsFn = Callable[[Tensor], Tensor]  # tokens [batch, pos] -> logits [batch, pos, vocab]
EVAL_SEED = 12345  # held-out prompts are drawn with this seed, so every evaluation sees the same


@torch.no_grad()
def score_tasks(logits_fn: LogitsFn, tokenizer, tasks: Sequence[str], *, n: int, n_ctx: int,
                device: str | torch.device = "cpu",
                task_options: dict[str, dict] | None = None) -> dict[str, dict]:
    """``{task: {prompts, accuracy, answer_mass, metric, metric_mean}}`` on ``n`` test prompts."""
    scores = {}
    for name in tasks:
        options = (task_options or {}).get(name)
        data = get_task(name).generate(n, seed=EVAL_SEED, split="test", options=options)
        batch = tokenize_task(data, tokenizer, n_ctx=n_ctx).to(device)
        final = final_logits(logits_fn(batch.clean), batch.last).float()
        metric = METRICS[data.metric](final, batch.answers, batch.wrongs, None)
        scores[name] = {
            "prompts": len(batch),
            "accuracy": round(top1_correct(final, batch.answers).float().mean().item(), 4),
            "answer_mass": round(answer_mass(final, batch.answers).mean().item(), 4),
            "metric": data.metric,
            "metric_mean": round(metric.mean().item(), 4),
        }
    return scores
