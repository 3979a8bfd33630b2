"""EAP-IG, EAP and fast ACDC on large random-weight models: a Llama of TinyLlama's shape (~1.1B
parameters, fp32 and bf16) and GPT-2 small's shape (124M, fp32). Time, peak memory, edges in the
graph and edges kept. Prints one markdown table.

    python bench/gpu_arch.py                         # on CUDA: llama-1b fp32 + bf16, gpt2-small fp32
    python bench/gpu_arch.py --quick --device cpu    # tiny shapes (2 layers, d 64): a smoke test, seconds
    python bench/gpu_arch.py --acdc-receivers 32 --acdc-seconds 300

Models are built in memory from their configs (no downloads), on the bench's device, seeded.
Prompts are random tokens with a corruption of two positions (as tests/unit/test_arch_parity.py's
``batch()``), ``--batch`` B prompts of ``--positions`` P tokens. Random weights are fine for speed;
the circuits themselves mean nothing.

Fast ACDC on the 1B model would visit all 742,996 edges (22 x 32 heads, MLPs), so it runs the product's own loop
(``acdc.run``, from the whole graph, so its decisions and chain breaks are the real ones) and stops
it once the first ``--acdc-receivers`` receivers it visits are decided (the topologically last:
the logits, then the last layer's inputs),
or after ``--acdc-seconds``. Its rows report edges visited per second and two
extrapolations to the whole graph, marked ``~``: by rate (edges / rate), and suffix-weighted (each
edge weighted by the layers its suffix pass recomputes, which an earlier receiver has more of).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during the row (reset per row; weights and
the problem's cached outputs included); on CPU the process's ``ru_maxrss`` high-water mark, which
only grows, so a CPU row's figure is an upper bound for that row.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discovery.algorithms import ALGORITHMS, AlgorithmConfig  # noqa: E402
from discovery.algorithms import acdc as acdc_module  # noqa: E402
from discovery.arch import graph_shape, read_weights  # noqa: E402
from discovery.discover import DTYPES, cast_weights  # noqa: E402
from discovery.graph import Graph  # noqa: E402
from discovery.problem import Problem  # noqa: E402
from discovery.tasks.base import PromptPair, TaskData  # noqa: E402
from discovery.tasks.tokens import TokenizedTask  # noqa: E402


def _llama(tiny: bool):
    import transformers as tf

    if tiny:
        return tf.LlamaForCausalLM(tf.LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512, max_position_embeddings=128, initializer_range=0.15))
    # TinyLlama-1.1B's shape
    return tf.LlamaForCausalLM(tf.LlamaConfig(
        hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048))


def _gpt2(tiny: bool):
    import transformers as tf

    if tiny:
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4,
                                                n_positions=128, initializer_range=0.15,
                                                bos_token_id=0, eos_token_id=0))
    return tf.GPT2LMHeadModel(tf.GPT2Config())  # GPT-2 small: 12 x 12, d 768, 124M


#: name -> (builder(tiny) -> HF model, dtypes benched on CUDA)
MODELS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "llama-1b": (_llama, ("float32", "bfloat16")),
    "gpt2-small": (_gpt2, ("float32",)),
}
METHODS = ("eap-ig", "eap", "acdc")


def build_model(name: str, tiny: bool, device: torch.device):
    """The random-weight HF model ``name`` (fp32, eval, seeded), initialised directly on ``device``
    (a 1.1B model initialises in seconds on a GPU, minutes on one CPU thread)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = MODELS[name][0](tiny)
    model.config._attn_implementation = "eager"
    return model.eval()


