"""A two-layer GPT-2 with two tasks whose competition is known by construction: ``compete-gt``.

The competition experiment (:mod:`discovery.experiments`) labels components *cooperative* (shared,
needed by both tasks) or *competitive* (pushes one task's answer against the other's). This model
gives it a case where the right labels are known because the weights were set by hand, in the way
of ``induction-gt`` (:mod:`discovery.zoo.ground_truth`): every component reads and writes its own
residual subspace, and LayerNorm is the identity on every residual the model produces.

Vocabulary: ``<|endoftext|>`` (BOS, id 0), 24 names, the marker ``remember`` and the trigger
``recall``. Two tasks (``models/compete-gt/tasks/*.json``):

* **gt-induction**: ``A B ... A -> B`` over names (the built-in induction prompts, names only).
* **gt-recall**: ``... remember F ... recall -> F``: at the trigger, copy the word that followed
  the marker.

Subspaces: TOK, POS, CONST (1 at every position), PREV (the token before me), OUT_I and OUT_R (the
two answer subspaces lm_head reads), one small JUNK block per distractor, BAL (every one-hot write
is ``s (e_i - e_BAL)``, so LayerNorm's centring is a no-op).

Circuit components (attention scores: a match beats the sink by ``MATCH - SINK`` and the sink beats
everything else by ``SINK`` nats; both are so large that float32 softmax weights are exactly 0 or 1):

* **a0.h0**, previous-token head (q, k read POS; v reads TOK; writes PREV). SHARED: both layer-1
  heads read PREV in their key, so both tasks need it.
* **a1.h0**, induction head: q reads TOK (and CONST for the sink), k reads PREV (and TOK[BOS]),
  v reads TOK; writes OUT_I, which lm_head reads with ``LOGIT``.
* **a1.h1**, recall head: q reads TOK[recall] (and CONST), k reads PREV[remember] (and TOK[BOS]),
  v reads TOK; writes OUT_R with scale ``RECALL_SCALE`` = 2, so its answer's logit is twice the
  induction head's. COMPETITIVE: on ``... remember F ... recall B ... recall`` induction says B,
  recall says F, and F wins because of a1.h1 (ablate it and B wins).

A head whose cue is absent attends to BOS (its sink) and copies BOS into a slot lm_head does not
read, so it writes nothing that reaches the logits. Every other head and both MLPs are distractors:
live ones attend somewhere (BOS, themselves, two back; layer-1 ones may read PREV) and write a
token code into their own JUNK block, inert ones have zero weights; nothing reads JUNK. That leaves
21 heads and 2 MLPs outside the circuits, a pool large enough for single-component random controls
to reach an empirical p-value of 1/21.

LayerNorm: every residual carries one-hots and junk codes of fixed norm at fixed places, so its norm
at each LayerNorm is a constant (``_Tally``) and each gain is that RMS. Patching a component with its
value on another prompt keeps the norm; mean and zero ablation change it, which rescales but never
redirects (the margins are far larger than the rescaling).
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from discovery.tasks.induction import draw as draw_induction
from discovery.zoo.language import NAMES, build_tokenizer, save_tokenizer

NAME = "compete-gt"
WORDS: tuple[str, ...] = NAMES[:24]
MARKER, TRIGGER = "remember", "recall"
V = len(WORDS) + 3  # BOS, the names, marker, trigger
P = 24  # <= D_HEAD: positional heads match positions one coordinate each
N_LAYER, N_HEAD, D_HEAD = 2, 12, 28  # d_head >= V + 1: a token identity plus the sink coordinate
D = N_HEAD * D_HEAD
SINK, MATCH = 120.0, 240.0  # attention scores in nats; exp(-120) is 0 in float32
LOGIT, RECALL_SCALE = 10.0, 2.0
LN_EPS = 0.05  # as induction-gt: a large epsilon keeps LayerNorm from being scale-invariant
JUNK_DIMS, JUNK_AMP = 4, 0.5  # two bits of the token id as +/- pairs: every code has norm 1

TOK, POS = 0, V
CONST = POS + P
PREV = CONST + 1
OUT_I = PREV + V
OUT_R = OUT_I + V
JUNK = OUT_R + V  # distractor i writes JUNK + 4i ... JUNK + 4i + 3
BAL = D - 1

INDUCTION, RECALL = "custom:gt-induction", "custom:gt-recall"
SHARED = ("a0.h0",)
COMPETITIVE = {"a1.h1": RECALL, "a1.h0": INDUCTION}
TRUE_EDGES: dict[str, tuple[str, ...]] = {
    INDUCTION: ("embed->a0.h0<q>", "embed->a0.h0<k>", "embed->a0.h0<v>", "embed->a1.h0<q>",
                "embed->a1.h0<k>", "a0.h0->a1.h0<k>", "embed->a1.h0<v>", "a1.h0->logits"),
    RECALL: ("embed->a0.h0<q>", "embed->a0.h0<k>", "embed->a0.h0<v>", "embed->a1.h1<q>",
             "embed->a1.h1<k>", "a0.h0->a1.h1<k>", "embed->a1.h1<v>", "a1.h1->logits"),
}
#: Distractor heads by layer: (head, kind); kinds: sink, self, back2, prev (v reads PREV), inert.
DISTRACTORS: dict[int, tuple[tuple[int, str], ...]] = {
    0: tuple((h, ("sink", "self", "back2", "inert")[(h - 1) % 4]) for h in range(1, N_HEAD)),
    1: tuple((h, ("prev", "sink", "self", "back2", "inert")[(h - 2) % 5]) for h in range(2, N_HEAD)),
}
HOW_KNOWN = (
    "Hand-set weights (discovery/zoo/compete_gt.py): a0.h0 writes PREV, which both layer-1 circuit "
    "heads read in their key (shared, needed by both tasks); a1.h0 (induction) and a1.h1 (recall) "
    "write the two answer subspaces lm_head reads, a1.h1 at twice the scale, so on conflict prompts "
    "the recall answer wins through a1.h1. Every other head and both MLPs write subspaces nothing "
    "reads. An edge exists exactly where a circuit head's q/k/v weights (or lm_head) read the "
    "subspace its source writes."
)


def token_ids() -> dict[str, int]:
    """Token ids as the saved tokenizer assigns them (sorted words after BOS)."""
    return build_tokenizer([*WORDS, MARKER, TRIGGER]).get_vocab()


class _Tally:
    """What the residual holds at one point: one-hot scales and junk norm, for LayerNorm's gain."""

    def __init__(self) -> None:
        self.scales: list[float] = []
        self.junk = 0.0

    def norm2(self) -> float:
        return sum(s * s for s in self.scales) + sum(self.scales) ** 2 + self.junk


