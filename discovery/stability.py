"""How stable a circuit is: the same request re-run under other edge orders and other prompt
draws, each re-run's circuit compared with the original by the Jaccard index of their edge sets.

ACDC decides edges one at a time, so its circuit depends on the order it visits them in
(:mod:`discovery.orders`) and on the prompts it measures on. A circuit whose edges survive every
re-run is a finding about the model; one that changes with the order is partly a finding about
the search. The score:

* ``orders``: N re-runs on the same prompts, edges visited in ``random:0`` ... ``random:N-1``
  (methods that score every edge at once have no order: n 0);
* ``prompts``: N re-runs in the request's own order on other prompts (a built-in task: fresh draws,
  seeds ``seed+1`` ...; a custom task: bootstrap resamples of its pairs);
* ``core``: the circuit's edges kept by every re-run, and each edge's share of re-runs keeping it;
* ``auto_circuit``: for ACDC, the Jaccard with the circuit found in auto-circuit's order (how far a
  second tool at the same threshold may land).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace

from discovery.circuit import Circuit
from discovery.discover import EDGE_ORDERS, DiscoveryRequest, discover, task_data
from discovery.models import LoadedModel, load_model
from discovery.tasks.base import TaskData

#: Most re-runs of each kind one score may ask for (each is a full search).
MAX_RERUNS = 50

#: progress(done, total) in re-runs
RunProgress = Callable[[int, int], None]


def jaccard(a: set[str], b: set[str]) -> float:
    """|a & b| / |a | b|; 1.0 for two empty sets (they agree)."""
    return len(a & b) / len(a | b) if a | b else 1.0


def summarise(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, standard deviation (sample; 0 for one value), min and max; None when empty."""
    if not values:
        return {"jaccard_mean": None, "jaccard_std": None, "jaccard_min": None, "jaccard_max": None}
    return {"jaccard_mean": statistics.fmean(values),
            "jaccard_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "jaccard_min": min(values), "jaccard_max": max(values)}


def resampled(request: DiscoveryRequest, model: LoadedModel, data: TaskData | None,
              i: int) -> tuple[DiscoveryRequest, TaskData]:
    """The ``i``-th prompt resample: a fresh draw of a built-in task (seed ``seed + 1 + i``), or a
    bootstrap of a custom task's pairs (with replacement, seeded the same way)."""
    seed = request.seed + 1 + i
    if data is None:
        return replace(request, seed=seed), task_data(request.task, model, request.n_prompts, seed)
    pairs = random.Random(seed).choices(data.pairs, k=len(data.pairs))
    return replace(request, seed=seed), replace(data, pairs=tuple(pairs))


def stability(request: DiscoveryRequest, circuit: Circuit | None = None, *, orders: int = 10,
              resamples: int = 10, model: LoadedModel | None = None, data: TaskData | None = None,
              progress: RunProgress | None = None) -> dict:
    """The stability score of ``circuit`` (found by ``request``; discovered here when None) as a
    JSON-able dict (:attr:`Circuit.stability`). ``data``: a custom task's pairs."""
    for name, n in (("orders", orders), ("resamples", resamples)):
        if not 0 <= n <= MAX_RERUNS:
            raise ValueError(f"{name} must be between 0 and {MAX_RERUNS} (got {n}); 10 is usual")
    ordered = request.method in EDGE_ORDERS
    n_orders = orders if ordered else 0
    total = n_orders + resamples + (circuit is None) + ordered
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    model = model or load_model(request.model, device=request.device)
    if circuit is None:
        circuit = discover(request, model=model, data=data)
        step()
    base = {e.name for e in circuit.edges}
    reruns: list[set[str]] = []
    order_j, prompt_j = [], []
    for i in range(n_orders):
        edges = _edges(discover(replace(request, edge_order=f"random:{i}"), model=model, data=data))
        order_j.append(jaccard(base, edges))
        reruns.append(edges)
        step()
    for i in range(resamples):
        other, pairs = resampled(request, model, data, i)
        edges = _edges(discover(other, model=model, data=pairs))
        prompt_j.append(jaccard(base, edges))
        reruns.append(edges)
        step()
    cross = None
    if ordered:
        cross = jaccard(base, _edges(discover(replace(request, edge_order="auto-circuit"),
                                              model=model, data=data)))
        step()
    share = {e: sum(e in r for r in reruns) / len(reruns) for e in sorted(base)} if reruns else {}
    core = sorted(e for e, s in share.items() if s == 1.0)
    return {
        "edges": len(base),
        "edge_order": request.edge_order if ordered else None,
        "orders": {"n": n_orders, "orders": [f"random:{i}" for i in range(n_orders)],
                   "jaccard": order_j, **summarise(order_j)},
        "prompts": {"n": resamples, "seeds": [request.seed + 1 + i for i in range(resamples)],
                    "draw": "bootstrap of the pairs" if data is not None else "fresh draw",
                    "jaccard": prompt_j, **summarise(prompt_j)},
        "core": core if reruns else None,
        "core_share": len(core) / len(base) if reruns and base else None,
        "edge_share": share,
        "auto_circuit": {"jaccard": cross} if cross is not None else None,
    }


def stability_circuit(request: DiscoveryRequest, *, orders: int = 10, resamples: int = 10,
                      model: LoadedModel | None = None, data: TaskData | None = None,
                      progress: RunProgress | None = None) -> Circuit:
    """The request's circuit with its stability score attached."""
    model = model or load_model(request.model, device=request.device)
    circuit = discover(request, model=model, data=data)
    score = stability(request, circuit, orders=orders, resamples=resamples, model=model, data=data,
                      progress=progress)
    return replace(circuit, stability=score)


def _edges(circuit: Circuit) -> set[str]:
    return {e.name for e in circuit.edges}
