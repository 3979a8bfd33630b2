"""The hand-built induction model: it solves the task, through exactly the circuit it claims."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from discovery.circuit import Edge
from discovery.zoo import ground_truth as gt

N_PROMPTS = 200


@pytest.fixture(scope="module")
def model():
    return gt.build_model()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``<|endoftext|> t1..tn t1..t(k-1)`` with n distinct tokens, right-padded (attention is
    causal, so padding after the last real token changes nothing before it). Returns ids
    [N, P], the last real index and the answer t(k) of each prompt."""
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(N_PROMPTS, gt.P, dtype=torch.long)
    last, answer = torch.zeros(N_PROMPTS, dtype=torch.long), torch.zeros(N_PROMPTS, dtype=torch.long)
    for i in range(N_PROMPTS):
        n = int(torch.randint(2, gt.V, (1,), generator=g))  # 2..24 distinct tokens
        repeat = int(torch.randint(1, min(n - 1, gt.P - 2 - n) + 1, (1,), generator=g))
        seq = (torch.randperm(gt.V - 1, generator=g)[:n] + 1).tolist()
        prompt = [0] + seq + seq[:repeat]  # at most 31 tokens
        ids[i, : len(prompt)] = torch.tensor(prompt)
        last[i], answer[i] = len(prompt) - 1, seq[repeat]
    return ids, last, answer


@torch.no_grad()
def score(model, batch) -> tuple[float, float]:
    """Top-1 accuracy and mean probability of the right token at each prompt's last position."""
    ids, last, answer = batch
    logits = model(ids, attention_mask=torch.ones_like(ids)).logits
    probs = logits[torch.arange(len(ids)), last].softmax(-1)
    right = probs.argmax(-1) == answer
    return right.float().mean().item(), probs[torch.arange(len(ids)), answer].mean().item()


def zero_heads(model, heads: list[tuple[int, int]]):
    """A copy with each (layer, head)'s rows of c_proj zeroed: the head writes nothing."""
    ablated = copy.deepcopy(model)
    with torch.no_grad():
        for layer, head in heads:
            ablated.transformer.h[layer].attn.c_proj.weight[head * gt.D_HEAD : (head + 1) * gt.D_HEAD] = 0
    return ablated


def test_solves_induction(model, batch):
    accuracy, prob = score(model, batch)
    assert accuracy >= 0.99
    assert prob > 0.9


def test_layer_norm_is_identity_on_the_models_own_residuals(model, batch):
    ids, last, _ = batch
    seen = []
    hooks = [ln.register_forward_hook(lambda _m, args, out: seen.append((args[0], out)))
             for ln in (model.transformer.h[0].ln_1, model.transformer.h[1].ln_1)]
    with torch.no_grad():
        model(ids[:1, : last[0] + 1])
    for hook in hooks:
        hook.remove()
    for x, y in seen:
        assert x.sum(-1).abs().max() < 1e-5  # every write has zero sum
        torch.testing.assert_close(y, x, atol=1e-4, rtol=1e-4)


