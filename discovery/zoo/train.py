"""Train a model from scratch on the toy language (``circuits train``).

The architecture comes from ``recipe.arch``, built by one entry of :data:`BUILDERS` (GPT-2, Llama,
Pythia / GPT-NeoX, Gemma 2), all from a Hugging Face config in memory, without dropout. Deterministic given the recipe's seed. Saves ``config.json``, ``model.safetensors``, the tokenizer
and the model card (``model_card.json`` and ``README.md``) into the output directory.

With checkpoint steps it also saves, after each of those steps, a loadable model directory
``checkpoints/step-000123/`` with its own card (``step``, ``train_loss``, held-out ``eval``) and lists
them in ``run.json`` (:mod:`discovery.zoo.runs`). Checkpointing leaves the run itself untouched: the
evaluation runs under ``torch.no_grad`` inside a forked torch RNG and a saved Python ``random``
state, so the final weights are the same bytes as a run without checkpoints.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from discovery.zoo.card import write_card
from discovery.zoo.corpus import batches, vocabulary
from discovery.zoo.language import build_tokenizer, save_tokenizer
from discovery.zoo.recipes import ARCHITECTURES, Recipe
from discovery.zoo.runs import Checkpoint, RunManifest, checkpoint_path, write_run

Progress = Callable[[int, int, float], None]  # (step, total, loss)

#: A checkpoint's ``train_loss`` is the mean training loss over this many steps before it.
LOSS_WINDOW = 50


def _extra(recipe: Recipe) -> dict:
    """The ``circuit_atlas`` block of config.json that :func:`discovery.models.load_model` reads."""
    return {"attn_only": recipe.attn_only, "recipe": recipe.name, "arch": recipe.arch}


_TOKENS = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}


def _gpt2(recipe: Recipe, vocab_size: int) -> GPT2LMHeadModel:
    """GPT-2: LayerNorm, GELU MLPs, learned positions."""
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=recipe.n_ctx, n_embd=recipe.n_embd,
        n_layer=recipe.n_layer, n_head=recipe.n_head,
        n_inner=1 if recipe.attn_only else recipe.d_mlp,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
        circuit_atlas=_extra(recipe), **_TOKENS,
    )
    model = GPT2LMHeadModel(config)
    if recipe.attn_only:
        for block in model.transformer.h:
            for param in block.mlp.parameters():
                param.data.zero_()  # gelu(0) = 0 and zero biases: the MLP adds exactly nothing
                param.requires_grad_(False)
    return model


def _llama(recipe: Recipe, vocab_size: int) -> LlamaForCausalLM:
    """Llama: RMSNorm, rotary on every head dimension, grouped-query attention (``n_kv_head``
    key/value heads shared by ``n_head / n_kv_head`` query heads each), SwiGLU MLP of width
    ``d_mlp``, no biases, untied unembedding."""
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=recipe.n_embd, intermediate_size=recipe.d_mlp,
        num_hidden_layers=recipe.n_layer, num_attention_heads=recipe.n_head,
        num_key_value_heads=recipe.n_kv_head or recipe.n_head,
        max_position_embeddings=recipe.n_ctx, hidden_act="silu", rms_norm_eps=1e-5,
        attention_bias=False, mlp_bias=False, attention_dropout=0.0, tie_word_embeddings=False,
        circuit_atlas=_extra(recipe), **_TOKENS,
    )
    return LlamaForCausalLM(config)


def _pythia(recipe: Recipe, vocab_size: int) -> GPTNeoXForCausalLM:
    """Pythia (GPT-NeoX): LayerNorm, attention and MLP in parallel off the same residual, rotary on
    ``rotary_pct`` of each head's dimensions, GELU MLP, biases, untied unembedding."""
    config = GPTNeoXConfig(
        vocab_size=vocab_size, hidden_size=recipe.n_embd, intermediate_size=recipe.d_mlp,
        num_hidden_layers=recipe.n_layer, num_attention_heads=recipe.n_head,
        max_position_embeddings=recipe.n_ctx, rotary_pct=recipe.rotary_pct,
        use_parallel_residual=True, hidden_act="gelu", layer_norm_eps=1e-5,
        attention_dropout=0.0, hidden_dropout=0.0, tie_word_embeddings=False,
        circuit_atlas=_extra(recipe), **_TOKENS,
    )
    return GPTNeoXForCausalLM(config)


