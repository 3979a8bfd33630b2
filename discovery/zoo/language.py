"""The toy language: word lists shared by the tasks and the corpus, and its word-level tokenizer.

The tokenizer is a Hugging Face ``tokenizers`` WordLevel model saved as ``tokenizer.json``, so
``AutoTokenizer.from_pretrained(dir)`` loads it offline. Words are split on white space; runs of
digits are split into two-digit tokens the way GPT-2 splits years (``1732`` -> ``17`` ``32``), and
punctuation stands alone. ``<|endoftext|>`` is BOS, EOS and padding, as in GPT-2.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

SPECIAL = "<|endoftext|>"

NAMES_MALE = ("John", "Tom", "James", "Paul", "Mark", "David", "Peter", "Michael", "Robert",
              "William", "George", "Daniel", "Thomas", "Richard", "Charles", "Joseph", "Edward",
              "Henry", "Frank", "Jack")
NAMES_FEMALE = ("Mary", "Anna", "Sarah", "Lisa", "Emma", "Alice", "Kate", "Laura", "Julia",
                "Rachel", "Susan", "Helen", "Linda", "Grace", "Emily", "Claire", "Jane", "Lucy",
                "Amy", "Rose")
NAMES = NAMES_MALE + NAMES_FEMALE
PLACES = ("store", "park", "school", "office", "station", "market", "beach", "library", "garden",
          "hospital", "restaurant", "museum")
OBJECTS = ("drink", "book", "ring", "bag", "letter", "gift", "key", "ball", "flower", "pen",
           "basket", "apple")
EVENTS = ("war", "expedition", "project", "journey", "reign", "drought", "festival", "trial",
          "strike", "siege", "voyage", "contract")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
TWO_DIGITS = tuple(f"{i:02d}" for i in range(100))
PUNCTUATION = (",", ".")

# A digit pair, or a punctuation mark, is a token of its own.
_SPLIT = Regex(r"\d\d|[,.]")


def words_of(texts: Iterable[str]) -> set[str]:
    """The word tokens of ``texts`` as the tokenizer splits them (template slots like {A} skipped)."""
    pre = pre_tokenizer()
    found: set[str] = set()
    for text in texts:
        for piece, _ in pre.pre_tokenize_str(text):
            if not (piece.startswith("{") and piece.endswith("}")):
                found.add(piece)
    return found


def pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(_SPLIT, behavior="isolated")]
    )


def build_tokenizer(words: Iterable[str]) -> Tokenizer:
    """A WordLevel tokenizer over ``words`` (sorted; id 0 is ``<|endoftext|>``, also the unknown)."""
    vocab = {SPECIAL: 0}
    for word in sorted(set(words) - {SPECIAL}):
        vocab[word] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL))
    tokenizer.pre_tokenizer = pre_tokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, directory: Path, *, n_ctx: int) -> None:
    """Write ``tokenizer.json`` and the configs ``AutoTokenizer.from_pretrained`` needs."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=SPECIAL, eos_token=SPECIAL, pad_token=SPECIAL,
        unk_token=SPECIAL, model_max_length=n_ctx,
    )
    fast.save_pretrained(directory)
