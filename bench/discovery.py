"""Discovery speed and memory: reference ACDC, fast ACDC, EAP and EAP-IG on each model and task,
against the lower bound of one suffix forward pass per edge. Prints a markdown table; ratios are
against numbers measured in the same run.

    python bench/discovery.py                       # shipped models on this machine (CPU)
    python bench/discovery.py --dtype bfloat16      # the same in bf16 (metrics still fp32)
    python bench/discovery.py --device cuda --gpt2-small --reference-edges 300
    python bench/discovery.py --sweep --pairs multitask:ioi --threads 1   # threshold sweeps (bench/sweep.py)

Every row (model, task, method) runs in a fresh subprocess, so its ``peak MiB`` is that row's
alone: on CPU the process's maximum resident set (``resource.getrusage(...).ru_maxrss``: torch,
the model and the search; ``before`` is the same high-water mark just before the search), on CUDA
``torch.cuda.max_memory_allocated`` during the search (``before``: allocated when it starts).

``--gpt2-small`` adds a randomly initialised model of GPT-2 small's shape (12 x 12, d 768, MLPs;
32,491 edges): random weights are fine for speed. Its reference ACDC is timed on the first
``--reference-edges`` edges and extrapolated (marked ~).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discovery.algorithms import ALGORITHMS, AlgorithmConfig  # noqa: E402
from discovery.discover import build_problem, task_data  # noqa: E402
from discovery.models import load_model  # noqa: E402
from discovery.patching import forward_from  # noqa: E402


class PeakMemory:
    """Memory of a block, in MiB: ``before`` and ``peak``. CUDA: the allocator's peak during the
    block. CPU: the process's maximum resident set (ru_maxrss, KiB on Linux), which only grows,
    so run one row per fresh process (:func:`main` does) for it to be that row's."""

    def __init__(self, device: torch.device):
        self.device = device

    @staticmethod
    def _max_rss() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated() / 2**20
        else:
            self.before = self._max_rss()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.peak = self._max_rss()


def timed(fn, device: torch.device, repeat: int):
    """(best seconds, result of the best run)."""
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if best is None or seconds < best[0]:
            best = (seconds, result)
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


def floor_seconds(model, problem, repeat: int) -> tuple[float, float]:
    """The plain Hugging Face model on the same clean batch: (forward, forward + backward) seconds,
    best of ``repeat``. Attribution's floor: EAP = forward (the corrupted run) + forward+backward;
    EAP-IG with s steps = forward + s x forward+backward."""
    hf, tokens = model.hf_model, problem.batch.clean
    for p in hf.parameters():  # attribution needs gradients at activations only, not weights
        p.requires_grad_(False)
    embedded = hf.get_input_embeddings()(tokens).detach()

    def forward() -> None:
        with torch.no_grad():
            hf(input_ids=tokens)

    def forward_backward() -> None:
        x = embedded.clone().requires_grad_()
        hf(inputs_embeds=x).logits[:, -1].float().sum().backward()

    forward(), forward_backward()  # warm-up
    return (timed(forward, problem.ablation.device, repeat)[0],
            timed(forward_backward, problem.ablation.device, repeat)[0])


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


METHODS = ("acdc-reference", "acdc", "eap", "eap-ig")


def run_row(model_name: str, task: str, method: str, args) -> dict:
    """One row, measured in this process: seconds (best of ``--repeat``), passes, memory."""
    model = load_model(model_name, device=args.device)
    device = model.device
    data = task_data(task, model, args.prompts, 0)
    metric = "kl" if method.startswith("acdc") or method == "lower bound" else data.metric
    fresh = lambda: build_problem(model, data, metric=metric, ablation="corrupt", dtype=args.dtype)  # noqa: E731
    config = AlgorithmConfig(threshold=args.threshold, top_n=None, max_batch_memory=args.max_batch_memory)
    problem = fresh()
    n_edges, partial = problem.graph.n_edges, False
    with PeakMemory(device) as mem:
        if method == "floor":
            forward, both = floor_seconds(model, problem, args.repeat)
            return {"edges": n_edges, "seconds": both, "forward": forward, "passes": 0, "partial": False,
                    "before_mib": mem.before, "peak_mib": mem.before}
        if method == "lower bound":
            seconds, passes = min(lower_bound(fresh()) for _ in range(args.repeat)), n_edges
        elif method == "acdc-reference" and args.reference_edges and n_edges > args.reference_edges:
            seconds, passes = _partial_reference(problem, config, args.reference_edges)
            seconds, partial = seconds * n_edges / args.reference_edges, True
        else:
            def go():
                p = fresh()
                ALGORITHMS[method](p, config)
                return p.forward_passes
            seconds, passes = timed(go, device, 1 if method == "acdc-reference" else args.repeat)
    return {"edges": n_edges, "seconds": seconds, "passes": passes, "partial": partial,
            "before_mib": mem.before, "peak_mib": mem.peak}


