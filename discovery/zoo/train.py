"""Train a GPT-2-architecture model from scratch on the toy language (``circuits train``).

Deterministic given the recipe's seed. Saves ``config.json``, ``model.safetensors``, the tokenizer
and the model card (``model_card.json`` and ``README.md``) into the output directory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from discovery.zoo.card import write_card
from discovery.zoo.corpus import batches, vocabulary
from discovery.zoo.language import build_tokenizer, save_tokenizer
from discovery.zoo.recipes import Recipe

Progress = Callable[[int, int, float], None]  # (step, total, loss)


def build_model(recipe: Recipe, vocab_size: int) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 (LayerNorm, GELU MLPs, learned positions), no dropout."""
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=recipe.n_ctx, n_embd=recipe.n_embd,
        n_layer=recipe.n_layer, n_head=recipe.n_head,
        n_inner=1 if recipe.attn_only else recipe.d_mlp,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
        circuit_atlas={"attn_only": recipe.attn_only, "recipe": recipe.name},
    )
    model = GPT2LMHeadModel(config)
    if recipe.attn_only:
        for block in model.transformer.h:
            for param in block.mlp.parameters():
                param.data.zero_()  # gelu(0) = 0 and zero biases: the MLP adds exactly nothing
                param.requires_grad_(False)
    return model


def _lr_at(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(recipe: Recipe, out: Path, *, progress: Progress | None = None) -> dict:
    """Train ``recipe`` into ``out``; returns the model card."""
    torch.manual_seed(recipe.seed)
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(build_tokenizer(vocabulary()), out, n_ctx=recipe.n_ctx)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = build_model(recipe, len(tokenizer))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay,
                                  betas=(0.9, 0.98))
    data = batches(tokenizer, recipe.mix, n_ctx=recipe.n_ctx, batch_size=recipe.batch_size,
                   seed=recipe.seed)
    started = time.monotonic()
    model.train()
    for step in range(recipe.steps):
        tokens, mask = next(data)
        logits = model(tokens).logits[:, :-1]
        targets = tokens[:, 1:].masked_fill(~mask[:, 1:], -100)  # no loss on padding
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 targets.reshape(-1), ignore_index=-100)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, recipe)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if progress:
            progress(step + 1, recipe.steps, loss.item())
    seconds = time.monotonic() - started
    model.eval()
    model.save_pretrained(out)
    return write_card(model, tokenizer, recipe, out, train_seconds=seconds)
