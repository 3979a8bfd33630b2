"""A checkpointed training run as the timeline reads it: :func:`discovery.zoo.runs.load_run`'s
manifest (``DIR/run.json``, written by ``circuits train --checkpoints N``) with each checkpoint's
directory resolved against DIR and checked to be a loadable model directory, so a timeline fails
before its first discovery rather than half-way through."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from discovery.zoo.runs import load_run


@dataclass(frozen=True)
class Checkpoint:
    """One saved step of a run: where its model lies (absolute), its train loss and held-out
    scores (``eval[task]["accuracy"]`` etc., as on a model card)."""

    step: int
    path: Path
    train_loss: float | None = None
    eval: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """A checkpointed run: its directory, recipe name, seed, total steps, architecture and
    checkpoints, ascending by step (the last one is the latest model the timeline analyses)."""

    dir: Path
    recipe: str
    seed: int
    steps: int
    arch: str
    checkpoints: tuple[Checkpoint, ...]


def read_run(run_dir: str | Path) -> Run:
    """The run in ``run_dir``; a missing or malformed field raises ValueError naming it and the
    fix (discovery.zoo.runs), as does a checkpoint path that is not a model directory."""
    run_dir = Path(run_dir)
    manifest = load_run(run_dir)
    checkpoints = []
    for i, entry in enumerate(manifest.checkpoints):
        path = (run_dir / entry.path).resolve()
        if not (path / "config.json").exists():
            raise ValueError(f"{run_dir / 'run.json'}: checkpoints[{i}].path {entry.path!r} is not "
                             f"a model directory (no config.json under {path}); retrain with "
                             "`circuits train --checkpoints N`")
        checkpoints.append(Checkpoint(step=entry.step, path=path, train_loss=entry.train_loss,
                                      eval=entry.eval))
    if not checkpoints:
        raise ValueError(f"{run_dir / 'run.json'}: checkpoints is empty; a timeline needs at least "
                         "one (`circuits train --checkpoints N`)")
    return Run(dir=run_dir, recipe=manifest.recipe, seed=manifest.seed, steps=manifest.steps,
               arch=manifest.arch, checkpoints=tuple(checkpoints))
