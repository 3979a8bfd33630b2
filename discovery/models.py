"""Loading models through transformer_lens 4.x (``TransformerBridge``).

One function, :func:`load_model`, takes a shipped model's name (``multitask``), a local Hugging
Face directory, or a hub name (``gpt2``, for machines that have it cached or can download it).
Errors say what was wrong: a missing path, an architecture transformer_lens does not support, a
tokenizer that does not fit the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from discovery.catalog import shipped_models


class ModelLoadError(ValueError):
    """The model could not be loaded; the message says why and what to do."""


@dataclass
class LoadedModel:
    """A model ready for discovery: the bridge, its tokenizer, and facts about it."""

    name: str
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any
    n_ctx: int
    sha256: str
    source: str  # "shipped", "local" or "hub"
    path: Path | None = None  # the model's directory (None for hub models)
    attn_only: bool = False
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, pos] token ids -> [batch, pos, vocab] logits."""
        return self.bridge(tokens.to(self.device))


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA is a clear error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device {device!r} requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use --device cpu or --device auto"
        )
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ModelLoadError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def _weights_sha256(directory: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    for path in files:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest() if files else ""


def _check_architecture(config: dict, where: str) -> None:
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    archs = config.get("architectures") or []
    if archs and not any(a in SUPPORTED_ARCHITECTURES for a in archs):
        raise ModelLoadError(
            f"{where}: architecture {', '.join(archs)} is not supported by transformer_lens "
            f"{_tl_version()}; supported include GPT2LMHeadModel, LlamaForCausalLM, "
            "GPTNeoXForCausalLM (see transformer_lens.factories.architecture_adapter_factory)"
        )


def _tl_version() -> str:
    from importlib.metadata import version

    return version("transformer-lens")


def _check_tokenizer(tokenizer, vocab_size: int, where: str) -> None:
    if tokenizer is None:
        raise ModelLoadError(f"{where}: no tokenizer found; save one beside the model "
                             "(tokenizer.json) or pass it explicitly")
    if len(tokenizer) > vocab_size:
        raise ModelLoadError(
            f"{where}: the tokenizer has {len(tokenizer)} tokens but the model's embedding has "
            f"{vocab_size}; they do not belong together (wrong tokenizer.json?)"
        )
    if tokenizer.bos_token_id is None:
        raise ModelLoadError(f"{where}: the tokenizer has no BOS token; circuit-atlas prepends one")


def load_model(name_or_path: str, *, device: str = "auto") -> LoadedModel:
    """Load a shipped model by name, a local Hugging Face directory, or a hub name."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    device = resolve_device(device)
    shipped = shipped_models()
    path = shipped.get(name_or_path) or Path(name_or_path).expanduser()
    is_local = name_or_path in shipped or path.exists() or "/" in name_or_path or name_or_path.startswith(".")
    if is_local:
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"model {name_or_path!r}: {path} is not a Hugging Face model directory (no "
                f"config.json there); shipped models: {', '.join(shipped) or 'none'}"
            )
        config = json.loads((path / "config.json").read_text())
        _check_architecture(config, str(path))
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except Exception as exc:  # noqa: BLE001 - reported with the cause
            raise ModelLoadError(f"{path}: cannot load its tokenizer ({exc})") from None
        _check_tokenizer(tokenizer, config.get("vocab_size", 0), str(path))
        bridge = TransformerBridge.boot_transformers(str(path), device=device, tokenizer=tokenizer)
        source, sha = ("shipped" if name_or_path in shipped else "local"), _weights_sha256(path)
        extra = config.get("circuit_atlas") or {}
    else:
        try:
            bridge = TransformerBridge.boot_transformers(name_or_path, device=device)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(
                f"model {name_or_path!r} is neither a shipped model ({', '.join(shipped)}) nor a "
                f"local directory, and loading it from the Hugging Face hub failed: {exc}"
            ) from None
        tokenizer, source, sha, extra = bridge.tokenizer, "hub", "", {}
    bridge.eval()
    return LoadedModel(
        name=path.name if is_local else name_or_path, bridge=bridge, tokenizer=tokenizer,
        n_ctx=bridge.cfg.n_ctx, sha256=sha, source=source, path=path if is_local else None,
        attn_only=bool(extra.get("attn_only", False)), task_options=extra.get("tasks", {}),
    )
