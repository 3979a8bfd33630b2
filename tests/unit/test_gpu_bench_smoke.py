"""bench/gpu_arch.py --quick on CPU: the GPU bench's whole path (random-weight models built from
configs, random prompts, EAP-IG / EAP / bounded fast ACDC, the table) on its tiny shapes, in a
subprocess, so the script is known to run before it first meets a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECEIVERS = 5  # ACDC over the last 5 receivers of the tiny graphs (110 edges each): a bounded run


def _rows(stdout: str) -> list[list[str]]:
    """The table's data rows, as cells (header and separator dropped)."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert lines and lines[0].startswith("| model | dtype | method |"), stdout
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_quick_bench_prints_every_row_with_numbers():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_arch.py"), "--quick", "--device", "cpu",
                          "--threads", "1", "--acdc-receivers", str(RECEIVERS)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "# GPU architecture bench on CPU x1 threads" in out.stdout
    assert "ru_maxrss" in out.stdout  # the header says what peak memory means on CPU
    rows = _rows(out.stdout)
    seen = {(r[0], r[1], r[2]) for r in rows}
    expected = {(f"{m} (tiny)", d, method) for m, dtypes in
                (("llama-1b", ("float32", "bfloat16")), ("gpt2-small", ("float32",)))
                for d in dtypes for method in ("eap-ig", "eap", "acdc")}
    assert seen == expected and len(rows) == len(expected)
    for model, dtype, method, edges, visited, kept, seconds, rate, peak, versus, by_rate, weighted in rows:
        assert int(edges) == 110, model  # 2 layers x 4 heads, MLPs: 110 edges
        assert float(seconds) > 0 and float(rate) > 0 and float(peak) > 0
        assert 0 <= int(kept) <= int(visited)
        assert (versus.endswith("x") and float(versus[:-1]) > 0) == (dtype == "bfloat16")
        if method == "acdc":
            assert 0 < int(visited) < int(edges)  # only the last receivers' edges
            assert by_rate.startswith("~") and weighted.startswith("~")
            assert float(weighted[1:]) >= float(seconds)
        else:
            assert int(visited) == int(edges) and by_rate == weighted == ""


def test_bounded_acdc_decides_as_the_whole_run():
    """The bench's bounded ACDC is the product's run stopped early: on the edges it visited, its
    kept/removed decisions are the whole run's, and it visited exactly the last receivers' edges."""
    import importlib.util

    import torch

    from discovery.algorithms import ALGORITHMS, AlgorithmConfig
    from discovery.arch import graph_shape, read_weights
    from discovery.graph import Graph
    from discovery.problem import Problem

    spec = importlib.util.spec_from_file_location("gpu_arch", ROOT / "bench" / "gpu_arch.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_arch", bench)  # its dataclass looks its module up by name
    spec.loader.exec_module(bench)
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    weights = read_weights(bench.build_model("llama-1b", True, cpu))
    graph = Graph(graph_shape(weights))

    def fresh() -> Problem:
        return Problem.build(weights, graph, bench.random_batch(512, 4, 8, "kl", cpu), metric="kl")

    config = AlgorithmConfig(threshold=0.01)
    whole = ALGORITHMS["acdc"](fresh(), config).mask
    order = graph.edges_in_order()
    seconds, visited, kept, by_rate, weighted = bench.acdc_bounded(fresh(), config, RECEIVERS, 60.0, cpu)
    last = set(list(dict.fromkeys(k for _, k in order))[:RECEIVERS])
    assert visited == sum(1 for _, k in order if k in last) < len(order)
    assert kept == sum(bool(whole[u, k]) for u, k in order[:visited])
    assert 0 < kept < visited
    assert seconds > 0 and by_rate > seconds and weighted > seconds  # the rest of the graph costs more
