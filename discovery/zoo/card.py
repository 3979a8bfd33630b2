"""The model card: recipe, training facts, per-task scores on held-out prompts, weights hash."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict
from pathlib import Path

import torch
import transformers

from discovery.scoring import score_tasks
from discovery.zoo.recipes import Recipe

CARD = "model_card.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_card(model, tokenizer, recipe: Recipe, out: Path, *, train_seconds: float,
               extra: dict | None = None) -> dict:
    """Score the trained model and write ``model_card.json`` and ``README.md`` into ``out``.
    ``extra`` adds fields to the card (a checkpoint's ``step`` and ``train_loss``)."""
    with torch.no_grad():
        scores = score_tasks(lambda t: model(t).logits, tokenizer, recipe.tasks,
                             n=recipe.eval_prompts, n_ctx=recipe.n_ctx)
    card = {
        "name": recipe.name,
        "recipe": asdict(recipe),
        "steps": recipe.steps,
        "seed": recipe.seed,
        "train_seconds": round(train_seconds, 1),
        "n_params": sum(p.numel() for p in model.parameters()),
        "eval": scores,
        "weights_sha256": sha256_file(out / "model.safetensors"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        **(extra or {}),
    }
    (out / CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(render_card(card))
    return card


def render_table(scores: dict) -> str:
    """The per-task table printed by ``circuits eval`` and written into the card."""
    lines = ["| task | prompts | top-1 accuracy | mass on answers | metric | mean |",
             "| --- | --- | --- | --- | --- | --- |"]
    for task, s in scores.items():
        lines.append(f"| {task} | {s['prompts']} | {s['accuracy']:.4f} | {s['answer_mass']:.4f} "
                     f"| {s['metric']} | {s['metric_mean']:.4f} |")
    return "\n".join(lines)


#: How the card's README names each recipe architecture (``Recipe.arch``).
ARCH_LABELS = {
    "gpt2": "GPT-2 architecture",
    "llama": "Llama architecture (RMSNorm, rotary, grouped-query attention, SwiGLU, no biases)",
    "pythia": "Pythia / GPT-NeoX architecture (parallel attention and MLP, partial rotary)",
    "gemma2": "Gemma 2 architecture (post-norms, attention and final soft-capping, sliding windows, "
              "grouped-query attention, GeGLU, tied embeddings)",
}


def _shape(r: dict) -> str:
    """The shape line of the README; cards written before ``arch`` existed are GPT-2."""
    arch = r.get("arch", "gpt2")
    heads = f"heads {r['n_head']}"
    gated = {"llama": "SwiGLU", "gemma2": "GeGLU"}
    if arch in gated:
        heads += f" ({r.get('n_kv_head') or r['n_head']} key/value heads)"
    mlp = "attention only" if r["attn_only"] else (
        f"{gated[arch]} width {r['d_mlp']}" if arch in gated else f"d_mlp {r['d_mlp']}")
    rotary = f", rotary on {r.get('rotary_pct')} of each head" if arch == "pythia" else ""
    if arch == "gemma2":
        rotary = f", sliding window {r.get('sliding_window')} on even layers"
    return (f"- layers {r['n_layer']}, {heads}, d_model {r['n_embd']}, {mlp}, "
            f"context {r['n_ctx']}{rotary}\n")


def render_card(card: dict) -> str:
    r = card["recipe"]
    return (
        f"# {card['name']}\n\n"
        f"{ARCH_LABELS[r.get('arch', 'gpt2')]} trained from scratch by circuit-atlas on its toy language "
        f"(`circuits train --recipe {card['name']}`).\n\n"
        f"{_shape(r)}"
        f"- {card['n_params']:,} parameters; {card['steps']} steps of batch {r['batch_size']}, "
        f"seed {card['seed']}, {card['train_seconds']} s on {card['threads']} CPU threads\n"
        f"- weights sha256 `{card['weights_sha256']}`\n\n"
        f"Held-out prompts (never in the training corpus):\n\n{render_table(card['eval'])}\n"
    )
