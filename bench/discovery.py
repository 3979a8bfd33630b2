"""Discovery speed and memory: reference ACDC, fast ACDC, EAP and EAP-IG on each model and task,
against the lower bound of one suffix forward pass per edge. Prints a markdown table; ratios are
against numbers measured in the same run.

    python bench/discovery.py                       # shipped models on this machine (CPU)
    python bench/discovery.py --device cuda --gpt2-small --reference-edges 300

``--gpt2-small`` adds a randomly initialised model of GPT-2 small's shape (12 x 12, d 768, MLPs;
32,491 edges): random weights are fine for speed. Its reference ACDC is timed on the first
``--reference-edges`` edges and extrapolated (marked ~).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discovery.algorithms import ALGORITHMS, AlgorithmConfig  # noqa: E402
from discovery.discover import build_problem, task_data  # noqa: E402
from discovery.models import load_model  # noqa: E402
from discovery.patching import forward_from  # noqa: E402


class PeakMemory:
    """Peak memory during a block: CUDA's allocator peak, or resident set size sampled on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    @staticmethod
    def _rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self._rss()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)  # sparse sampling: the sampler must not slow the work it watches

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self.thread.join()
        self.mb = max(0, self.peak - self.base) / 2**20


def timed(fn, device: torch.device, repeat: int):
    """(best seconds, result, peak MB of the best run)."""
    best = None
    for _ in range(repeat):
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            result = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        if best is None or seconds < best[0]:
            best = (seconds, result, mem.mb)
    return best


def lower_bound(problem) -> float:
    """Seconds of one suffix forward pass per edge: per receiver, one pass from its layer on,
    times its number of senders."""
    graph, every = problem.graph, problem.graph.valid().to(problem.ablation.device)
    total = 0.0
    for k, inp in enumerate(graph.inputs):
        start = time.perf_counter()
        with torch.no_grad():
            forward_from(problem.weights, graph, problem.batch.clean, problem.ablation, every,
                         start=(inp.layer, inp.stage), outputs=problem.clean)
        if problem.ablation.is_cuda:
            torch.cuda.synchronize()
        total += (time.perf_counter() - start) * graph.n_avail[k]
    return total


def gpt2_small_shape(directory: Path) -> str:
    """A randomly initialised GPT-2-small-shaped model with our tokenizer, saved to ``directory``."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from discovery.zoo.corpus import vocabulary
    from discovery.zoo.language import build_tokenizer, save_tokenizer

    save_tokenizer(build_tokenizer(vocabulary()), directory, n_ctx=64)
    vocab = len(AutoTokenizer.from_pretrained(directory))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=768, n_layer=12, n_head=12,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return str(directory)


def bench_pair(model_name: str, task: str, args, rows: list[str]) -> None:
    model = load_model(model_name, device=args.device)
    device = model.device
    data = task_data(task, model, args.prompts, 0)
    fresh = lambda metric="kl": build_problem(model, data, metric=metric, ablation="corrupt")  # noqa: E731
    config = AlgorithmConfig(threshold=args.threshold, top_n=None)
    n_edges = fresh().graph.n_edges
    bound = min(lower_bound(fresh()) for _ in range(args.repeat))
    results = {}
    for method in ("acdc-reference", "acdc", "eap", "eap-ig"):
        metric = "kl" if method.startswith("acdc") else data.metric
        partial = method == "acdc-reference" and args.reference_edges and n_edges > args.reference_edges
        if partial:
            seconds, result, mb = _partial_reference(fresh(metric), config, args.reference_edges, device)
            seconds *= n_edges / args.reference_edges
        else:
            def go(m=method, metric=metric):
                problem = fresh(metric)
                return ALGORITHMS[m](problem, config), problem.forward_passes
            seconds, result, mb = timed(go, device, 1 if method == "acdc-reference" else args.repeat)
        results[method] = seconds
        passes = result[1] if isinstance(result, tuple) else result
        ref = results.get("acdc-reference")
        rows.append(
            f"| {model_name} | {task} | {n_edges} | {method} | {passes} | "
            f"{'~' if partial else ''}{seconds:.2f} | {mb:.0f} | "
            f"{(ref / seconds) if ref else float('nan'):.1f}x | {seconds / bound:.2f} |"
        )
    rows.append(f"| {model_name} | {task} | {n_edges} | lower bound | {n_edges} | {bound:.2f} | | | 1.00 |")
    print("\n".join(rows[-5:]), flush=True)


def _partial_reference(problem, config, n: int, device):
    """Reference ACDC on its first ``n`` edges (timed), for models where all would take hours."""
    graph = problem.graph
    mask = graph.valid().to(problem.ablation.device)
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        current = problem.run(mask)
        for u, k in graph.edges_in_order()[:n]:
            mask[u, k] = False
            without = problem.run(mask)
            if (without - current).item() < config.threshold:
                current = without
            else:
                mask[u, k] = True
        seconds = time.perf_counter() - start
    return seconds, n, mem.mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", default="multitask:ioi,multitask:greater_than,multitask-llama:ioi,"
                        "multitask-pythia:ioi,induction-2l:induction,induction-gt:induction")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--threshold", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gpt2-small", action="store_true")
    parser.add_argument("--reference-edges", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    from transformers.utils import logging

    logging.set_verbosity_error()
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()} threads"
    print(f"# discovery bench on {device_name}, torch {torch.__version__}, {args.prompts} prompts, "
          f"threshold {args.threshold}, best of {args.repeat}\n")
    rows = ["| model | task | edges | method | passes | seconds | peak MB | vs reference | vs lower bound |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(rows), flush=True)
    pairs = [p.split(":") for p in args.pairs.split(",") if p]
    with tempfile.TemporaryDirectory() as tmp:
        if args.gpt2_small:
            pairs.append((gpt2_small_shape(Path(tmp)), "ioi"))
        for model_name, task in pairs:
            bench_pair(model_name, task, args, rows)


if __name__ == "__main__":
    main()
