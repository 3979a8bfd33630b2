"""Every registered architecture through the same patched forward, suffix engine and attribution,
on tiny random-weight models built in memory (2 layers, d_model 64, 4 query heads, 2 kv heads
for grouped-query attention, fp32, seeded): parity with the Hugging Face logits, the empty circuit
equals the ablated run, fast ACDC equals the reference, EAP equals a finite-difference derivative."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from discovery.algorithms import ALGORITHMS, AlgorithmConfig
from discovery.algorithms.attribution import edge_scores, input_gradients
from discovery.arch import graph_shape, read_weights
from discovery.graph import Graph
from discovery.metrics import METRICS, final_logits
from discovery.patching import forward_from, patched_forward
from discovery.problem import Problem
from discovery.tasks.base import PromptPair, TaskData
from discovery.tasks.tokens import TokenizedTask

VOCAB, P = 50, 8
_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, max_position_embeddings=32, initializer_range=0.15)
CONFIGS = {
    # rope scaling (linear) must come from the model's rotary module, not a recomputation
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(
        **_COMMON, num_key_value_heads=2, tie_word_embeddings=False,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0})),
    # a sliding window shorter than the prompts, so the window is exercised
    "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(
        **_COMMON, num_key_value_heads=2, sliding_window=3, tie_word_embeddings=False)),
    # q/k/v biases and tied embeddings
    "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(
        **_COMMON, num_key_value_heads=2, tie_word_embeddings=True)),
    # parallel attention + MLP, partial rotary
    "neox": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
        **_COMMON, rotary_pct=0.5, use_parallel_residual=True, tie_word_embeddings=False)),
    "neox-seq": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
        **_COMMON, rotary_pct=0.25, use_parallel_residual=False, tie_word_embeddings=False)),
    "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=32, initializer_range=0.15)),
    # Gemma: sqrt(d) embedding scale, (1 + w) RMSNorms (randomised so they matter), GQA, tied
    "gemma": lambda: _random_norms(tf.GemmaForCausalLM(tf.GemmaConfig(
        **_COMMON, num_key_value_heads=2, head_dim=16))),
    # + post-norms, query_pre_attn_scalar != head_dim, both soft-cappings, alternating windows
    "gemma2": lambda: _random_norms(tf.Gemma2ForCausalLM(tf.Gemma2Config(
        **_COMMON, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=3,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0))),
    # + q/k norms, local and global layers with different rotary (bases, linear scaling)
    "gemma3": lambda: _random_norms(tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(
        **{**_COMMON, "num_hidden_layers": 3}, num_key_value_heads=2, head_dim=16,
        query_pre_attn_scalar=24, sliding_window=3, final_logit_softcapping=3.0,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                         "full_attention": {"rope_type": "linear", "factor": 2.0,
                                            "rope_theta": 1000.0}}))),
}


def _random_norms(model, std: float = 0.3):
    """Gemma initialises its RMSNorm weights to 0 (scale 1 + w = 1): random ones, so that each
    norm's weight is exercised."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, std)
    return model


def tiny(name: str):
    torch.manual_seed(0)
    model = CONFIGS[name]().eval()
    model.config._attn_implementation = "eager"
    return model


