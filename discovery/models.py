"""Loading models: named and checked the transformer_lens 4.x way, loaded with ``transformers``.

One function, :func:`load_model`, takes a shipped model's name (``multitask``), a local Hugging
Face directory, or a hub name (``gpt2``, for machines that have it cached or can download it).
Errors say what was wrong: a missing path, an architecture transformer_lens does not support, a
tokenizer that does not fit the model.

Why not boot a ``TransformerBridge`` here: importing transformer_lens costs 3-7 s and booting it
another 2-6 s even on a 237k-parameter model, while the discovery engine only reads the weights of
the Hugging Face model. So :func:`load_model` reads the config and tokenizer (a plain
``tokenizer.json`` through the ``tokenizers`` library, :mod:`discovery.tokenizer`: importing
``transformers`` alone costs ~1.2 s, and discovery reads saved weights without it,
:data:`discovery.arch.SAVED_READERS`); the ``transformers`` model
(:attr:`LoadedModel.hf_model`) is built on first use, and the bridge
(:attr:`LoadedModel.bridge`, for its hooks: ``run_with_cache`` in :mod:`discovery.heads`) is booted
on first use around that same model, so the weights are never loaded twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from discovery.catalog import shipped_models
from discovery.tokenizer import FastTokenizer, as_transformers_tokenizer, fast_tokenizer_fits

#: Config fields that hold the context length, in the order transformer_lens reads them.
_N_CTX_FIELDS = ("n_positions", "max_position_embeddings", "max_context_length", "max_length",
                 "seq_length", "max_sequence_length")


class ModelLoadError(ValueError):
    """The model could not be loaded; the message says why and what to do."""


@dataclass
class LoadedModel:
    """A model ready for discovery: its tokenizer (a :class:`~discovery.tokenizer.FastTokenizer`
    for plain tokenizer.json directories, else ``transformers``'), config and facts about it; the
    ``transformers`` model and the TransformerBridge are built on first use (see the module
    docstring)."""

    name: str
    tokenizer: Any
    config: dict[str, Any]  # the model's config.json
    n_ctx: int
    sha256: str
    source: str  # "shipped", "local" or "hub"
    path: Path | None = None  # the model's directory (None for hub models)
    attn_only: bool = False
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    device_name: str = "cpu"
    ref: str = ""  # what ``from_pretrained`` reads: the directory, or the hub name

    @property
    def device(self) -> torch.device:
        return torch.device(self.device_name)

    @property
    def architecture(self) -> str:
        """The ``transformers`` class name from config.json (``GPT2LMHeadModel``)."""
        return (self.config.get("architectures") or ["AutoModelForCausalLM"])[0]

    @cached_property
    def hf_model(self) -> Any:
        """The ``transformers`` model, fp32, eval mode, on :attr:`device`, with eager attention
        (what the bridge's pattern hooks need, and what its logits are compared against)."""
        return _load_hf_model(self.ref, self.architecture, self.device_name)

    @cached_property
    def bridge(self) -> Any:
        """A ``transformer_lens.model_bridge.TransformerBridge`` around :attr:`hf_model` (same
        weights, not a copy), booted on first use: only its hooks need it."""
        from transformer_lens.model_bridge import TransformerBridge

        bridge = TransformerBridge.boot_transformers(self.ref, hf_model=self.hf_model,
                                                     tokenizer=as_transformers_tokenizer(self.tokenizer),
                                                     device=self.device_name)
        return bridge.eval()

    @property
    def bridge_booted(self) -> bool:
        """Whether :attr:`bridge` has been built (it costs seconds; discovery does not need it)."""
        return "bridge" in self.__dict__

    @property
    def hf_model_loaded(self) -> bool:
        return "hf_model" in self.__dict__

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, pos] token ids -> [batch, pos, vocab] logits, through the bridge's forward (the
        transformer_lens reference the patched forward is checked against)."""
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


def supported_architectures() -> frozenset[str]:
    """transformer_lens's supported architectures: the cached list while the installed version is
    the one it was taken from (importing transformer_lens costs seconds), else asked live."""
    from discovery import tl_architectures

    if _tl_version() == tl_architectures.TL_VERSION:
        return tl_architectures.SUPPORTED_ARCHITECTURES
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    return frozenset(SUPPORTED_ARCHITECTURES)


def _weights_sha256(directory: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    for path in files:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest() if files else ""


def _check_architecture(config: dict, where: str) -> None:
    archs = config.get("architectures") or []
    if archs and not any(a in supported_architectures() for a in archs):
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


def _load_tokenizer(ref: str, where: str) -> Any:
    """A :class:`~discovery.tokenizer.FastTokenizer` over tokenizer.json when the directory is
    plain enough for it to equal ``transformers``' (no ``import transformers``: ~1.2 s of
    start-up), else the fast tokenizer straight from tokenizer.json, else AutoTokenizer (hub
    models, directories without a tokenizer.json)."""
    try:
        if fast_tokenizer_fits(Path(ref)):
            return FastTokenizer.from_directory(ref)
        if (Path(ref) / "tokenizer.json").exists():
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(ref)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(ref)
    except Exception as exc:  # noqa: BLE001 - reported with the cause
        raise ModelLoadError(f"{where}: cannot load its tokenizer ({exc})") from None


def _load_hf_model(ref: str, architecture: str, device: str, dtype: torch.dtype = torch.float32) -> Any:
    """The class named in config.json (``transformers.GPT2LMHeadModel``), or AutoModelForCausalLM
    when transformers has no such class; in ``dtype`` (fp32 as the bridge boots it) with eager attention."""
    import transformers
    from transformers.utils import logging

    logging.disable_progress_bar()  # "Loading weights: 100%" on every load
    cls = getattr(transformers, architecture, None) or transformers.AutoModelForCausalLM
    try:
        model = cls.from_pretrained(ref, dtype=dtype, attn_implementation="eager")
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{ref}: cannot load its weights with transformers.{cls.__name__} "
                             f"({exc})") from None
    return model.to(device).eval()


def _n_ctx(config: dict[str, Any]) -> int:
    return next((int(config[f]) for f in _N_CTX_FIELDS if config.get(f)), 0)


def load_model(name_or_path: str, *, device: str = "auto") -> LoadedModel:
    """Load a shipped model by name, a local Hugging Face directory, or a hub name (its config and
    tokenizer now; its weights on first use of :attr:`LoadedModel.hf_model`)."""
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
        ref, where = str(path), str(path)
        config = json.loads((path / "config.json").read_text())
        source, sha = ("shipped" if name_or_path in shipped else "local"), _weights_sha256(path)
    else:
        ref, where, source, sha = _hub_name(name_or_path), f"model {name_or_path!r}", "hub", ""
        config = _hub_config(ref, shipped)
    _check_architecture(config, where)
    tokenizer = _load_tokenizer(ref, where)
    _check_tokenizer(tokenizer, config.get("vocab_size", 0), where)
    extra = config.get("circuit_atlas") or {}
    return LoadedModel(
        name=path.name if is_local else name_or_path, tokenizer=tokenizer, config=config,
        n_ctx=_n_ctx(config), sha256=sha, source=source, path=path if is_local else None,
        attn_only=bool(extra.get("attn_only", False)), task_options=extra.get("tasks", {}),
        device_name=device, ref=ref,
    )


def _hub_name(name: str) -> str:
    """transformer_lens's official name for a deprecated alias (``gpt2-small`` -> ``gpt2``)."""
    from transformer_lens.tools.model_registry.registry_io import resolve_model_alias

    return resolve_model_alias(name) or name


def _hub_config(name: str, shipped: dict[str, Path]) -> dict[str, Any]:
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(name).to_dict()
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"model {name!r} is neither a shipped model ({', '.join(shipped)}) nor a "
            f"local directory, and loading it from the Hugging Face hub failed: {exc}"
        ) from None
