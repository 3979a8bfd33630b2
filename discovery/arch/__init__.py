"""Architecture adapters: one small reader per model family, registered in :data:`ADAPTERS` by
the ``transformers`` class name. Each turns a Hugging Face model into :class:`Weights`, whose
methods are all the patched forward, fast ACDC and the attribution methods use.

Adding an architecture is one file with a ``Weights`` subclass and one line in the table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from discovery.arch.base import UnsupportedModelError, Weights
from discovery.arch.gemma import GemmaWeights
from discovery.arch.gpt2 import GPT2Weights
from discovery.arch.llama import LlamaWeights
from discovery.arch.neox import NeoXWeights
from discovery.circuit import GraphShape

#: HF class name -> reader of its weights.
ADAPTERS: dict[str, Callable[[Any], Weights]] = {
    "GPT2LMHeadModel": GPT2Weights.from_hf,
    "LlamaForCausalLM": LlamaWeights.from_hf,
    "MistralForCausalLM": LlamaWeights.from_hf,
    "Qwen2ForCausalLM": LlamaWeights.from_hf,
    "GPTNeoXForCausalLM": NeoXWeights.from_hf,
    "GemmaForCausalLM": GemmaWeights.from_hf,
    "Gemma2ForCausalLM": GemmaWeights.from_hf,
    "Gemma3ForCausalLM": GemmaWeights.from_hf,
}


def read_weights(model: Any) -> Weights:
    """The patched forward's weights of a ``transformers`` model; UnsupportedModelError naming the
    class and the supported ones when no adapter fits."""
    name = type(model).__name__
    reader = ADAPTERS.get(name)
    if reader is None:
        raise UnsupportedModelError(
            f"edge-level discovery has no adapter for {name}; supported architectures: "
            f"{', '.join(ADAPTERS)}"
        )
    return reader(model)


#: HF class name -> reader of its saved weights straight from ``config.json`` + safetensors, for
#: the architectures that have one: no ``transformers`` model is built (start-up time).
SAVED_READERS: dict[str, Callable[[dict, dict], Weights | None]] = {
    "GPT2LMHeadModel": GPT2Weights.from_safetensors,
    "LlamaForCausalLM": LlamaWeights.from_safetensors,
    "MistralForCausalLM": LlamaWeights.from_safetensors,
    "Qwen2ForCausalLM": LlamaWeights.from_safetensors,
    "GPTNeoXForCausalLM": NeoXWeights.from_safetensors,
    "GemmaForCausalLM": GemmaWeights.from_safetensors,
    "Gemma2ForCausalLM": GemmaWeights.from_safetensors,
    "Gemma3ForCausalLM": GemmaWeights.from_safetensors,
}


def read_saved_weights(directory: Path, config: dict, device: str) -> Weights | None:
    """The weights of a saved model directory read without ``transformers`` (one
    ``model.safetensors`` file), or None when its architecture has no such reader, the file is
    missing or sharded, or the reader declines (a rope type it does not compute): the caller then
    reads the ``transformers`` model."""
    archs = config.get("architectures") or []
    reader = next((SAVED_READERS[a] for a in archs if a in SAVED_READERS), None)
    path = directory / "model.safetensors"
    if reader is None or not path.is_file():
        return None
    from safetensors.torch import load_file

    return reader(config, load_file(path, device=device))


def graph_shape(weights: Weights, *, mlp: bool = True) -> GraphShape:
    """The graph of a model read into ``weights`` (``mlp`` False for attention-only models)."""
    return GraphShape(weights.n_layers, weights.n_heads, mlp=mlp, parallel=weights.parallel)


__all__ = ["ADAPTERS", "SAVED_READERS", "read_saved_weights", "GPT2Weights", "GemmaWeights", "LlamaWeights", "NeoXWeights", "UnsupportedModelError",
           "Weights", "graph_shape", "read_weights"]