def bench_pair(model_name: str, task: str, args, rows: list[str]) -> None:
    """The rows of one (model, task), each from a fresh subprocess (its own peak memory)."""
    results = {}
    for method in (*METHODS, "lower bound", "floor"):
        command = [sys.executable, __file__, "--one", model_name, task, method,
                   *(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                     if k in ("device", "prompts", "threshold", "repeat", "reference_edges", "dtype")),
                   *([f"--max-batch-memory={args.max_batch_memory}"] if args.max_batch_memory else []),
                   *([f"--threads={args.threads}"] if args.threads else [])]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"bench row {model_name} {task} {method} failed:\n{out.stderr[-3000:]}")
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    floor = results.pop("floor")
    bound, ref = results["lower bound"]["seconds"], results["acdc-reference"]["seconds"]
    for method, r in results.items():
        versus = "" if method == "lower bound" else f"{ref / r['seconds']:.1f}x"
        rows.append(
            f"| {model_name} | {task} | {r['edges']} | {method} | {args.dtype} | {r['passes']} | "
            f"{'~' if r['partial'] else ''}{r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['before_mib']:.0f} | "
            f"{versus} | {r['seconds'] / bound:.2f} | {_versus_floor(method, r['seconds'], floor)} |"
        )
    print("\n".join(rows[-len(results):]), flush=True)


def _versus_floor(method: str, seconds: float, floor: dict) -> str:
    """``floor s (ratio)`` for the attribution rows: the plain model's forward + forward/backward
    passes the method needs (EAP one, EAP-IG one per step), on the same batch."""
    steps = {"eap": 1, "eap-ig": AlgorithmConfig().ig_steps}.get(method)
    if steps is None:
        return ""
    bound = floor["forward"] + steps * floor["seconds"]
    return f"{bound:.2f} ({seconds / bound:.1f}x)"


def _partial_reference(problem, config, n: int):
    """Reference ACDC on its first ``n`` edges (timed), for models where all would take hours:
    (seconds, passes)."""
    graph = problem.graph
    mask = graph.valid().to(problem.ablation.device)
    start = time.perf_counter()
    current = problem.run(mask)
    for u, k in graph.edges_in_order()[:n]:
        mask[u, k] = False
        without = problem.run(mask)
        if (without - current).item() < config.threshold:
            current = without
        else:
            mask[u, k] = True
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", default="multitask:ioi,multitask:greater_than,multitask-llama:ioi,"
                        "multitask-pythia:ioi,multitask-gemma2:ioi,induction-2l:induction,"
                        "induction-gt:induction")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--threshold", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gpt2-small", action="store_true")
    parser.add_argument("--reference-edges", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max-batch-memory", type=int, help="bytes one batched pass may use "
                        "(default: half the available memory); smaller splits EAP-IG and ACDC batches")
    parser.add_argument("--sweep", action="store_true", help="time threshold sweeps (bench/sweep.py) instead")
    parser.add_argument("--sweep-methods", default="acdc,eap-ig", help="with --sweep")
    parser.add_argument("--sweep-grids", default="wide,narrow", help="with --sweep: wide and/or narrow")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "TASK", "METHOD"),
                        help="run one row in this process and print it as JSON (what each row's subprocess does)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    from transformers.utils import logging

    logging.set_verbosity_error()
    if args.one:
        print(json.dumps(run_row(*args.one, args)))
        return
    if args.sweep:
        from bench import sweep

        sweep.main(args)
        return
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()} threads"
    memory = ("torch.cuda.max_memory_allocated during the search" if args.device.startswith("cuda")
              else "ru_maxrss of a fresh process per row (torch + model + search)")
    print(f"# discovery bench on {device_name}, torch {torch.__version__}, {args.prompts} prompts, "
          f"threshold {args.threshold}, {args.dtype}, best of {args.repeat}, max batch memory "
          f"{args.max_batch_memory or 'default'}; peak MiB: {memory}; "
          "before: the same just before the search\n")
    rows = ["| model | task | edges | method | dtype | passes | seconds | peak MiB | before MiB | vs reference | "
            "vs lower bound | floor s (ratio) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(rows), flush=True)
    pairs = [p.split(":") for p in args.pairs.split(",") if p]
    with tempfile.TemporaryDirectory() as tmp:
        if args.gpt2_small:
            pairs.append((gpt2_small_shape(Path(tmp)), "ioi"))
        for model_name, task in pairs:
            bench_pair(model_name, task, args, rows)


if __name__ == "__main__":
    main()