def attention(model, ids: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    """[pos, pos] pattern of one head, recomputed from the q and k that c_attn produced."""
    got = {}
    hook = model.transformer.h[layer].attn.c_attn.register_forward_hook(
        lambda _m, _a, out: got.setdefault("qkv", out))
    with torch.no_grad():
        model(ids)
    hook.remove()
    cols = slice(head * gt.D_HEAD, (head + 1) * gt.D_HEAD)
    q, k = got["qkv"][0, :, :gt.D][:, cols], got["qkv"][0, :, gt.D : 2 * gt.D][:, cols]
    scores = q @ k.T / gt.D_HEAD**0.5
    causal = torch.ones_like(scores, dtype=torch.bool).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(-1)


def test_attention_patterns(model):
    seq = [3, 7, 1, 9, 4, 12]
    ids = torch.tensor([[0] + seq + seq[:4]])  # positions 7..10 repeat positions 1..4
    prev = attention(model, ids, 0, 0)
    assert prev[0, 0] > 0.99
    assert all(prev[p, p - 1] > 0.99 for p in range(1, ids.shape[1]))
    induction = attention(model, ids, 1, 0)
    for p in range(7, ids.shape[1]):  # token at p first occurred at p - 6; its successor: p - 5
        assert induction[p, p - 5] > 0.99


def test_ablating_the_circuit_destroys_the_task(model, batch):
    for head in [(0, 0), (1, 0)]:
        accuracy, _ = score(zero_heads(model, [head]), batch)
        assert accuracy < 0.1, head


def test_ablating_everything_outside_the_circuit_changes_nothing(model, batch):
    accuracy, prob = score(zero_heads(model, [(0, 1), (1, 1)]), batch)
    assert accuracy >= 0.99
    assert prob > 0.9


@torch.no_grad()
def score_without_a0h0_into(model, batch, head: int, part: str) -> float:
    """Accuracy when layer-1 head ``head``'s input ``part`` (q, k or v) is computed from the residual
    minus a0.h0's output: removing the one edge a0.h0 -> a1.h{head}<part>."""
    h0, h1 = model.transformer.h
    got = {}

    def keep_z(_m, args):
        got["a0h0"] = args[0][..., : gt.D_HEAD] @ h0.attn.c_proj.weight[: gt.D_HEAD]

    def keep_resid(_m, args, kwargs):
        got["resid"] = args[0] if args else kwargs["hidden_states"]

    def patch(_m, _args, out):
        ln = h1.ln_1
        x = torch.nn.functional.layer_norm(got["resid"] - got["a0h0"], (gt.D,), ln.weight, ln.bias, ln.eps)
        alt = x @ h1.attn.c_attn.weight + h1.attn.c_attn.bias
        start = "qkv".index(part) * gt.D + head * gt.D_HEAD
        out = out.clone()
        out[..., start : start + gt.D_HEAD] = alt[..., start : start + gt.D_HEAD]
        return out

    hooks = [h0.attn.c_proj.register_forward_pre_hook(keep_z),
             h1.register_forward_pre_hook(keep_resid, with_kwargs=True),
             h1.attn.c_attn.register_forward_hook(patch)]
    try:
        return score(model, batch)[0]
    finally:
        for hook in hooks:
            hook.remove()


def test_edge_level_k_composition(model, batch):
    assert score_without_a0h0_into(model, batch, 0, "k") < 0.1  # a0.h0->a1.h0<k>: in the circuit
    for head, part in [(0, "q"), (0, "v"), (1, "q"), (1, "k"), (1, "v")]:  # not in the circuit
        assert score_without_a0h0_into(model, batch, head, part) >= 0.99, (head, part)


def test_all_edges_count():
    # layer 0: 2 heads x 3 inputs x 1 upstream (embed) = 6; layer 1: 2 x 3 x (embed + 2 heads) = 18;
    # logits: embed + 4 heads = 5. Total 29.
    edges = gt.all_edges(2, 2)
    assert len(edges) == len(set(edges)) == 29
    assert all(Edge.parse(e).name == e for e in edges)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return gt.save_ground_truth(tmp_path_factory.mktemp("induction-gt"))


def test_true_edges_round_trip(saved):
    record = json.loads((saved / "true_edges.json").read_text())
    assert record == gt.true_edges_record()
    edges = [Edge.parse(e) for e in record["edges"]]
    assert {e.name for e in edges} <= set(gt.all_edges(gt.N_LAYER, gt.N_HEAD))
    assert {e.src for e in edges} | {e.dst for e in edges} == set(record["nodes"])
    assert record["all_edges_count"] == 29


def test_saved_directory_loads(model, saved):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(saved)
    words = list(gt.WORDS[:5])
    ids = tokenizer(" ".join(["<|endoftext|>", *words, *words[:3]]), return_tensors="pt").input_ids
    assert ids[0, 0] == 0 and ids.shape[1] == 9 and 0 not in ids[0, 1:]
    loaded = GPT2LMHeadModel.from_pretrained(saved).eval()
    extra = loaded.config.circuit_atlas
    assert extra["attn_only"] is True and extra["ground_truth"] == "true_edges.json"
    assert extra["tasks"]["induction"]["pool"] == list(gt.WORDS)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
        assert loaded(ids).logits[0, -1].argmax() == tokenizer.convert_tokens_to_ids(words[3])


def test_shipped_copy_is_current(model):
    """models/induction-gt is what save_ground_truth writes today (regenerate it when this fails)."""
    from safetensors.torch import load_file

    shipped = Path(__file__).resolve().parents[2] / "models" / "induction-gt"
    if not shipped.exists():
        pytest.skip("no shipped copy")
    assert json.loads((shipped / "true_edges.json").read_text()) == gt.true_edges_record()
    weights = load_file(shipped / "model.safetensors")
    params = dict(model.named_parameters())
    assert set(weights) == set(params)
    for name, tensor in params.items():
        torch.testing.assert_close(weights[name], tensor, msg=name)
