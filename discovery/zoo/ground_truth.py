"""A two-layer attention-only GPT-2 that does induction with hand-set weights: its circuit is known.

Discovery methods are judged against circuits found by other methods on trained models; this model
gives them a circuit that is true *by construction*. It is a ``transformers.GPT2LMHeadModel`` over
24 names plus ``<|endoftext|>`` (id 0, which must open every prompt), with MLPs set to zero.

The residual stream (d = 128) is cut into subspaces, each written by one component and read only
where the construction says so:

    TOK   (25 dims)  token one-hot, written by ``embed``
    POS   (32 dims)  position one-hot, written by ``embed``
    PREV  (25 dims)  "the token before me", written by a0.h0
    OUT   (25 dims)  "the token to predict", written by a1.h0; the only subspace lm_head reads
    JUNK0, JUNK1 (10 dims each)  written by the distractor heads a0.h1 and a1.h1; read by nothing
    BAL   (1 dim)    balance: every one-hot write is ``e_i - e_BAL``

Heads (every attention score has a margin of ``MARGIN`` nats, so attention is hard in practice):

* a0.h0, previous-token head: q and k read POS only (query at p matches key p-1; p = 0 matches
  itself); v reads TOK; writes PREV.
* a1.h0, induction head: q reads TOK (the current token A), k reads PREV (positions whose
  predecessor was A: the B of ``A B ... A``), v reads TOK (that B); writes OUT. ``lm_head`` turns
  OUT into logits, so the model predicts B.
* a0.h1, distractor: an attention sink (q reads the constant BAL dim, k reads TOK[BOS]); copies
  the BOS token into JUNK0.
* a1.h1, distractor: q reads PREV (from a0.h0), k reads TOK: it attends to the occurrences of its
  predecessor token and writes a 5-bit code of it into JUNK1. It uses a0.h0's output, but nothing
  reads what it writes.

Why the true edge set is what it is: an edge ``src->dst<input>`` exists when the weights that read
``input`` are nonzero on the subspace ``src`` writes, and ``dst``'s output reaches the logits.
Reading the list above gives exactly ``TRUE_EDGES``. The distractors have live inputs but their
outputs reach nothing, so none of their edges are in the circuit.

LayerNorm is the one nonlinear coupling between subspaces. Two choices neutralise it. (1) Every
write has zero sum (one-hots pay -1 into BAL; junk codes are +/-a pairs), so LayerNorm's centring
is a no-op. (2) Every position carries the same number of one-hot features and junk codes of equal
norm, so the residual's norm at each LayerNorm is a constant we compute (``_nominal_norm2``); each
LayerNorm gain is set to that RMS, which makes LayerNorm the identity on every residual the model
produces. Patching a component with its value on another prompt keeps these norms, so it cannot act
through LayerNorm either; zero-ablation changes them, which rescales but does not redirect.

LayerNorm's epsilon is large on purpose (``LN_EPS``, near the embedding's per-dimension variance).
With GPT-2's 1e-5, LayerNorm is scale-invariant: LN(a x) = LN(x). Zero ablation's integrated-
gradients path scales the embedding from 0 to x, so the model would not change along it until a
is about 0, and the gradient at an input written by one source is orthogonal to that source's
output: every gradient-based score of such an edge would be exactly 0 whatever the circuit (a
blind spot of gradients, not a property of the circuit). The gains still make LayerNorm the
identity at the nominal norms, so nothing above changes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import GPT2Config, GPT2LMHeadModel

from discovery.circuit import GraphShape
from discovery.zoo.language import NAMES, build_tokenizer, save_tokenizer

WORDS: tuple[str, ...] = NAMES[:24]
V = len(WORDS) + 1  # plus <|endoftext|>, id 0
P = 32  # positions
D = 128  # n_embd
N_LAYER, N_HEAD = 2, 2
D_HEAD = D // N_HEAD
MARGIN = 20.0  # attention score of a match over a non-match, in nats
LOGIT = 10.0  # logit of the copied token over the others: p ~ 1 / (1 + 24 e^-10) ~ 0.999
LN_EPS = 0.05  # LayerNorm epsilon (see the module docstring)
JUNK_BITS, JUNK_AMP = 5, 0.5  # 2^5 >= 25 tokens, so the 5-bit code is a real (unread) token id

TOK, POS, PREV, OUT = 0, V, V + P, 2 * V + P  # subspace offsets
JUNK0 = 3 * V + P
JUNK1 = JUNK0 + 2 * JUNK_BITS
BAL = JUNK1 + 2 * JUNK_BITS
assert BAL == D - 1, "the subspaces must fill the residual stream exactly"

TRUE_EDGES: tuple[str, ...] = (
    "embed->a0.h0<q>", "embed->a0.h0<k>", "embed->a0.h0<v>",
    "embed->a1.h0<q>", "a0.h0->a1.h0<k>", "embed->a1.h0<v>",
    "a1.h0->logits",
)
TRUE_NODES: tuple[str, ...] = ("embed", "a0.h0", "a1.h0", "logits")
HOW_KNOWN = (
    "Hand-set weights: each component reads and writes its own residual subspace and LayerNorm is "
    "the identity on every residual the model produces, so an edge exists exactly where a head's "
    "q/k/v weights (or lm_head) read the subspace its source writes; the distractor heads a0.h1 "
    "and a1.h1 write subspaces nothing reads. See discovery/zoo/ground_truth.py."
)


def all_edges(n_layers: int, n_heads: int) -> list[str]:
    """Every edge of the attention-only graph: each upstream output to each later q, k, v and logits."""
    return GraphShape(n_layers, n_heads, mlp=False).edges()


def _e(dim: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(dim), D).float()


def _one_hot_writes(offset: int, n: int) -> torch.Tensor:
    """[n, D]: row i is ``e_{offset+i} - e_BAL`` (zero sum, so LayerNorm's centring does nothing)."""
    rows = torch.stack([_e(offset + i) for i in range(n)])
    rows[:, BAL] = -1.0
    return rows


def _junk_codes(offset: int) -> torch.Tensor:
    """[V, D]: token t's bits as +/-JUNK_AMP pairs; zero sum and the same norm for every token."""
    codes = torch.zeros(V, D)
    for t in range(V):
        for bit in range(JUNK_BITS):
            sign = 1.0 if (t >> bit) & 1 else -1.0
            codes[t, offset + 2 * bit] = sign * JUNK_AMP
            codes[t, offset + 2 * bit + 1] = -sign * JUNK_AMP
    return codes


def _nominal_norm2(n_one_hot: int, n_junk: int) -> float:
    """Squared norm of the residual holding ``n_one_hot`` one-hots (BAL = -n) and ``n_junk`` codes."""
    return n_one_hot + n_one_hot**2 + n_junk * 2 * JUNK_BITS * JUNK_AMP**2


def _set_layer_norm(ln: torch.nn.LayerNorm, norm2: float) -> None:
    """Gain = the residual's RMS there, so LayerNorm returns its (zero-mean) input unchanged."""
    ln.weight.fill_(math.sqrt(norm2 / D + ln.eps))
    ln.bias.zero_()


def _set_head(block: torch.nn.Module, head: int, reads: dict[str, tuple[int, int]],
              query: torch.Tensor, writes: torch.Tensor) -> None:
    """Install one head. ``reads`` maps q, k, v to (offset, n): the head-space coordinate i of that
    input is residual dim offset+i (times ``query`` for q). ``writes`` [n_v, D] maps v to the stream.
    """
    w_attn, w_proj = block.attn.c_attn.weight, block.attn.c_proj.weight  # [D, 3D], [D, D]
    cols = slice(head * D_HEAD, (head + 1) * D_HEAD)
    for part, name in enumerate("qkv"):
        offset, n = reads[name]
        w = torch.zeros(D, D_HEAD)
        w[offset:offset + n, :n] = query if name == "q" else torch.eye(n)
        w_attn[:, part * D : (part + 1) * D][:, cols] = w
    w_proj[cols] = 0.0
    w_proj[head * D_HEAD : head * D_HEAD + writes.shape[0]] = writes


def _scores(m: torch.Tensor) -> torch.Tensor:
    """Query weights giving a score of MARGIN per unit match (GPT-2 divides scores by sqrt(d_head))."""
    return m * MARGIN * math.sqrt(D_HEAD)


def build_config() -> GPT2Config:
    return GPT2Config(
        vocab_size=V, n_positions=P, n_embd=D, n_layer=N_LAYER, n_head=N_HEAD, n_inner=4,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=LN_EPS, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
        circuit_atlas={"attn_only": True, "ground_truth": "true_edges.json",
                       # The induction task must draw its words from this model's vocabulary.
                       "tasks": {"induction": {"pool": list(WORDS)}}},
    )


@torch.no_grad()
def build_model() -> GPT2LMHeadModel:
    """The hand-set model (deterministic: no random weights survive)."""
    model = GPT2LMHeadModel(build_config()).eval()
    for p in model.parameters():
        p.zero_()  # MLPs, biases and every unused weight stay exactly 0
    tf = model.transformer
    tf.wte.weight.copy_(_one_hot_writes(TOK, V))
    tf.wpe.weight.copy_(_one_hot_writes(POS, P))

    shift = torch.zeros(P, P)  # query at p -> key position max(p - 1, 0)
    shift[torch.arange(P), (torch.arange(P) - 1).clamp(min=0)] = 1.0
    _set_head(tf.h[0], 0, {"q": (POS, P), "k": (POS, P), "v": (TOK, V)}, _scores(shift),
              _one_hot_writes(PREV, V))
    sink = torch.tensor([[-0.5]])  # BAL is -2 at layer 0 on every position: a constant query
    _set_head(tf.h[0], 1, {"q": (BAL, 1), "k": (TOK, 1), "v": (TOK, V)}, _scores(sink),
              _junk_codes(JUNK0))  # k reads TOK[0] only: the <|endoftext|> token
    eye = torch.eye(V)
    _set_head(tf.h[1], 0, {"q": (TOK, V), "k": (PREV, V), "v": (TOK, V)}, _scores(eye),
              _one_hot_writes(OUT, V))
    _set_head(tf.h[1], 1, {"q": (PREV, V), "k": (TOK, V), "v": (TOK, V)}, _scores(eye),
              _junk_codes(JUNK1))

    # Residual contents at each LayerNorm: embed = TOK + POS; layer 0 adds PREV and JUNK0;
    # layer 1 adds OUT and JUNK1. ln_2 feeds a zero MLP, so its gain only needs to be harmless.
    _set_layer_norm(tf.h[0].ln_1, _nominal_norm2(2, 0))
    _set_layer_norm(tf.h[1].ln_1, _nominal_norm2(3, 1))
    _set_layer_norm(tf.ln_f, _nominal_norm2(4, 2))
    for block in tf.h:
        block.ln_2.weight.fill_(1.0)
    model.lm_head.weight[:, OUT:OUT + V] = LOGIT * torch.eye(V)
    return model


def build_ground_truth_model() -> tuple[GPT2LMHeadModel, Tokenizer]:
    return build_model(), build_tokenizer(WORDS)


def true_edges_record() -> dict:
    return {
        "model": "induction-gt", "task": "induction",
        "nodes": list(TRUE_NODES), "edges": list(TRUE_EDGES),
        "all_edges_count": len(all_edges(N_LAYER, N_HEAD)), "how_known": HOW_KNOWN,
    }


_CARD = """# induction-gt

A 2-layer, 2-head, attention-only GPT-2 (d_model {d}, {v} tokens: 24 names and `<|endoftext|>`)
whose weights were set by hand (`discovery/zoo/ground_truth.py`), not trained. It does induction:
on `<|endoftext|> t1 ... tn t1 ... t(k-1)` it predicts `t(k)`. Prompts must start with
`<|endoftext|>`. MLP weights are zero.

The circuit is known by construction (`true_edges.json`): a0.h0 is a previous-token head, a1.h0 an
induction head whose key reads a0.h0's output; a0.h1 (attention sink) and a1.h1 (attends to the
occurrences of its predecessor token) are distractors whose outputs nothing reads.

{how}
"""


def save_ground_truth(directory: Path) -> Path:
    """Write the model, tokenizer, ``true_edges.json`` and a README card into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_ground_truth_model()
    model.save_pretrained(directory)
    save_tokenizer(tokenizer, directory, n_ctx=P)
    record = json.dumps(true_edges_record(), indent=2) + "\n"
    (directory / "true_edges.json").write_text(record)
    (directory / "README.md").write_text(_CARD.format(d=D, v=V, how=HOW_KNOWN))
    _write_scores(model, directory)
    return directory


def _write_scores(model: GPT2LMHeadModel, directory: Path) -> None:
    """``model_card.json`` with the induction score, so ``circuits eval`` has a card to match."""
    from transformers import AutoTokenizer

    from discovery.scoring import score_tasks
    from discovery.zoo.card import CARD, sha256_file

    options = model.config.circuit_atlas["tasks"]
    scores = score_tasks(lambda t: model(t).logits, AutoTokenizer.from_pretrained(directory),
                         ["induction"], n=200, n_ctx=P, task_options=options)
    card = {"name": "induction-gt", "recipe": {"eval_prompts": 200, "hand_built": True},
            "eval": scores, "weights_sha256": sha256_file(directory / "model.safetensors")}
    (directory / CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    print(save_ground_truth(Path(sys.argv[1] if len(sys.argv) > 1 else "models/induction-gt")))
