"""``circuits discover`` and ``circuits show``: find a circuit, look at one.

torch loads inside the handlers (the API process imports this package and must not load torch).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("discover", help="find the circuit of a model for a task")
    d.add_argument("--model", required=True, help="shipped name, local directory or hub name")
    d.add_argument("--task", required=True, help="built-in task name or custom-task JSON file")
    d.add_argument("--method", default="acdc", help="acdc, acdc-reference, eap, eap-ig, eap-ig+acdc")
    d.add_argument("--threshold", type=float, default=0.01, help="ACDC's tau / attribution cut (> 0)")
    d.add_argument("--top-n", type=int, help="attribution methods: keep the n best edges")
    d.add_argument("--metric", help="kl, logit_diff, prob_diff, logprob (default: kl for ACDC)")
    d.add_argument("--ablation", default="corrupt", choices=["corrupt", "mean", "zero"])
    d.add_argument("--granularity", default="edges", choices=["edges", "neurons"])
    d.add_argument("--n-prompts", type=int, default=50, help="prompt pairs (built-in tasks)")
    d.add_argument("--ig-steps", type=int, default=5, help="EAP-IG integration steps")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto", help="auto, cpu or cuda")
    d.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="what the weights and passes run in (metrics accumulate in fp32)")
    d.add_argument("--kv-inputs", default="head", choices=["head", "group"],
                   help="grouped-query attention: k/v inputs per query head (default, "
                   "MIB-compatible) or one per key-value group (nodes a<L>.kv<G>)")
    d.add_argument("--max-batch-memory", type=memory_size, metavar="SIZE",
                   help="memory one batched pass may use, e.g. 2GiB or 500MB (default: half the "
                   "available memory); EAP-IG's and ACDC's batches are split to fit")
    d.add_argument("--edge-order", default="ours",
                   help="ACDC's edge order: ours (default), auto-circuit (as auto_circuit visits "
                   "them: receiver layers latest first, by name within a layer) or random:SEED")
    d.add_argument("--out", type=Path, required=True, help="where to write the circuit JSON")
    d.set_defaults(handler=run_discover, fast_exit=True)  # no module teardown at exit (api.cli._exit_now)

    s = sub.add_parser("show", help="summarise a circuit JSON file and draw it")
    s.add_argument("circuit", type=Path)
    s.add_argument("--draw", type=Path, help="drawing to write (.png or .svg; default beside the JSON)")
    s.add_argument("--format", dest="fmt", help="also export: mib, graphml, dot")
    s.set_defaults(handler=run_show)


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30}


def memory_size(text: str) -> int:
    """``--max-batch-memory``: bytes from ``2GiB``, ``500MB``, ``1.5e9`` (a plain number is bytes)."""
    raw = text.strip().lower()
    number = raw.rstrip("kmgib")
    unit = raw[len(number):]
    try:
        value = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(
            f"--max-batch-memory: cannot read {text!r}; give bytes or a size like 2GiB, 500MB") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--max-batch-memory must be positive (got {text!r})")
    return int(value)


def run_discover(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from discovery.discover import DiscoveryRequest, discover
    from discovery.models import resolve_device

    # transformers' warnings off without importing it (~1.2 s; a shipped model never needs it):
    # it reads this variable when it is first imported.
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.set_verbosity_error()
    if args.threshold <= 0:
        raise ValueError(f"--threshold must be > 0 (got {args.threshold}); try 0.01")
    resolve_device(args.device)  # a clear error before anything is loaded
    request = DiscoveryRequest(
        model=args.model, task=args.task, method=args.method, threshold=args.threshold,
        top_n=args.top_n, metric=args.metric, ablation=args.ablation, n_prompts=args.n_prompts,
        seed=args.seed, device=args.device, ig_steps=args.ig_steps, granularity=args.granularity,
        dtype=args.dtype, max_batch_memory=args.max_batch_memory, kv_inputs=args.kv_inputs,
        edge_order=args.edge_order,
    )
    bars: list[tqdm] = []  # opened at the first report, so a bad argument prints no empty bar

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=f"{args.method} {args.task}", unit="edge", file=sys.stderr))
        bars[0].total, bars[0].n = total, done
        bars[0].refresh()

    try:
        circuit = discover(request, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(circuit.to_json())
    print(summary(circuit))
    print(f"wrote {args.out}")
    return 0


def summary(circuit) -> str:
    p, m = circuit.provenance, circuit.metrics
    total = p.params.get("edges_total")
    share = f" ({len(circuit.edges) / total:.1%} of {int(total)})" if total else ""
    neurons = sum(1 for n in circuit.nodes if n.kind == "neuron")
    faith = "n/a" if m.faithfulness_task is None else f"{m.faithfulness_task:.3f}"
    search = "n/a" if m.faithfulness_search is None else f"{m.faithfulness_search:.3f}"
    return (f"{p.model} / {p.task} / {p.method} (threshold {p.threshold}, metric {p.params.get('metric')})\n"
            f"  edges {len(circuit.edges)}{share}, nodes {len(circuit.nodes) - neurons}, neurons {neurons}\n"
            f"  {m.name}: full {_num(m.full)}, empty {_num(m.empty)}, circuit {_num(m.circuit)}; "
            f"faithfulness (task metric {m.name}) {faith}\n"
            f"  faithfulness (search metric {m.search_metric or 'n/a'}) {search}\n"
            f"  device {p.device}, search {p.timings.get('search_s', 0):.2f}s")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run_show(args: argparse.Namespace) -> int:
    from discovery.circuit import Circuit
    from discovery.export import export

    if not args.circuit.exists():
        raise ValueError(f"{args.circuit} does not exist")
    try:
        circuit = Circuit.from_json(args.circuit.read_text())
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{args.circuit} is not a circuit JSON file ({exc})") from None
    print(summary(circuit))
    heads = sorted({n.name for n in circuit.nodes if n.kind == "attention"})
    print(f"  heads: {', '.join(heads) or 'none'}")
    drawing = args.draw or args.circuit.with_suffix(".png")
    export(circuit, drawing.suffix.lstrip("."), drawing)
    print(f"drew {drawing}")
    if args.fmt:
        target = args.circuit.with_suffix(f".{args.fmt}")
        export(circuit, args.fmt, target)
        print(f"exported {target}")
    return 0
