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
        "n_layers": config.get("n_layer"), "n_heads": config.get("n_head"),
        "d_model": config.get("n_embd"), "n_ctx": config.get("n_positions"),
        "attn_only": bool(extra.get("attn_only", False)),
        "weights_sha256": card.get("weights_sha256"),
        "eval": card.get("eval", {}),
    }
