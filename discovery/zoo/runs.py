"""Training runs with checkpoints: which steps to save and the run manifest ``run.json``.

Torch-free on purpose: code that only reads runs (the API, workers, reports) imports this module
without loading torch. ``circuits train --checkpoints N`` (or ``--checkpoint-steps``) writes::

    DIR/                      the final model, exactly as a run without checkpoints
    DIR/run.json              the manifest (:class:`RunManifest`)
    DIR/checkpoints/step-000123/   one loadable model directory per checkpoint step

The manifest's JSON is a contract other code reads; :meth:`RunManifest.to_dict` is its exact shape.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

RUN = "run.json"
CHECKPOINTS = "checkpoints"


def checkpoint_path(step: int) -> str:
    """The checkpoint directory of ``step``, relative to the run directory
    (``checkpoints/step-000123``): zero-padded so directory listings sort by step."""
    return f"{CHECKPOINTS}/step-{step:06d}"


def log_spaced_steps(total: int, n: int) -> list[int]:
    """``n`` checkpoint steps in ``1..total``, spaced evenly in log(step), ascending and unique,
    always ending at ``total`` (and starting at 1). Early training changes fastest, so log spacing
    puts most checkpoints where the circuits form. Rounding can make two log points the same step;
    each step is then pushed up to the next free one, so exactly ``min(n, total)`` steps come back."""
    if n < 2:
        raise ValueError(f"--checkpoints must be at least 2 (got {n}): the first and last step "
                         "are always saved; use --checkpoint-steps for a single step")
    if total < 1:
        raise ValueError(f"steps must be at least 1 (got {total})")
    if total <= n:
        return list(range(1, total + 1))
    steps: list[int] = []
    for i in range(n):
        step = round(math.exp(math.log(total) * i / (n - 1)))
        lowest = steps[-1] + 1 if steps else 1
        highest = total - (n - 1 - i)  # leave room for the checkpoints still to place
        steps.append(min(max(step, lowest), highest))
    return steps


def parse_steps(text: str, total: int) -> list[int]:
    """``--checkpoint-steps 10,50,200`` -> ``[10, 50, 200]``: sorted, duplicates dropped, each
    step in ``1..total`` (the run's number of steps)."""
    steps = set()
    for part in text.split(","):
        part = part.strip()
        try:
            step = int(part)
        except ValueError:
            raise ValueError(f"--checkpoint-steps: {part!r} is not a step number; give "
                             "comma-separated integers such as 10,50,200") from None
        if not 1 <= step <= total:
            raise ValueError(f"--checkpoint-steps: step {step} is outside 1..{total} (the run's "
                             "steps); lower it or raise --steps")
        steps.add(step)
    if not steps:
        raise ValueError("--checkpoint-steps: give at least one step, such as 10,50,200")
    return sorted(steps)


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: its step, its directory relative to the run directory, the mean
    training loss over the (up to) 50 steps before it, and the per-task held-out scores (the same
    dict as a model card's ``eval``: task -> accuracy, answer_mass, metric, metric_mean, prompts)."""

    step: int
    path: str
    train_loss: float
    eval: dict[str, dict]

    def to_dict(self) -> dict:
        return {"step": self.step, "path": self.path, "train_loss": self.train_loss,
                "eval": self.eval}


@dataclass(frozen=True)
class RunManifest:
    """``run.json``: the recipe, seed, steps and architecture of a run, its checkpoints ascending by
    step, and where the final model lies (``"."``: the run directory itself)."""

    recipe: str
    seed: int
    steps: int
    arch: str
    checkpoints: list[Checkpoint] = field(default_factory=list)
    final: str = "."

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "seed": self.seed, "steps": self.steps, "arch": self.arch,
                "checkpoints": [c.to_dict() for c in self.checkpoints], "final": self.final}

    @classmethod
    def from_dict(cls, data: dict, *, source: str = RUN) -> RunManifest:
        """Parse and check a manifest; a ValueError names the field that is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        wanted = {"recipe": str, "seed": int, "steps": int, "arch": str, "checkpoints": list,
                  "final": str}
        for key, kind in wanted.items():
            if key not in data:
                raise ValueError(f"{source}: missing field {key!r}; rewrite it with "
                                 "`circuits train --checkpoints N`")
            if not isinstance(data[key], kind) or isinstance(data[key], bool):
                raise ValueError(f"{source}: field {key!r} must be a {kind.__name__}, "
                                 f"got {data[key]!r}")
        checkpoints = []
        for i, c in enumerate(data["checkpoints"]):
            where = f"{source}: checkpoints[{i}]"
            if not isinstance(c, dict):
                raise ValueError(f"{where} must be an object")
            for key, kind in (("step", int), ("path", str), ("train_loss", (int, float)),
                              ("eval", dict)):
                if key not in c:
                    raise ValueError(f"{where}: missing field {key!r}")
                if not isinstance(c[key], kind) or isinstance(c[key], bool):
                    raise ValueError(f"{where}: field {key!r} has the wrong type ({c[key]!r})")
            if checkpoints and c["step"] <= checkpoints[-1].step:
                raise ValueError(f"{where}: steps must ascend ({c['step']} after "
                                 f"{checkpoints[-1].step})")
            checkpoints.append(Checkpoint(c["step"], c["path"], float(c["train_loss"]), c["eval"]))
        return cls(data["recipe"], data["seed"], data["steps"], data["arch"], checkpoints,
                   data["final"])


def write_run(directory: Path, manifest: RunManifest) -> Path:
    """Write ``directory/run.json``; returns its path."""
    path = Path(directory) / RUN
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return path


def load_run(directory: str | Path) -> RunManifest:
    """Read ``directory/run.json``. A ValueError says what is missing or malformed, and how to fix it."""
    path = Path(directory) / RUN
    if not path.is_file():
        raise ValueError(f"no {RUN} in {directory}: it is written by "
                         "`circuits train --recipe R --out DIR --checkpoints N`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); retrain with --checkpoints") from None
    return RunManifest.from_dict(data, source=str(path))