def random_batch(vocab: int, n: int, positions: int, metric: str, device: torch.device,
                 seed: int = 1) -> TokenizedTask:
    """``n`` random prompts ``[n, positions]``, right-padded so ``last`` varies, a corruption of
    positions 1 and 3, and one answer / wrong token each."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (n, positions), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1] = torch.randint(0, vocab, (n,), generator=g)
    corrupt[:, 3] = torch.randint(0, vocab, (n,), generator=g)
    last = torch.tensor([positions - 1 - (i % 3) for i in range(n)])
    answers = torch.randint(0, vocab, (n, 1), generator=g)
    wrongs = torch.randint(0, vocab, (n, 1), generator=g)
    data = TaskData("random", metric, (PromptPair("a", "b", ("c",), ("d",)),))
    return TokenizedTask(data, clean, corrupt, last, answers, wrongs).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Peak:
    """Peak memory of a block in MiB (see the module docstring for what it counts)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> Peak:
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        self.mib = (torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda"
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


@dataclass
class Row:
    model: str
    dtype: str
    method: str
    edges: int
    seconds: float
    peak_mib: float
    kept: int  # of the visited edges
    visited: int  # edges scored / visited
    rate_full_s: float | None = None  # ACDC: ~whole graph by edges/s
    weighted_full_s: float | None = None  # ACDC: ~whole graph, suffix-weighted


class _Stop(Exception):
    """Raised from ACDC's progress callback to end a bounded run (receivers done or budget spent)."""


def _suffix_cost(graph: Graph, k: int) -> int:
    """Relative cost of one suffix pass for receiver ``k``: the layers from its own on, plus the
    unembedding (the logits' input, at layer ``n_layers``, costs 1)."""
    return graph.shape.n_layers - graph.inputs[k].layer + 1


def acdc_bounded(problem: Problem, config: AlgorithmConfig, receivers: int, budget_s: float,
                 device: torch.device) -> tuple[float, int, int, float, float]:
    """Fast ACDC from the whole graph, as the product runs it (``acdc.run``), stopped once the
    last ``receivers`` inputs of its visiting order (logits first) are decided (0: run to the
    end) or after ``budget_s``: (seconds, edges visited, of them kept, ~full s by rate, ~full s
    suffix-weighted). The stop is a progress callback that raises; the visited edges are the first
    ``visited`` of :meth:`Graph.edges_in_order`, and what was kept is read from the live mask
    (captured from the ``problem.receiver`` calls, wrapped on this problem only)."""
    graph = problem.graph
    order = graph.edges_in_order()  # [(u, k)] in ACDC's visiting order
    target = len(order)
    if receivers > 0:
        visiting = list(dict.fromkeys(k for _, k in order))[:receivers]
        target = sum(1 for _, k in order if k in set(visiting))
    live: dict[str, torch.Tensor] = {}
    own_receiver = problem.receiver

    def receiver(k: int, mask: torch.Tensor, outputs: torch.Tensor):  # noqa: ANN202 - a Receiver
        live["mask"] = mask  # the run's own mask, changed in place as edges are removed
        return own_receiver(k, mask, outputs)

    problem.receiver = receiver  # type: ignore[method-assign]
    visited = 0

    def progress(done: int, total: int) -> None:
        nonlocal visited
        visited = done
        if done >= target or time.perf_counter() - began > budget_s:
            raise _Stop

    sync(device)
    began = time.perf_counter()
    try:
        result = acdc_module.run(problem, config, progress)
        mask, visited = result.mask, len(order)
    except _Stop:
        mask = live["mask"].cpu()
    sync(device)
    seconds = time.perf_counter() - began
    done = order[:visited]
    kept = sum(bool(mask[u, k]) for u, k in done)
    rate = visited / seconds if seconds > 0 else math.inf
    weight_all = sum(_suffix_cost(graph, k) for _, k in order)
    weight_done = sum(_suffix_cost(graph, k) for _, k in done)
    by_rate = len(order) / rate if rate else math.inf
    weighted = seconds * weight_all / weight_done if weight_done else math.inf
    return seconds, visited, kept, by_rate, weighted


def bench_model(name: str, dtype: str, hf, args, device: torch.device) -> list[Row]:
    """Every method on one (model, dtype), each on a freshly built problem."""
    label = name if args.shape == "full" else f"{name} (tiny)"
    weights = cast_weights(read_weights(hf), DTYPES[dtype])
    graph = Graph(graph_shape(weights))
    vocab = hf.config.vocab_size
    # one untimed EAP on two prompts first: CUDA context, cuBLAS handles and kernels are not timed
    warm = Problem.build(weights, graph, random_batch(vocab, min(2, args.batch), args.positions,
                                                      "logit_diff", device), metric="logit_diff")
    ALGORITHMS["eap"](warm, AlgorithmConfig(threshold=args.threshold))
    del warm
    rows = []
    for method in args.methods:
        metric = args.metric if args.metric != "auto" else ("kl" if method == "acdc" else "logit_diff")
        tokens = random_batch(vocab, args.batch, args.positions, metric, device)
        problem = Problem.build(weights, graph, tokens, metric=metric, ablation="corrupt")
        config = AlgorithmConfig(threshold=args.threshold, ig_steps=args.ig_steps,
                                 max_batch_memory=args.max_batch_memory)
        with Peak(device) as peak:
            if method == "acdc":
                seconds, visited, kept, rate_full, weighted_full = acdc_bounded(
                    problem, config, args.acdc_receivers, args.acdc_seconds, device)
            else:
                sync(device)
                began = time.perf_counter()
                result = ALGORITHMS[method](problem, config)
                sync(device)
                seconds = time.perf_counter() - began
                visited, kept = int((~result.scores.isnan()).sum()), int(result.mask.sum())
                rate_full = weighted_full = None
        rows.append(Row(label, dtype, method, graph.n_edges, seconds, peak.mib, kept, visited,
                        rate_full, weighted_full))
        print(f"  done: {name} {dtype} {method} {seconds:.2f}s", file=sys.stderr, flush=True)
        del problem
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def table(rows: list[Row]) -> list[str]:
    """Markdown rows; ``s/edge vs fp32``: this row's seconds per visited edge over the same model
    and method's in fp32 (per edge, so ACDC rows stopped on their budget compare too)."""
    fp32 = {(r.model, r.method): r.seconds / max(1, r.visited) for r in rows if r.dtype == "float32"}
    lines = ["| model | dtype | method | edges | visited | kept | seconds | edges/s | peak MiB | "
             "s/edge vs fp32 | ~full graph s (rate) | ~full graph s (suffix-weighted) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        base = fp32.get((r.model, r.method))
        versus = f"{r.seconds / max(1, r.visited) / base:.2f}x" if base and r.dtype != "float32" else ""
        extra = (f"~{r.rate_full_s:.3f} | ~{r.weighted_full_s:.3f}" if r.rate_full_s is not None
                 else " | ")
        lines.append(f"| {r.model} | {r.dtype} | {r.method} | {r.edges} | {r.visited} | "
                     f"{r.kept} | {r.seconds:.3f} | "
                     f"{r.visited / r.seconds if r.seconds else math.inf:.0f} | {r.peak_mib:.0f} | "
                     f"{versus} | {extra} |")
    return lines


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=["full", "tiny"], default="full",
                        help="tiny: 2 layers, d 64 variants of the same architectures")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, small batch: a smoke test")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--dtypes", help="comma-separated; default: each model's (llama-1b fp32 + "
                        "bf16, gpt2-small fp32)")
    parser.add_argument("--batch", type=int, help="prompts B (default 16; --quick 4)")
    parser.add_argument("--positions", type=int, help="tokens per prompt P (default 32; --quick 8)")
    parser.add_argument("--metric", default="auto", choices=["auto", "kl", "logit_diff"],
                        help="auto: KL for ACDC, logit_diff for EAP / EAP-IG (KL's gradient at the clean run is 0)")
    parser.add_argument("--threshold", type=float, default=0.01)
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--acdc-receivers", type=int, help="ACDC over the last N receivers only "
                        "(the first N it visits: logits, then the last layer's; 0: all; default 16 on full shapes, all on tiny)")
    parser.add_argument("--acdc-seconds", type=float, default=60.0, help="ACDC wall-time budget per row (s)")
    parser.add_argument("--max-batch-memory", type=int, help="bytes per batched pass (default: half free)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.quick:
        args.shape = "tiny"
    tiny = args.shape == "tiny"
    args.batch = args.batch or (4 if args.quick else 16)
    args.positions = args.positions or (8 if args.quick else 32)
    if args.acdc_receivers is None:
        args.acdc_receivers = 0 if tiny else 16
    args.models = [m for m in args.models.split(",") if m]
    args.methods = [m for m in args.methods.split(",") if m]
    for field, values, known in (("--models", args.models, MODELS), ("--methods", args.methods, METHODS)):
        unknown = [v for v in values if v not in known]
        if unknown:
            parser.error(f"{field}: unknown {', '.join(unknown)}; use some of {', '.join(known)}")
    if args.dtypes:
        args.dtypes = [d for d in args.dtypes.split(",") if d]
        if bad := [d for d in args.dtypes if d not in DTYPES]:
            parser.error(f"--dtypes: unknown {', '.join(bad)}; use some of {', '.join(DTYPES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; use --device cpu (with --quick)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging

    logging.set_verbosity_error()
    device = torch.device(args.device)
    tiny = args.shape == "tiny"
    if device.type == "cuda":
        # fp32 rows in real fp32 (the parity tests' setting), not TF32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    where = (f"{torch.cuda.get_device_name(device)}" if device.type == "cuda"
             else f"CPU x{torch.get_num_threads()} threads")
    memory = ("torch.cuda.max_memory_allocated per row (reset per row; the fp32 HF model, the read "
              "weights and the problem's cached outputs are resident and included)"
              if device.type == "cuda" else "ru_maxrss of this process (high-water mark, not per row)")
    print(f"# GPU architecture bench on {where}, torch {torch.__version__}, shape {args.shape}, "
          f"B={args.batch} P={args.positions}, threshold {args.threshold}, EAP-IG {args.ig_steps} steps, "
          f"metric {args.metric} (auto: KL for ACDC, logit_diff for EAP), ACDC over "
          f"{f'the last {args.acdc_receivers}' if args.acdc_receivers else 'all'} receivers, budget {args.acdc_seconds:.0f} s; peak MiB: {memory}; "
          "each (model, dtype) after one untimed warm-up EAP; ~: extrapolated to the whole graph, not measured\n", flush=True)
    rows: list[Row] = []
    for name in args.models:
        dtypes = args.dtypes or MODELS[name][1]
        hf = build_model(name, tiny, device)
        params = sum(p.numel() for p in hf.parameters())
        print(f"  built {name} ({params / 1e6:.1f}M parameters) on {device}", file=sys.stderr, flush=True)
        for dtype in dtypes:
            rows += bench_model(name, dtype, hf, args, device)
        del hf
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\n".join(table(rows)), flush=True)


if __name__ == "__main__":
    main()
