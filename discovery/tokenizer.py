"""A model directory's ``tokenizer.json`` through the ``tokenizers`` library directly.

Why: ``transformers.PreTrainedTokenizerFast`` costs ~1.2 s of start-up (importing ``transformers``)
on every ``circuits discover``, while the project only uses a small part of a tokenizer: calling it
on a text (``tokenizer(text, add_special_tokens=False)["input_ids"]``), the special tokens and their
ids, ``len``, token <-> id conversions, ``decode`` and ``backend_tokenizer`` (its JSON is hashed into
provenance). :class:`FastTokenizer` gives exactly those, with the same results as
``PreTrainedTokenizerFast`` on the same directory (tests/unit/test_startup.py checks every shipped
model on every task's prompts).

:func:`fast_tokenizer_fits` says when a directory is plain enough for that promise to hold (a
``tokenizer.json``, special tokens already in its vocabulary, no option ``transformers`` applies
on top of the file such as ``add_bos_token``); otherwise :mod:`discovery.models` keeps loading the
``transformers`` tokenizer. Where a real ``PreTrainedTokenizer`` is needed (booting the
TransformerBridge) :meth:`FastTokenizer.to_transformers` builds one on first use.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

#: tokenizer_config.json keys that change nothing ``tokenizer.json`` does not already say (or that
#: the project never uses: padding/truncation sides, the max length); any other key means the
#: ``transformers`` class may transform the tokenizer, so that class is used instead.
_PLAIN_CONFIG_KEYS = frozenset({
    "backend", "tokenizer_class", "bos_token", "eos_token", "pad_token", "unk_token", "sep_token",
    "cls_token", "mask_token", "model_max_length", "added_tokens_decoder", "model_input_names",
    "padding_side", "truncation_side", "clean_up_tokenization_spaces", "extra_special_tokens",
    "additional_special_tokens", "errors",
})
#: The tokenizer classes that are a ``tokenizer.json`` and nothing more.
_PLAIN_CLASSES = frozenset({None, "TokenizersBackend", "PreTrainedTokenizerFast"})
SPECIAL_NAMES = ("bos", "eos", "pad", "unk", "sep", "cls", "mask")


def _content(token: Any) -> str | None:
    """A special token as saved: a string or an AddedToken dict (``{"content": ...}``)."""
    return token.get("content") if isinstance(token, dict) else token


def _read_config(directory: Path) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
        path = directory / name
        if path.is_file():
            config.update(json.loads(path.read_text()))
    return config


def fast_tokenizer_fits(directory: Path) -> bool:
    """Whether :class:`FastTokenizer` gives the same tokens as ``transformers`` for ``directory``:
    a ``tokenizer.json``, a plain tokenizer class, no config option outside
    :data:`_PLAIN_CONFIG_KEYS`, no cleanup of decoded spaces, and every special token already in
    the vocabulary (``transformers`` would add a missing one as a new token)."""
    if not (directory / "tokenizer.json").is_file():
        return False
    config = _read_config(directory)
    if config.get("tokenizer_class") not in _PLAIN_CLASSES or set(config) - _PLAIN_CONFIG_KEYS:
        return False
    if config.get("clean_up_tokenization_spaces") or config.get("additional_special_tokens") \
            or config.get("extra_special_tokens"):
        return False
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab(with_added_tokens=True)
    return all(_content(config.get(f"{n}_token")) in vocab for n in SPECIAL_NAMES
               if config.get(f"{n}_token") is not None)


class FastTokenizer:
    """The ``PreTrainedTokenizerFast`` calls the project makes, over a ``tokenizers.Tokenizer``.

    Ids are plain ``list[int]``; special tokens come from ``tokenizer_config.json``
    (``bos_token`` ...), their ids from the vocabulary (None when a token is not set).
    """

    def __init__(self, backend: Any, config: dict[str, Any], directory: Path | None = None):
        self._tokenizer = backend
        self.directory = directory
        self.name_or_path = str(directory) if directory is not None else ""
        self.model_max_length = config.get("model_max_length")
        for name in SPECIAL_NAMES:
            token = _content(config.get(f"{name}_token"))
            setattr(self, f"{name}_token", token)
            setattr(self, f"{name}_token_id", None if token is None else backend.token_to_id(token))

    @classmethod
    def from_directory(cls, directory: Path | str) -> FastTokenizer:
        """Read ``tokenizer.json`` and ``tokenizer_config.json`` of ``directory`` (check
        :func:`fast_tokenizer_fits` first where results must equal ``transformers``')."""
        from tokenizers import Tokenizer

        directory = Path(directory)
        return cls(Tokenizer.from_file(str(directory / "tokenizer.json")), _read_config(directory), directory)

    @property
    def backend_tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` (same attribute name as ``transformers``')."""
        return self._tokenizer

    def __len__(self) -> int:
        """Vocabulary size with added tokens (as ``len(PreTrainedTokenizerFast)``)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        """Vocabulary size without added tokens (as ``PreTrainedTokenizerFast.vocab_size``)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def all_special_ids(self) -> list[int]:
        ids = (getattr(self, f"{n}_token_id") for n in SPECIAL_NAMES)
        return sorted({i for i in ids if i is not None})

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of one text (the post-processor's special tokens with ``add_special_tokens``)."""
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def __call__(self, text: str | list[str], add_special_tokens: bool = True) -> dict[str, list]:
        """``{"input_ids", "attention_mask"}`` of a text (lists of ints) or of a list of texts
        (lists of lists, unpadded), as ``PreTrainedTokenizerFast.__call__`` without tensors."""
        if isinstance(text, str):
            ids = self.encode(text, add_special_tokens)
            return {"input_ids": ids, "attention_mask": [1] * len(ids)}
        rows = [e.ids for e in self._tokenizer.encode_batch(list(text), add_special_tokens=add_special_tokens)]
        return {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]}

    def decode(self, ids: int | list[int], skip_special_tokens: bool = False) -> str:
        return self._tokenizer.decode([ids] if isinstance(ids, int) else list(ids),
                                      skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | None | list[int | None]:
        """Id of a token string (the unknown token's id when absent, as ``transformers``), or ids of
        a list of them."""
        if isinstance(tokens, str):
            found = self._tokenizer.token_to_id(tokens)
            return self.unk_token_id if found is None else found
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | None | list[str | None]:
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        return [self._tokenizer.id_to_token(i) for i in ids]

    @cached_property
    def transformers_tokenizer(self) -> Any:
        """The ``transformers`` tokenizer of the same directory, built on first use (it imports
        ``transformers``): for code that needs a real ``PreTrainedTokenizer``, such as
        ``TransformerBridge.boot_transformers``."""
        from transformers import PreTrainedTokenizerFast

        if self.directory is None:
            return PreTrainedTokenizerFast(tokenizer_object=self._tokenizer)
        return PreTrainedTokenizerFast.from_pretrained(str(self.directory))

    def to_transformers(self) -> Any:
        return self.transformers_tokenizer

    def __repr__(self) -> str:
        return f"FastTokenizer({self.name_or_path!r}, vocab={len(self)})"


def as_transformers_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer`` as a ``transformers`` tokenizer: a :class:`FastTokenizer`'s own, built
    lazily; any other tokenizer as it is."""
    return tokenizer.to_transformers() if isinstance(tokenizer, FastTokenizer) else tokenizer