def _one_hot_writes(offset: int, n: int, scale: float = 1.0) -> torch.Tensor:
    """[n, D]: row i is ``scale (e_{offset+i} - e_BAL)``."""
    rows = torch.zeros(n, D)
    rows[torch.arange(n), offset + torch.arange(n)] = scale
    rows[:, BAL] = -scale
    return rows


def _junk_codes(block: int) -> torch.Tensor:
    """[V, D]: token t's two low bits as +/-JUNK_AMP pairs in JUNK block ``block`` (norm 1, sum 0)."""
    codes, base = torch.zeros(V, D), JUNK + JUNK_DIMS * block
    assert base + JUNK_DIMS <= BAL, "the junk blocks must fit below BAL"
    for t in range(V):
        for bit in range(JUNK_DIMS // 2):
            sign = 1.0 if (t >> bit) & 1 else -1.0
            codes[t, base + 2 * bit], codes[t, base + 2 * bit + 1] = sign * JUNK_AMP, -sign * JUNK_AMP
    return codes


def _read(rows: list[tuple[int, int, float]]) -> torch.Tensor:
    """[D, D_HEAD]: residual dim ``dim`` into head coordinate ``coord`` with weight ``w``."""
    w = torch.zeros(D, D_HEAD)
    for dim, coord, weight in rows:
        w[dim, coord] = weight
    return w


def _set_head(block: torch.nn.Module, head: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              writes: torch.Tensor) -> None:
    """Install one head: q/k/v read matrices [D, D_HEAD] (q already in score units) and ``writes``
    [n_v, D], mapping the first n_v value coordinates to the stream."""
    w_attn, w_proj = block.attn.c_attn.weight, block.attn.c_proj.weight  # [D, 3D], [D, D]
    cols = slice(head * D_HEAD, (head + 1) * D_HEAD)
    for part, w in enumerate((q * math.sqrt(D_HEAD), k, v)):
        w_attn[:, part * D: (part + 1) * D][:, cols] = w
    w_proj[head * D_HEAD: head * D_HEAD + writes.shape[0]] = writes


def _tok(n: int = V) -> torch.Tensor:
    return _read([(TOK + i, i, 1.0) for i in range(n)])


def _sink_q(coord: int) -> list[tuple[int, int, float]]:
    return [(CONST, coord, SINK)]


def _sink_k(coord: int) -> list[tuple[int, int, float]]:
    return [(TOK, coord, 1.0)]  # TOK[0]: the BOS token, only at position 0


def _shift(back: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k making position p attend to max(p - back, 0)."""
    q = _read([(POS + p, max(p - back, 0), SINK) for p in range(P)])
    k = _read([(POS + p, p, 1.0) for p in range(P)])
    return q, k


def _distractor(block: torch.nn.Module, head: int, kind: str, junk: int, tally: _Tally) -> int:
    """Install a distractor; returns the next free junk block."""
    if kind == "inert":
        return junk
    if kind == "sink":
        q, k = _read(_sink_q(0)), _read(_sink_k(0))
    else:
        q, k = _shift({"self": 0, "back2": 2, "prev": 1}.get(kind, 0))
    v = _read([(PREV + i, i, 1.0) for i in range(V)]) if kind == "prev" else _tok()
    _set_head(block, head, q, k, v, _junk_codes(junk))
    tally.junk += 1.0
    return junk + 1


def _mlp(block: torch.nn.Module, offset: int, junk: int, tally: _Tally) -> int:
    """An MLP reading a token one-hot at ``offset`` and writing two bits of it, as +/-0.5 pairs, into
    its own junk block: gelu(x) - gelu(-x) = x, so each bit is exact and every code has norm 1."""
    fc, proj = block.mlp.c_fc.weight, block.mlp.c_proj.weight  # [D, 4], [4, D]
    base = JUNK + JUNK_DIMS * junk
    for bit in range(2):
        signs = torch.tensor([1.0 if (t >> bit) & 1 else -1.0 for t in range(V)])
        fc[offset: offset + V, 2 * bit], fc[offset: offset + V, 2 * bit + 1] = signs, -signs
        for neuron, sign in ((2 * bit, 1.0), (2 * bit + 1, -1.0)):
            proj[neuron, base + 2 * bit], proj[neuron, base + 2 * bit + 1] = sign * JUNK_AMP, -sign * JUNK_AMP
    tally.junk += 1.0
    return junk + 1


def _gain(ln: torch.nn.LayerNorm, tally: _Tally) -> None:
    """Gain = the residual's RMS there, so LayerNorm returns its (zero-mean) input unchanged."""
    ln.weight.fill_(math.sqrt(tally.norm2() / D + ln.eps))
    ln.bias.zero_()


def build_config() -> GPT2Config:
    return GPT2Config(
        vocab_size=V, n_positions=P, n_embd=D, n_layer=N_LAYER, n_head=N_HEAD, n_inner=4,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=LN_EPS, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
        circuit_atlas={"attn_only": False, "ground_truth": "true_roles.json",
                       "tasks": {"induction": {"pool": list(WORDS)}}},
    )


@torch.no_grad()
def build_model() -> GPT2LMHeadModel:
    """The hand-set model (deterministic: no random weights survive)."""
    model = GPT2LMHeadModel(build_config()).eval()
    for p in model.parameters():
        p.zero_()
    tf, ids, tally = model.transformer, token_ids(), _Tally()
    tf.wte.weight.copy_(_one_hot_writes(TOK, V))
    wpe = _one_hot_writes(POS, P)
    wpe[:, CONST], wpe[:, BAL] = 1.0, -2.0
    tf.wpe.weight.copy_(wpe)
    tally.scales += [1.0, 1.0, 1.0]  # TOK, POS, CONST
    _gain(tf.h[0].ln_1, tally)

    q, k = _shift(1)
    _set_head(tf.h[0], 0, q, k, _tok(), _one_hot_writes(PREV, V))
    tally.scales.append(1.0)
    junk = 0
    for head, kind in DISTRACTORS[0]:
        junk = _distractor(tf.h[0], head, kind, junk, tally)
    _gain(tf.h[0].ln_2, tally)
    junk = _mlp(tf.h[0], TOK, junk, tally)
    _gain(tf.h[1].ln_1, tally)

    m, t = ids[MARKER], ids[TRIGGER]
    q = _read([(TOK + i, i, MATCH) for i in range(V)] + _sink_q(V))
    k = _read([(PREV + i, i, 1.0) for i in range(V)] + _sink_k(V))
    _set_head(tf.h[1], 0, q, k, _tok(), _one_hot_writes(OUT_I, V))
    q, k = _read([(TOK + t, 0, MATCH)] + _sink_q(1)), _read([(PREV + m, 0, 1.0)] + _sink_k(1))
    _set_head(tf.h[1], 1, q, k, _tok(), _one_hot_writes(OUT_R, V, RECALL_SCALE))
    tally.scales += [1.0, RECALL_SCALE]
    for head, kind in DISTRACTORS[1]:
        junk = _distractor(tf.h[1], head, kind, junk, tally)
    _gain(tf.h[1].ln_2, tally)
    _mlp(tf.h[1], PREV, junk, tally)
    _gain(tf.ln_f, tally)

    real = torch.arange(1, V)  # BOS is written by heads at their sink; lm_head never reads it
    model.lm_head.weight[real, OUT_I + real] = LOGIT
    model.lm_head.weight[real, OUT_R + real] = LOGIT
    return model


# -- the tasks and the conflict prompts ----------------------------------------------------------

def _recall_pair(rng: random.Random) -> dict:
    words = rng.sample(WORDS, 8)
    lead, mid = words[:rng.randint(0, 3)], words[4:4 + rng.randint(0, 3)]
    answer, stand_in = words[3], words[7]
    body = [*lead, "{m}", answer, *mid, TRIGGER]
    wrong = (mid or lead or [stand_in])[-1]
    return {"clean": " ".join(body).format(m=MARKER), "corrupt": " ".join(body).format(m=stand_in),
            "answer": answer, "wrong": wrong}


def _induction_pair(rng: random.Random) -> dict:
    pair = draw_induction(rng, WORDS)
    return {"clean": pair.clean, "corrupt": pair.corrupt, "answer": pair.answers[0],
            "wrong": pair.wrongs[0]}


def task_records(n: int = 100, seed: int = 0) -> dict[str, dict]:
    """The two custom tasks as custom-task JSON objects (:mod:`discovery.tasks.custom`)."""
    rng = random.Random(seed)
    return {
        "induction": {"name": "gt-induction", "metric": "logprob",
                      "description": "compete-gt induction: A B ... A -> B over names",
                      "pairs": [_induction_pair(rng) for _ in range(n)]},
        "recall": {"name": "gt-recall", "metric": "logprob",
                   "description": "compete-gt recall: ... remember F ... recall -> F; corrupt "
                                  "replaces the marker",
                   "pairs": [_recall_pair(rng) for _ in range(n)]},
    }


def conflict_records(n: int = 100, seed: int = 1) -> list[dict]:
    """``... remember F ... recall B ... recall``: induction answers B, recall answers F."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        words = rng.sample(WORDS, 11)
        lead, mid, tail = words[:rng.randint(0, 3)], words[3:3 + rng.randint(0, 3)], words[6:6 + rng.randint(0, 3)]
        first, second = words[9], words[10]
        prompt = [*lead, MARKER, first, *mid, TRIGGER, second, *tail, TRIGGER]
        out.append({"prompt": " ".join(prompt), "answers": {INDUCTION: second, RECALL: first}})
    return out


def true_roles_record() -> dict:
    nodes = {task: sorted({e.split("->")[0] for e in edges} | {"logits"}) for task, edges in TRUE_EDGES.items()}
    return {"model": NAME, "tasks": [INDUCTION, RECALL], "shared": list(SHARED),
            "competitive": dict(COMPETITIVE),
            "circuits": {task: {"nodes": nodes[task], "edges": list(edges)}
                         for task, edges in TRUE_EDGES.items()},
            "distractors": sorted(f"a{layer}.h{h}" for layer, heads in DISTRACTORS.items() for h, _ in heads)
            + ["m0", "m1"],
            "how_known": HOW_KNOWN}


_CARD = """# compete-gt

A 2-layer GPT-2 (12 heads per layer, d_model {d}, {v} tokens: 24 names, `remember`, `recall` and
`<|endoftext|>`) whose weights were set by hand (`discovery/zoo/compete_gt.py`), not trained. It
does two tasks whose circuits share a component and compete on conflict prompts, so the competition
experiment's labels can be checked against the truth (`true_roles.json`):

- `tasks/induction.json` (custom:gt-induction): `A B ... A` -> `B` (a0.h0 -> a1.h0).
- `tasks/recall.json` (custom:gt-recall): `... remember F ... recall` -> `F` (a0.h0 -> a1.h1).
- `conflicts.json`: `... remember F ... recall B ... recall`: induction says B, recall says F; F
  wins because a1.h1 writes at twice a1.h0's scale.

a0.h0 (previous-token head) is shared and needed by both tasks (cooperative); a1.h1 is competitive
for recall, a1.h0 for induction. The other 21 heads and both MLPs are distractors whose outputs
nothing reads. Prompts get `<|endoftext|>` prepended (as every task in circuit-atlas).

{how}
"""


def save_compete_gt(directory: Path) -> Path:
    """Write the model, tokenizer, tasks, conflicts, ``true_roles.json``, card and README."""
    directory = Path(directory)
    (directory / "tasks").mkdir(parents=True, exist_ok=True)
    model = build_model()
    model.save_pretrained(directory)
    save_tokenizer(build_tokenizer([*WORDS, MARKER, TRIGGER]), directory, n_ctx=P)
    for stem, record in task_records().items():
        (directory / "tasks" / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    (directory / "conflicts.json").write_text(json.dumps(conflict_records(), indent=1) + "\n")
    (directory / "true_roles.json").write_text(json.dumps(true_roles_record(), indent=2) + "\n")
    (directory / "README.md").write_text(_CARD.format(d=D, v=V, how=HOW_KNOWN))
    _write_scores(model, directory)
    return directory


def _write_scores(model: GPT2LMHeadModel, directory: Path) -> None:
    """``model_card.json`` with the built-in induction score (names only), for ``circuits eval``."""
    from transformers import AutoTokenizer

    from discovery.scoring import score_tasks
    from discovery.zoo.card import CARD, sha256_file

    options = model.config.circuit_atlas["tasks"]
    scores = score_tasks(lambda t: model(t).logits, AutoTokenizer.from_pretrained(directory),
                         ["induction"], n=200, n_ctx=P, task_options=options)
    card = {"name": NAME, "recipe": {"eval_prompts": 200, "hand_built": True},
            "eval": scores, "weights_sha256": sha256_file(directory / "model.safetensors")}
    (directory / CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    print(save_compete_gt(Path(sys.argv[1] if len(sys.argv) > 1 else f"models/{NAME}")))