def _gemma2(recipe: Recipe, vocab_size: int) -> Gemma2ForCausalLM:
    """Gemma 2: embedding x sqrt(d_model), ``1 + w`` RMSNorms before and after attention and MLP
    (post-norm), rotary, grouped-query attention, GeGLU of width ``d_mlp``, attention and final
    logit soft-capping (Gemma 2's 50 and 30), sliding windows on even layers, tied embeddings."""
    head_dim = recipe.n_embd // recipe.n_head
    config = Gemma2Config(
        vocab_size=vocab_size, hidden_size=recipe.n_embd, intermediate_size=recipe.d_mlp,
        num_hidden_layers=recipe.n_layer, num_attention_heads=recipe.n_head,
        num_key_value_heads=recipe.n_kv_head or recipe.n_head, head_dim=head_dim,
        max_position_embeddings=recipe.n_ctx, hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6, query_pre_attn_scalar=head_dim, sliding_window=recipe.sliding_window,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, attention_dropout=0.0,
        tie_word_embeddings=True, circuit_atlas=_extra(recipe), **_TOKENS,
    )
    return Gemma2ForCausalLM(config)


#: One builder per name of :data:`discovery.zoo.recipes.ARCHITECTURES`: (recipe, vocab size) -> a
#: freshly initialised model.
BUILDERS: dict[str, Callable[[Recipe, int], PreTrainedModel]] = {
    "gpt2": _gpt2, "llama": _llama, "pythia": _pythia, "gemma2": _gemma2,
}
assert set(BUILDERS) == set(ARCHITECTURES), "recipes.ARCHITECTURES and train.BUILDERS differ"


def build_model(recipe: Recipe, vocab_size: int) -> PreTrainedModel:
    """A freshly initialised model of ``recipe.arch`` with ``vocab_size`` tokens, no dropout."""
    return BUILDERS[recipe.arch](recipe, vocab_size)


def _lr_at(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _save_checkpoint(model, tokenizer, tok, recipe: Recipe, out: Path, step: int,
                     losses: list[float], seconds: float) -> Checkpoint:
    """Save ``model`` as it is after ``step`` into ``out/checkpoints/step-NNNNNN`` (weights, config,
    tokenizer, card) and score it. The torch and Python RNG states are restored afterwards and no
    gradient is touched, so training continues exactly as without the checkpoint."""
    relative = checkpoint_path(step)
    directory = out / relative
    directory.mkdir(parents=True, exist_ok=True)
    window = losses[-LOSS_WINDOW:]
    train_loss = round(sum(window) / len(window), 6)
    python_state = random.getstate()
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.save_pretrained(directory)
            save_tokenizer(tok, directory, n_ctx=recipe.n_ctx)
            card = write_card(model, tokenizer, recipe, directory, train_seconds=seconds,
                              extra={"step": step, "train_loss": train_loss})
    finally:
        model.train()
        random.setstate(python_state)
    return Checkpoint(step=step, path=relative, train_loss=train_loss, eval=card["eval"])


def train(recipe: Recipe, out: Path, *, progress: Progress | None = None,
          checkpoint_steps: Sequence[int] | None = None) -> dict:
    """Train ``recipe`` into ``out``; returns the model card. ``checkpoint_steps`` (each in
    ``1..recipe.steps``, e.g. from :func:`discovery.zoo.runs.log_spaced_steps`) also saves a
    checkpoint after each of those steps and writes ``out/run.json``."""
    wanted = sorted(set(checkpoint_steps or ()))
    if wanted and not 1 <= wanted[0] <= wanted[-1] <= recipe.steps:
        raise ValueError(f"checkpoint steps must lie in 1..{recipe.steps} (got {wanted})")
    torch.manual_seed(recipe.seed)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(vocabulary())
    save_tokenizer(tok, out, n_ctx=recipe.n_ctx)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = build_model(recipe, len(tokenizer))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay,
                                  betas=(0.9, 0.98))
    data = batches(tokenizer, recipe.mix, n_ctx=recipe.n_ctx, batch_size=recipe.batch_size,
                   seed=recipe.seed)
    started = time.monotonic()
    losses: list[float] = []
    checkpoints: list[Checkpoint] = []
    checkpoint_seconds = 0.0  # time spent checkpointing, left out of the card's train_seconds
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
        if wanted:
            losses.append(loss.item())
            if step + 1 in wanted:
                begun = time.monotonic()
                checkpoints.append(_save_checkpoint(
                    model, tokenizer, tok, recipe, out, step + 1, losses,
                    begun - started - checkpoint_seconds))
                checkpoint_seconds += time.monotonic() - begun
        if progress:
            progress(step + 1, recipe.steps, losses[-1] if wanted else loss.item())
    seconds = time.monotonic() - started - checkpoint_seconds
    model.eval()
    model.save_pretrained(out)
    card = write_card(model, tokenizer, recipe, out, train_seconds=seconds)
    if wanted:
        write_run(out, RunManifest(recipe=recipe.name, seed=recipe.seed, steps=recipe.steps,
                                   arch=recipe.arch, checkpoints=checkpoints))
    return card
