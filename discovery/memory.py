"""Memory budgets for batched passes: how many prompt rows fit in one forward(+backward).

EAP-IG runs ``steps * B`` prompts in one forward and backward, and fast ACDC runs up to
:data:`~discovery.algorithms.acdc.MAX_CHAIN` variants of ``B`` prompts in one suffix pass. On a
large model either can exceed the memory there is. The algorithms split those batches into chunks
of at most :func:`rows_that_fit` rows; the budget is ``AlgorithmConfig.max_batch_memory`` (bytes)
or, when that is None, half the memory available now (:func:`available_memory`).

The per-row cost is an estimate from the graph's sizes (:func:`bytes_per_row`); on CUDA an
underestimate is caught (``torch.OutOfMemoryError``) and the chunk halved (:func:`halving`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")

#: Share of the available memory a batched pass may use when no budget is given.
DEFAULT_SHARE = 0.5


def available_memory(device: torch.device) -> int:
    """Bytes free now: ``torch.cuda.mem_get_info`` on CUDA, else MemAvailable of /proc/meminfo
    (psutil where /proc is missing)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    import psutil

    return int(psutil.virtual_memory().available)


def batch_budget(max_batch_memory: int | None, device: torch.device) -> int:
    """The budget in bytes: ``max_batch_memory`` when given, else :data:`DEFAULT_SHARE` of
    :func:`available_memory`."""
    if max_batch_memory is not None:
        return int(max_batch_memory)
    return int(available_memory(device) * DEFAULT_SHARE)


def bytes_per_row(problem, *, backward: bool) -> int:  # noqa: ANN001 - a discovery.problem.Problem
    """Estimated bytes one prompt row costs in a patched pass (``backward``: one forward and
    backward, as EAP's). Per row of ``P`` positions, with ``U`` node outputs, ``I`` inputs, ``L``
    layers, ``H`` heads, d_model ``D`` and ``V`` logits: node outputs and inputs ``(U + I) * P * D``
    (twice with gradients: the deltas and their grads), per layer attention scores and pattern
    ``2 * H * P * P`` and an MLP of ~``8 * D`` per position, and the logits ``P * V`` (twice for
    log-softmax). Elements of the problem's dtype; a coarse bound, not an allocator trace."""
    graph, clean = problem.graph, problem.clean
    p, d = clean.shape[2], clean.shape[3]
    vocab = problem.reference.shape[-1]
    shape = graph.shape
    per_layer = 2 * shape.n_heads * p * p + 8 * d * p
    elements = (graph.n_upstream + graph.n_inputs) * p * d + shape.n_layers * per_layer + 2 * p * vocab
    if backward:
        elements *= 3  # saved activations, their gradients, the deltas' gradients
    return int(elements * clean.element_size())


def rows_that_fit(budget: int, row_bytes: int, total: int) -> int:
    """How many rows of ``row_bytes`` fit in ``budget`` bytes: between 1 and ``total``."""
    return max(1, min(total, budget // max(1, row_bytes)))


def halving(run: Callable[[int], T], rows: int) -> T:
    """``run(rows)``; on ``torch.OutOfMemoryError`` (CUDA) the cache is emptied and ``run`` retried
    with half the rows, down to one row (then the error is raised, saying so)."""
    while True:
        try:
            return run(rows)
        except torch.OutOfMemoryError as exc:
            if rows == 1:
                raise torch.OutOfMemoryError(
                    f"out of memory with one prompt row per pass ({exc}); use a smaller --dtype "
                    "(bfloat16), fewer prompts, or a device with more memory") from exc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            rows = max(1, rows // 2)
