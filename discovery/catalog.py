"""What can be asked of the engine, known without loading torch: the shipped models and what their
cards say, the method names and the ablations (the API lists them and validates job specs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "models"

#: Discovery methods by name (the keys of :data:`discovery.algorithms.ALGORITHMS`, which loads torch).
METHODS: tuple[str, ...] = ("acdc", "acdc-reference", "eap", "eap-ig", "eap-ig+acdc")
ABLATIONS: tuple[str, ...] = ("corrupt", "mean", "zero")
#: The Hugging Face classes the patched forward has an adapter for (the keys of
#: :data:`discovery.arch.ADAPTERS`, which loads torch; a test keeps the two equal).
EDGE_ARCHITECTURES: tuple[str, ...] = ("GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM",
                                       "Qwen2ForCausalLM", "GPTNeoXForCausalLM",
                                       "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM")


def unsupported_architecture(config: dict[str, Any]) -> str | None:
    """Why a model of this ``config.json`` cannot be searched edge by edge, or None when it can."""
    archs = config.get("architectures") or []
    if not archs or any(a in EDGE_ARCHITECTURES for a in archs):
        return None
    return (f"its architecture {', '.join(archs)} has no adapter for edge-level discovery; "
            f"supported: {', '.join(EDGE_ARCHITECTURES)}")


def shipped_models() -> dict[str, Path]:
    """The models under ``models/``, by name."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED_DIR.iterdir()) if (p / "config.json").exists()}


def model_summary(name: str) -> dict[str, Any]:
    """Shape, tasks and evaluation of a shipped model, from its config and card."""
    path = shipped_models()[name]
    config = json.loads((path / "config.json").read_text())
    card_file = path / "model_card.json"
    card = json.loads(card_file.read_text()) if card_file.exists() else {}
    extra = config.get("circuit_atlas", {})
    return {
        "name": name,
        # GPT-2 names first, then the Llama / GPT-NeoX ones (models/multitask-llama, -pythia)
        "n_layers": config.get("n_layer", config.get("num_hidden_layers")),
        "n_heads": config.get("n_head", config.get("num_attention_heads")),
        "d_model": config.get("n_embd", config.get("hidden_size")),
        "n_ctx": config.get("n_positions", config.get("max_position_embeddings")),
        "attn_only": bool(extra.get("attn_only", False)),
        "weights_sha256": card.get("weights_sha256"),
        "eval": card.get("eval", {}),
    }


SHIPPED_RUNS_DIR = Path(__file__).resolve().parents[1] / "runs"


def shipped_runs() -> dict[str, Path]:
    """The checkpointed training runs under ``runs/`` (each with a ``run.json``), by name."""
    if not SHIPPED_RUNS_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED_RUNS_DIR.iterdir()) if (p / "run.json").exists()}


def model_graph_shape(name: str):  # noqa: ANN201 - a discovery.circuit.GraphShape
    """The graph of shipped model ``name`` from its config alone (no torch): layers, heads, whether
    it has MLPs and parallel blocks. Edges into per-head k/v inputs (the default graph)."""
    from discovery.circuit import GraphShape

    summary = model_summary(name)
    config = json.loads((shipped_models()[name] / "config.json").read_text())
    return GraphShape(int(summary["n_layers"]), int(summary["n_heads"]), mlp=not summary["attn_only"],
                      parallel=bool(config.get("use_parallel_residual", False)))
