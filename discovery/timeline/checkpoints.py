"""Circuits over training: discover each task's circuit at every checkpoint of a run
(:func:`checkpoint_circuits`, one checkpoint: what a worker does for one step) and assemble the
timeline from them (:func:`discovery.timeline.result.assemble`, torch-free). :func:`timeline`
does both in one process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from discovery.circuit import Circuit
from discovery.discover import DiscoveryRequest, discover
from discovery.models import LoadedModel, load_model
from discovery.timeline.induction import induction_diagnostics
from discovery.timeline.result import Timeline, TimelineParams, assemble
from discovery.timeline.run import read_run

#: (done, total, message) after each discovered circuit
TimelineProgress = Callable[[int, int, str], None]
#: (task index, edges done, edges total) while one checkpoint's circuit of that task is searched
SearchProgress = Callable[[int, int, int], None]


def checkpoint_circuits(path: str | Path, tasks: Sequence[str], params: TimelineParams, *,
                        device: str = "cpu", model: LoadedModel | None = None,
                        circuit_id: Callable[[str], str] | None = None,
                        progress: SearchProgress | None = None,
                        done: Callable[[int, str], None] | None = None) -> tuple[dict[str, Circuit], dict | None]:
    """One checkpoint (the model directory ``path``, loaded once for all tasks): ``({task:
    circuit}, induction diagnostics or None)``. ``circuit_id(task)`` names each circuit (default:
    discovery's own id); ``progress`` reports the search of each task, ``done(i, task)`` each
    finished circuit."""
    model = model or load_model(str(path), device=device)
    circuits: dict[str, Circuit] = {}
    for i, task in enumerate(tasks):
        request = DiscoveryRequest(model=str(path), task=task, method=params.method,
                                   threshold=params.threshold, top_n=params.top_n, metric=params.metric,
                                   n_prompts=params.n_prompts, seed=params.seed, device=device)
        report = (lambda d, t, i=i: progress(i, d, t)) if progress else None
        circuit = discover(request, model=model, progress=report)
        circuits[task] = replace(circuit, id=circuit_id(task)) if circuit_id else circuit
        if done:
            done(i, task)
    diagnostics = induction_diagnostics(model, seed=params.seed) if params.wants_induction(tasks) else None
    return circuits, diagnostics


def timeline(run_dir: str | Path, tasks: list[str] | tuple[str, ...], *, method: str = "acdc",
             threshold: float = 0.01, top_n: int | None = None, metric: str | None = None,
             n_prompts: int = 50, seed: int = 0, level: float = 0.8,
             induction: bool | None = None, device: str = "cpu",
             progress: TimelineProgress | None = None) -> Timeline:
    """Discover each of ``tasks``' circuits at every checkpoint of the run in ``run_dir`` and
    analyse them (see :class:`Timeline`; the arguments are :class:`TimelineParams`'s). Each
    checkpoint's model is loaded once for all its tasks."""
    if not tasks:
        raise ValueError("tasks is empty: name at least one task, e.g. ['induction']")
    tasks = tuple(tasks)
    params = TimelineParams(method=method, threshold=threshold, top_n=top_n, metric=metric,
                            n_prompts=n_prompts, seed=seed, level=level, induction=induction)
    run = read_run(run_dir)
    total = len(run.checkpoints) * len(tasks)
    circuits: dict[tuple[int, str], Circuit] = {}
    diagnostics: dict[int, dict] = {}
    for n, checkpoint in enumerate(run.checkpoints):
        def finished(i: int, task: str, n: int = n, step: int = checkpoint.step) -> None:
            if progress:
                progress(n * len(tasks) + i + 1, total, f"step {step} {task}")

        found, diag = checkpoint_circuits(checkpoint.path, tasks, params, device=device, done=finished)
        circuits.update({(checkpoint.step, t): c for t, c in found.items()})
        if diag is not None:
            diagnostics[checkpoint.step] = diag
    return assemble(run, tasks, params, circuits, diagnostics)
