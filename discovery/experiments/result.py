"""The Experiment result type: a competition experiment's inputs, every table it measured, and a
verdict per claim. Torch-free (like :mod:`discovery.circuit`): the graph store, the workers, the
API and the CLI read and write experiments without loading torch.

Names used throughout:

* a *pair* is two tasks ``(a, b)`` in the order the experiment was given them, keyed ``"a|b"``;
* a *set* of one pair is one of ``a`` (circuit A's components), ``b``, ``a&b`` (shared),
  ``a-b`` (in A, not in B) and ``b-a``; :func:`set_names` spells them for a pair;
* a *component* is a head ``a2.h1``, an MLP ``m3`` or a neuron ``m3.n17`` (never ``embed`` or
  ``logits``: they are the circuit's ends, not parts that can be ablated);
* an *effect* on a task is m(full) - m(ablated) under the task's metric (higher metrics are better
  for every task metric used here), so a positive effect means the ablation hurt the task.

Every claim carries a :class:`Verdict`: the claim in words, ``supported`` / ``not supported`` /
``inconclusive``, the statistic's name and value, its p-value and the control it was judged
against. Never a bare boolean.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

VerdictState = Literal["supported", "not supported", "inconclusive"]
Role = Literal["cooperative", "competitive", "mixed", "neutral"]
SetKind = Literal["nodes", "edges"]


def pair_key(a: str, b: str) -> str:
    return f"{a}|{b}"


def set_names(a: str, b: str) -> tuple[str, str, str, str, str]:
    """The five sets of pair (a, b): A, B, A∩B, A∖B, B∖A."""
    return (a, b, f"{a}&{b}", f"{a}-{b}", f"{b}-{a}")


@dataclass(frozen=True)
class Verdict:
    """One claim and what the data say about it."""

    claim: str
    state: VerdictState
    statistic: str  # e.g. "empirical p vs 20 random sets", "Spearman rho (alpha, win rate)"
    value: float | None
    p_value: float | None = None
    control: str = ""  # what it was compared with, in words
    detail: str = ""  # the reason, when not supported or inconclusive


@dataclass(frozen=True)
class ControlStats:
    """The same ablation done on ``n`` seeded random component sets of the same size and kind.

    ``pool`` says where they were drawn from: ``outside circuits`` (components in no circuit of the
    experiment) or ``outside set`` (anything not in the ablated set: the fallback when too few
    components lie outside the circuits, as in a 16-head model); ``distinct`` counts the different
    sets among the ``n`` (fewer than ``n`` when few exist). ``p_value`` is empirical and one-sided,
    (1 + #{random effect >= observed}) / (1 + n); ``z`` is None when the controls have no spread."""

    n: int
    distinct: int
    pool: str
    pool_size: int
    mean: float
    std: float
    z: float | None
    p_value: float


@dataclass(frozen=True)
class ComponentSets:
    """Shared and unique parts of one pair's circuits, at node and at edge level (edge names as in
    :class:`discovery.circuit.Edge`). Node lists hold ablatable components only."""

    pair: str
    nodes: dict[str, tuple[str, ...]]  # set name -> components
    edges: dict[str, tuple[str, ...]]  # set name -> edge names
    node_jaccard: float | None = None
    edge_jaccard: float | None = None


@dataclass(frozen=True)
class AblationCell:
    """Task ``task``'s metric with set ``set_name`` of pair ``pair`` ablated (level ``kind``)."""

    pair: str
    set_name: str
    kind: SetKind
    task: str
    size: int
    metric: float  # the task's metric, ablated
    full: float  # the task's metric, full model
    empty: float  # the task's metric, everything ablated
    faithfulness: float | None  # (metric - empty) / (full - empty): 1 = untouched, 0 = as if all ablated
    top1: float  # top-1 accuracy, ablated
    effect: float  # full - metric
    control: ControlStats | None
    verdict: Verdict


@dataclass(frozen=True)
class CrossFaithfulness:
    """Circuit of ``circuit_task`` alone (everything else ablated) run on ``eval_task``'s prompts."""

    circuit_task: str
    eval_task: str
    metric: str
    value: float
    full: float
    empty: float
    faithfulness: float | None
    top1: float


@dataclass(frozen=True)
class ConflictSummary:
    """One pair's conflict prompts: each prompt has an answer per task.

    ``win_rate[t]``: share of prompts where t's answer has the higher logit of the two;
    ``top1_rate[t]``: share where t's answer is the model's top token (``other``: neither);
    ``logit_diff``: mean logit(answer of a) - logit(answer of b), with its standard deviation."""

    pair: str
    source: str  # "builtin:<generator>" or "custom"
    n_prompts: int
    win_rate: dict[str, float]
    top1_rate: dict[str, float]
    logit_diff_mean: float
    logit_diff_std: float
    ablation: str  # how components are ablated on these prompts (they have no corrupted twins)


@dataclass(frozen=True)
class ComponentRole:
    """One component of a pair's circuits and its role in their competition.

    ``effects[task]``: the task's metric drop when this component alone is ablated, with its
    control (single random components of the same kind). ``dla_*``: its direct contribution to
    logit(a) - logit(b) on the conflict prompts (mean, t statistic over prompts, two-sided
    sign-flip p-value). ``conflict_shift``: change of the mean conflict logit difference when it
    is ablated (positive: its ablation moves the prompts towards a), with its control.
    ``favours``: the task whose answer it pushes (None when it pushes neither significantly).
    ``conflict_control.p_value`` is two-sided (a shift either way counts), unlike the one-sided
    p of ablation effects."""

    pair: str
    name: str
    kind: str
    membership: str  # the set it belongs to: "a&b", "a-b" or "b-a" (with the pair's task names)
    role: Role
    favours: str | None
    effects: dict[str, float]
    effect_controls: dict[str, ControlStats | None]
    dla_mean: float
    dla_t: float | None
    dla_p: float | None
    conflict_shift: float
    conflict_control: ControlStats | None
    verdict: Verdict
    #: per task, the state of "ablating it hurts <task> more than a random component of its kind"
    #: (the test behind ``hurts`` in the role; empty in experiments made before it was kept)
    effect_states: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DosePoint:
    alpha: float
    metrics: dict[str, float]  # each task's metric on its own prompts
    win_rate: float  # of the scaled circuit's task on the conflict prompts
    logit_diff: float  # mean conflict logit(a) - logit(b)


@dataclass(frozen=True)
class DoseResponse:
    """The unique components of ``scaled_task``'s circuit (within ``pair``) scaled by each alpha."""

    pair: str
    scaled_task: str
    components: tuple[str, ...]
    points: tuple[DosePoint, ...]
    verdict: Verdict  # "amplifying <task>'s unique components raises its win rate"


@dataclass(frozen=True)
class PairSummary:
    """What one pair's circuits do to each other, in one place (the store's circuit-to-circuit
    relationships): ``competition`` = mean shift of the conflict win rate towards a task when the
    other's unique components are ablated, averaged over both directions; ``cooperation`` = the
    smaller of the two tasks' faithfulness losses when the shared components are ablated."""

    pair: str
    circuits: tuple[str, str]
    competes: Verdict
    cooperates: Verdict
    competition: float
    cooperation: float


@dataclass(frozen=True)
class ExperimentProvenance:
    model_sha256: str = ""
    dataset_hashes: dict[str, str] = field(default_factory=dict)  # task -> dataset hash
    conflict_hashes: dict[str, str] = field(default_factory=dict)  # pair -> hash of its prompts
    versions: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    forward_passes: int = 0
    created_at: str = ""


@dataclass(frozen=True)
class Experiment:
    """A competition experiment: inputs, tables, verdicts, provenance. ``circuits[task]`` is the id
    of the circuit used for that task (discovered by the experiment's job, or given)."""

    id: str
    model: str
    tasks: tuple[str, ...]
    circuits: dict[str, str]
    ablation: str
    seed: int
    n_controls: int
    alphas: tuple[float, ...]
    n_prompts: int
    alpha_level: float = 0.05  # significance level of every verdict
    params: dict[str, Any] = field(default_factory=dict)
    sets: tuple[ComponentSets, ...] = ()
    ablations: tuple[AblationCell, ...] = ()
    cross: tuple[CrossFaithfulness, ...] = ()
    conflicts: tuple[ConflictSummary, ...] = ()
    components: tuple[ComponentRole, ...] = ()
    dose: tuple[DoseResponse, ...] = ()
    pairs: tuple[PairSummary, ...] = ()
    provenance: ExperimentProvenance = field(default_factory=ExperimentProvenance)

    @property
    def pair_keys(self) -> list[str]:
        return [pair_key(a, b) for i, a in enumerate(self.tasks) for b in self.tasks[i + 1:]]

    def cell(self, pair: str, set_name: str, task: str, kind: SetKind = "nodes") -> AblationCell:
        for c in self.ablations:
            if (c.pair, c.set_name, c.task, c.kind) == (pair, set_name, task, kind):
                return c
        raise KeyError((pair, set_name, task, kind))

    def role_of(self, pair: str, name: str) -> ComponentRole:
        for r in self.components:
            if (r.pair, r.name) == (pair, name):
                return r
        raise KeyError((pair, name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        def verdict(d: dict) -> Verdict:
            return Verdict(**d)

        def control(d: dict | None) -> ControlStats | None:
            return None if d is None else ControlStats(**d)

        def tupled(d: dict[str, list]) -> dict[str, tuple[str, ...]]:
            return {k: tuple(v) for k, v in d.items()}

        return cls(
            id=data["id"], model=data["model"], tasks=tuple(data["tasks"]),
            circuits=dict(data["circuits"]), ablation=data["ablation"], seed=data["seed"],
            n_controls=data["n_controls"], alphas=tuple(data["alphas"]), n_prompts=data["n_prompts"],
            alpha_level=data.get("alpha_level", 0.05), params=dict(data.get("params") or {}),
            sets=tuple(ComponentSets(**{**s, "nodes": tupled(s["nodes"]), "edges": tupled(s["edges"])})
                       for s in data.get("sets", ())),
            ablations=tuple(AblationCell(**{**c, "control": control(c["control"]),
                                            "verdict": verdict(c["verdict"])})
                            for c in data.get("ablations", ())),
            cross=tuple(CrossFaithfulness(**c) for c in data.get("cross", ())),
            conflicts=tuple(ConflictSummary(**c) for c in data.get("conflicts", ())),
            components=tuple(ComponentRole(**{
                **r, "effect_controls": {k: control(v) for k, v in r["effect_controls"].items()},
                "conflict_control": control(r["conflict_control"]), "verdict": verdict(r["verdict"])})
                for r in data.get("components", ())),
            dose=tuple(DoseResponse(**{**d, "components": tuple(d["components"]),
                                       "points": tuple(DosePoint(**p) for p in d["points"]),
                                       "verdict": verdict(d["verdict"])})
                       for d in data.get("dose", ())),
            pairs=tuple(PairSummary(**{**p, "circuits": tuple(p["circuits"]),
                                       "competes": verdict(p["competes"]),
                                       "cooperates": verdict(p["cooperates"])})
                        for p in data.get("pairs", ())),
            provenance=ExperimentProvenance(**data.get("provenance", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> Experiment:
        return cls.from_dict(json.loads(text))


def discovered_circuit_id(experiment_id: str, task: str) -> str:
    """The id of the circuit an experiment discovers for ``task``: the same on every run of the
    experiment (a re-run after a crash replaces it in the store instead of adding a second)."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{experiment_id}/{task}"))