def batch(n: int = 6, seed: int = 1) -> TokenizedTask:
    """Random prompts of varying length (right-padded, so ``last`` varies), a corruption that
    changes two tokens of each, and an answer/wrong token pair."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, VOCAB, (n, P), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1] = torch.randint(0, VOCAB, (n,), generator=g)
    corrupt[:, 3] = torch.randint(0, VOCAB, (n,), generator=g)
    last = torch.tensor([P - 1 - (i % 3) for i in range(n)])
    answers = torch.randint(0, VOCAB, (n, 1), generator=g)
    wrongs = torch.randint(0, VOCAB, (n, 1), generator=g)
    data = TaskData("tiny", "logit_diff", (PromptPair("a", "b", ("c",), ("d",)),))
    return TokenizedTask(data, clean, corrupt, last, answers, wrongs)


def problem(model, metric: str) -> Problem:
    w = read_weights(model)
    return Problem.build(w, Graph(graph_shape(w)), batch(), metric=metric, ablation="corrupt")


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request):
    torch.set_num_threads(1)
    return tiny(request.param)


def max_dlogit(model, w=None) -> float:
    """max |patched forward (every edge kept) - Hugging Face logits| on the parity batch, with
    the weights ``w`` (default: read from ``model``)."""
    w = read_weights(model) if w is None else w
    graph = Graph(graph_shape(w))
    tokens = batch().clean
    with torch.no_grad():
        ours = patched_forward(w, graph, tokens, torch.zeros(graph.n_upstream, *tokens.shape, 64),
                               graph.valid()).logits
        theirs = model(tokens).logits
    return (ours - theirs).abs().max().item()


def test_every_edge_kept_equals_hf_logits(model):
    assert max_dlogit(model) <= 1e-4
    with torch.no_grad():
        assert model(batch().clean).logits.std() > 0.05  # the random model is not trivially flat


def test_no_edge_kept_equals_ablated_run(model):
    p = problem(model, "kl")
    with torch.no_grad():
        run = patched_forward(p.weights, p.graph, p.batch.clean, p.ablation,
                              torch.zeros_like(p.graph.valid()))
        corrupt = model(p.batch.corrupt).logits
    assert (run.logits - corrupt).abs().max().item() <= 1e-4
    assert torch.allclose(run.outputs[1:], p.ablation[1:], atol=1e-5)


def test_fast_acdc_equals_reference(model):
    config = AlgorithmConfig(threshold=0.002)
    fast = ALGORITHMS["acdc"](problem(model, "kl"), config)
    slow = ALGORITHMS["acdc-reference"](problem(model, "kl"), config)
    assert torch.equal(fast.mask, slow.mask)
    assert 0 < int(fast.mask.sum()) < int(problem(model, "kl").graph.valid().sum())
    assert torch.allclose(fast.scores.nan_to_num(0), slow.scores.nan_to_num(0), atol=1e-4)


def test_eap_scores_equal_finite_differences(model):
    """EAP's score of u->i is d metric / d alpha at alpha=0 when edge u->i alone carries
    ``clean[u] + alpha * (ablation[u] - clean[u])`` (a mask of 1 - alpha on that edge; in a
    post-norm model the change goes through the receiver's own norm of u's layer): checked by a
    central difference on a few edges, heads into heads among them."""
    p = problem(model, "logit_diff")
    clean_embed = p.clean[0]
    scores = edge_scores(p, input_gradients(p, clean_embed, 1))
    graph, b = p.graph, p.batch
    valid = graph.valid().nonzero().tolist()
    picks = [valid[j] for j in torch.randperm(len(valid), generator=torch.Generator().manual_seed(0))[:6]]
    picks += [(graph.up_index["a0.h1"], graph.in_index[("a1.h2", "k")]),
              (graph.up_index["a1.h3"], graph.n_inputs - 1)]

    def metric(u: int, k: int, alpha: float) -> float:
        mask = graph.valid().float()
        mask[u, k] = 1 - alpha
        with torch.no_grad():
            run = forward_from(p.weights, graph, b.clean, p.ablation, mask, start=(0, 0), outputs=None)
        return METRICS["logit_diff"](final_logits(run.logits, b.last), b.answers, b.wrongs, None).mean().item()

    eps = 1e-2
    for u, k in picks:
        fd = (metric(u, k, eps) - metric(u, k, -eps)) / (2 * eps)
        assert scores[u, k].item() == pytest.approx(fd, rel=2e-2, abs=2e-4), graph.edge(u, k).name


def test_neuron_circuit_on_a_gated_mlp():
    """Neuron-level circuits read SwiGLU neurons (act(gate) * up) through the same forward."""
    from discovery.neurons import neuron_circuit

    p = problem(tiny("llama"), "logit_diff")
    found = neuron_circuit(p, p.graph.valid(), 1, share=0.9)
    assert found.d_mlp == 96 and 0 < len(found.neurons) <= 96
    assert found.share >= 0.9
