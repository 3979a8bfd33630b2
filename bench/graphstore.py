"""Graph-store benchmark: write throughput of a full GPT-2-small circuit (32,491 edges) and the
latency of the task x task overlap matrix over 10 and 100 stored circuits, against the Neo4j of
the settings (``circuits services up``). Prints a table; everything it stores is deleted after.

    python bench/graphstore.py [--repeats 3] [--share 0.02] [--sizes 10,100] [--only write|matrix]

The matrix circuits are synthetic ACDC-sized circuits on GPT-2 small's graph: each keeps a random
``--share`` of the 32,491 edges (2%: about 650 edges, 100-150 components), with random scores.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from neo4j import Driver, GraphDatabase

# Run as a script, bench/ comes first on the path and bench/discovery.py would shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discovery.circuit import Circuit, Edge, GraphShape, Metrics, Node, Provenance  # noqa: E402
from graphstore.overlap import overlap_matrix  # noqa: E402
from graphstore.store import (  # noqa: E402
    delete_circuit,
    ensure_schema,
    list_circuits,
    read_circuit,
    write_circuit,
)
from workers.settings import get_settings  # noqa: E402

GPT2_SMALL = GraphShape(12, 12)
WRITE_TARGET_S = 1.0  # issue 16
MATRIX_TARGET_S = 0.2


def circuit(circuit_id: str, model: str, task: str, *, share: float, seed: int) -> Circuit:
    """A circuit on GPT-2 small's graph keeping ``share`` of its edges (all for 1.0), with
    random scores, and every edge's score in ``edge_scores`` as discovery records them."""
    rng = random.Random(seed)
    every = GPT2_SMALL.edges()
    scores = {name: rng.uniform(-1, 1) for name in every}
    edges = tuple(Edge.parse(n, scores[n]) for n in every if share >= 1 or rng.random() < share)
    names = sorted({e.src for e in edges} | {e.dst for e in edges})
    return Circuit(
        id=circuit_id, nodes=tuple(Node.parse(n) for n in names), edges=edges,
        metrics=Metrics(full=3.0, empty=0.0, circuit=rng.uniform(1, 3), name="logit_diff"),
        provenance=Provenance(model=model, task=task, method="bench", threshold=0.01,
                              created_at=f"2025-01-01T00:00:{seed % 60:02d}"),
        graph=GPT2_SMALL, edge_scores=scores,
    )


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_write(driver: Driver, db: str, model: str, repeats: int) -> list[list[str]]:
    """Fresh writes, rewrites and reads of the full 32,491-edge circuit."""
    full = [circuit(f"{model}-full-{i}", model, "full", share=1.0, seed=i) for i in range(repeats)]
    n = len(full[0].edges)
    first = [timed(lambda c=c: write_circuit(driver, c, database=db)) for c in full]
    again = [timed(lambda c=c: write_circuit(driver, c, database=db)) for c in full]
    read = [timed(lambda c=c: read_circuit(driver, c.id, database=db)) for c in full]
    assert read_circuit(driver, full[0].id, database=db) == full[0]
    write_s = statistics.median(first)
    return [
        [f"write {n:,}-edge circuit (GPT-2 small)", _s(first), f"{n / write_s:,.0f} edges/s",
         _verdict(write_s, WRITE_TARGET_S)],
        ["rewrite it (same id: replace)", _s(again), f"{n / statistics.median(again):,.0f} edges/s", ""],
        ["read it back (exact Circuit)", _s(read), f"{n / statistics.median(read):,.0f} edges/s", ""],
    ]


def bench_matrix(driver: Driver, db: str, model: str, size: int, share: float,
                 repeats: int) -> list[list[str]]:
    """Store ``size`` circuits of one model (one per task), then time the overlap matrix."""
    cs = [circuit(f"{model}-{i:03d}", model, f"task{i:03d}", share=share, seed=1000 + i)
          for i in range(size)]
    store_s = sum(timed(lambda c=c: write_circuit(driver, c, database=db)) for c in cs)
    overlap_matrix(driver, model, database=db)  # warm the plan cache, as a serving process is
    runs = [timed(lambda: overlap_matrix(driver, model, database=db)) for _ in range(max(repeats, 5))]
    edges = statistics.mean(len(c.edges) for c in cs)
    median = statistics.median(runs)
    target = _verdict(median, MATRIX_TARGET_S) if size == 10 else ""
    return [[f"overlap matrix, {size} circuits ({edges:,.0f} edges each)", _s(runs),
             f"{size * (size - 1) // 2:,} pairs", target],
            [f"  (storing those {size} circuits)", f"{store_s:.2f} s total", "", ""]]


def _s(values: list[float]) -> str:
    median = statistics.median(values)
    text = f"{median * 1000:.0f} ms" if median < 1 else f"{median:.2f} s"
    return f"{text} (median of {len(values)})"


def _verdict(value: float, target: float) -> str:
    limit = f"{target * 1000:.0f} ms" if target < 1 else f"{target:.0f} s"
    return f"{'ok' if value <= target else 'MISSED'}: target <= {limit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.02, help="edges kept by matrix circuits")
    parser.add_argument("--sizes", default="10,100", help="numbers of circuits for the matrix")
    parser.add_argument("--only", choices=("write", "matrix"), help="run one part of the benchmark")
    args = parser.parse_args()
    settings = get_settings()
    db = settings.neo4j_database
    namespace = f"bench@{uuid.uuid4().hex[:8]}"
    driver = GraphDatabase.driver(
        settings.neo4j_uri, auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value()))
    rows: list[list[str]] = []
    sizes = [] if args.only == "write" else args.sizes.split(",")
    models = [f"{namespace}-write"] + [f"{namespace}-m{size}" for size in sizes]
    try:
        ensure_schema(driver, database=db)
        if args.only != "matrix":
            rows += bench_write(driver, db, models[0], args.repeats)
        for size, model in zip(sizes, models[1:], strict=True):
            rows += bench_matrix(driver, db, model, int(size), args.share, args.repeats)
    finally:
        for model in models:
            for summary in list_circuits(driver, database=db, model=model, limit=100_000):
                delete_circuit(driver, summary.id, database=db)
        driver.close()
    print(f"graph store, Neo4j at {settings.neo4j_uri}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in [["what", "time", "rate", "target"], ["-" * w for w in widths], *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
