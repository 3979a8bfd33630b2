"""Competition experiments in Neo4j, beside the circuits they tested (``graphstore/SCHEMA.md``,
section "Experiments").

The whole :class:`~discovery.experiments.result.Experiment` is kept as JSON text on its node, so
:func:`read_experiment` returns exactly what was written; the graph around it (links to its model
and circuits, one ``MEASURED`` per pair and component, ``COMPETES_WITH`` / ``COOPERATES_WITH``
between the pair's circuits) is what Cypher questions across experiments traverse. One experiment
is one write transaction that first locks the experiment's node and removes what an earlier write
of the same id left, so a re-delivered job leaves one copy and nothing stale; a failure anywhere
leaves nothing of it (or the previous version intact). Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from neo4j import Driver, ManagedTransaction, Record

from discovery.circuit import Node, mlp_name
from discovery.experiments.result import ComponentRole, ControlStats, Experiment, PairSummary, Verdict
from graphstore import queries
from graphstore.store import BATCH, component_uid

#: Called inside the write transaction after each batch: ``(stage, rows done, rows total)``,
#: stage ``components`` or ``pairs``. Raising aborts the whole write (nothing is stored).
BatchCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExperimentSummary:
    """One row of :func:`list_experiments` (``pairs``: per pair its key, the competes and
    cooperates verdicts' states, and the competition and cooperation numbers)."""

    id: str
    model: str
    tasks: tuple[str, ...]
    circuits: dict[str, str]  # task -> circuit id
    ablation: str
    seed: int
    n_controls: int
    created_at: str | None
    pairs: tuple[dict[str, Any], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "tasks": list(self.tasks),
                "circuits": dict(self.circuits), "ablation": self.ablation, "seed": self.seed,
                "n_controls": self.n_controls, "created_at": self.created_at,
                "pairs": [dict(p) for p in self.pairs]}


# --- what each component does, from the experiment's numbers ---------------------------------


def significantly_hurt(effect: float, control: ControlStats | None, alpha: float) -> bool:
    """Its ablation lowers the task's metric more than random sets do (the control's one-sided
    empirical p-value). No control, no claim."""
    return control is not None and effect > 0 and control.p_value <= alpha


def significantly_helped(effect: float, control: ControlStats | None, alpha: float) -> bool:
    """Its ablation raises the task's metric more than random sets do. The control keeps the upper
    tail p = (1 + #{random >= observed}) / (1 + n); the lower tail is (1 + #{random < observed}) /
    (1 + n) = (n + 2) / (n + 1) - p, equal to the usual (1 + #{random <= observed}) / (1 + n)
    unless a random set ties the observed effect exactly."""
    if control is None or effect >= 0:
        return False
    return (control.n + 2) / (control.n + 1) - control.p_value <= alpha


def pair_tasks(experiment: Experiment, pair: str) -> tuple[str, str]:
    """The two tasks of pair key ``pair`` ("a|b"), checked against the experiment's tasks."""
    known = {k: tuple(k.split("|", 1)) for k in experiment.pair_keys}
    for i, a in enumerate(experiment.tasks):  # pairs in either order, names may hold "|"
        for b in experiment.tasks[i + 1:]:
            known[f"{a}|{b}"], known[f"{b}|{a}"] = (a, b), (b, a)
    if pair not in known:
        raise ValueError(f"experiment {experiment.id}: pair {pair!r} is not two of its tasks "
                         f"{list(experiment.tasks)}; key pairs 'a|b' with pair_key(a, b)")
    return known[pair]  # type: ignore[return-value]


def serves_and_hurts(experiment: Experiment, role: ComponentRole) -> tuple[list[str], list[str]]:
    """``serves``: tasks whose metric its ablation significantly lowers. ``hurts``: the task it
    pushes against on the conflict prompts when it is competitive, and the tasks whose metric its
    ablation significantly raises. Both in the experiment's task order."""
    alpha = experiment.alpha_level
    if role.effect_states:  # the library's own per-task decision (p and the margin over noise)
        serves = {t for t, state in role.effect_states.items() if state == "supported"}
    else:  # experiments stored before it was kept: the p-value alone
        serves = {t for t, e in role.effects.items()
                  if significantly_hurt(e, role.effect_controls.get(t), alpha)}
    hurts = {t for t, e in role.effects.items()
             if significantly_helped(e, role.effect_controls.get(t), alpha)}
    if role.role == "competitive" and role.favours is not None:
        hurts |= {t for t in pair_tasks(experiment, role.pair) if t != role.favours}
    order = {t: i for i, t in enumerate(experiment.tasks)}
    rank = lambda t: (order.get(t, len(order)), t)  # noqa: E731
    return sorted(serves, key=rank), sorted(hurts, key=rank)


# --- checks and rows --------------------------------------------------------------------------


def _no_nulls(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if v is not None}


def check_experiment(experiment: Experiment) -> None:
    """Raise ValueError naming the field when ``experiment`` cannot be stored faithfully."""
    where = f"experiment {experiment.id}"
    if not experiment.id or not isinstance(experiment.id, str):
        raise ValueError("experiment id: must be a non-empty string")
    if not experiment.model:
        raise ValueError(f"{where}: model is empty; name the model its circuits belong to")
    if not experiment.circuits:
        raise ValueError(f"{where}: circuits is empty; give the circuit id of each task")
    for task, cid in experiment.circuits.items():
        if task not in experiment.tasks:
            raise ValueError(f"{where}: circuits.{task}: {task!r} is not one of its tasks "
                             f"{list(experiment.tasks)}")
        if not cid or not isinstance(cid, str):
            raise ValueError(f"{where}: circuits.{task}: the circuit id must be a non-empty string")
    seen: set[tuple[str, str]] = set()
    for i, role in enumerate(experiment.components):
        try:
            Node.parse(role.name)
        except ValueError as exc:
            raise ValueError(f"{where}: components[{i}].name: {exc}") from None
        pair_tasks(experiment, role.pair)
        if (role.pair, role.name) in seen:
            raise ValueError(f"{where}: components[{i}]: {role.name} is listed twice for pair {role.pair}")
        seen.add((role.pair, role.name))
    ids = set(experiment.circuits.values())
    for i, pair in enumerate(experiment.pairs):
        pair_tasks(experiment, pair.pair)
        if len(pair.circuits) != 2 or not set(pair.circuits) <= ids:
            raise ValueError(f"{where}: pairs[{i}].circuits {list(pair.circuits)}: must be two of "
                             f"the experiment's circuits {sorted(ids)}")


def _experiment_props(experiment: Experiment, text: str) -> dict[str, Any]:
    pairs = [{"pair": p.pair, "competes": p.competes.state, "cooperates": p.cooperates.state,
              "competition": p.competition, "cooperation": p.cooperation} for p in experiment.pairs]
    return _no_nulls({
        "id": experiment.id, "model": experiment.model, "tasks": list(experiment.tasks),
        "circuit_tasks": list(experiment.circuits), "circuit_ids": list(experiment.circuits.values()),
        "ablation": experiment.ablation, "seed": experiment.seed, "n_controls": experiment.n_controls,
        "alphas": [float(a) for a in experiment.alphas], "n_prompts": experiment.n_prompts,
        "alpha_level": experiment.alpha_level, "created_at": experiment.provenance.created_at or None,
        "model_sha256": experiment.provenance.model_sha256 or None,
        "n_components": len(experiment.components), "pairs": json.dumps(pairs), "json": text,
    })


def _verdict_props(v: Verdict) -> dict[str, Any]:
    return {"state": v.state, "claim": v.claim, "statistic": v.statistic, "value": v.value,
            "p_value": v.p_value}


def _measured_props(experiment: Experiment, role: ComponentRole) -> dict[str, Any]:
    serves, hurts = serves_and_hurts(experiment, role)
    tasks = [t for t in experiment.tasks if t in role.effects] + sorted(
        set(role.effects) - set(experiment.tasks))
    v = role.verdict
    return _no_nulls({
        "pair": role.pair, "role": role.role, "favours": role.favours,
        "membership": role.membership, "kind": role.kind, "serves": serves, "hurts": hurts,
        "tasks": tasks, "effects": [float(role.effects[t]) for t in tasks],
        "dla_mean": role.dla_mean, "dla_t": role.dla_t, "dla_p": role.dla_p,
        "conflict_shift": role.conflict_shift,
        "conflict_p": role.conflict_control.p_value if role.conflict_control else None,
        "verdict": v.state, "statistic": v.statistic, "value": v.value, "p_value": v.p_value,
    })


def _component_rows(experiment: Experiment) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in queries.KIND_LABELS}
    for role in experiment.components:
        n = Node.parse(role.name)
        rows[n.kind].append({"uid": component_uid(experiment.model, n.name), "name": n.name,
                             "model": experiment.model, "kind": n.kind, "layer": n.layer,
                             "head": n.head, "neuron": n.neuron,
                             "props": _measured_props(experiment, role)})
    return rows


def _pair_rows(experiment: Experiment) -> list[dict[str, Any]]:
    def props(p: PairSummary, verdict: Verdict, name: str, value: float) -> dict[str, Any]:
        return _no_nulls({"experiment": experiment.id, "pair": p.pair,
                          "tasks": list(pair_tasks(experiment, p.pair)), name: value,
                          **_verdict_props(verdict)})

    return [{"a": p.circuits[0], "b": p.circuits[1],
             "competes": props(p, p.competes, "competition", p.competition),
             "cooperates": props(p, p.cooperates, "cooperation", p.cooperation)}
            for p in experiment.pairs]


def _chunks(rows: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# --- the transaction --------------------------------------------------------------------------


def _check_circuits(tx: ManagedTransaction, experiment: Experiment) -> None:
    ids = sorted(set(experiment.circuits.values()))
    found = {r["id"]: r["model"] for r in tx.run(queries.CIRCUIT_MODELS, ids=ids)}
    missing = [i for i in ids if found.get(i) is None]
    if missing:
        raise ValueError(f"experiment {experiment.id}: circuits not in the store: "
                         f"{', '.join(missing)}; store them first or give ids of stored circuits")
    foreign = [f"{i} (model {found[i]})" for i in ids if found[i] != experiment.model]
    if foreign:
        raise ValueError(f"experiment {experiment.id} is on model {experiment.model}, but circuits "
                         f"{', '.join(foreign)} are not; give circuits of {experiment.model}")


def _write_components(tx: ManagedTransaction, experiment: Experiment, batch: int,
                      tick: BatchCallback) -> None:
    done, total = 0, len(experiment.components)
    for kind, rows in _component_rows(experiment).items():
        for chunk in _chunks(rows, batch):
            written = tx.run(queries.merge_measured(queries.KIND_LABELS[kind]), rows=chunk,
                             experiment_id=experiment.id).single()["written"]
            if written != len(chunk):
                raise RuntimeError(f"experiment {experiment.id}: wrote {written} of {len(chunk)} "
                                   "component results of a batch")
            done += len(chunk)
            tick("components", done, total)
    neurons = [{"uid": component_uid(experiment.model, n.name), "model": experiment.model,
                "mlp_uid": component_uid(experiment.model, mlp_name(n.layer)),
                "mlp_name": mlp_name(n.layer), "layer": n.layer}
               for n in {Node.parse(r.name) for r in experiment.components}
               if n.kind == "neuron" and n.layer is not None]
    for chunk in _chunks(neurons, batch):
        tx.run(queries.LINK_NEURONS, rows=chunk).consume()


def _write_pairs(tx: ManagedTransaction, experiment: Experiment, batch: int,
                 tick: BatchCallback) -> None:
    rows, done = _pair_rows(experiment), 0
    for chunk in _chunks(rows, batch):
        written = tx.run(queries.CREATE_PAIRS, rows=chunk).single()["written"]
        if written != len(chunk):
            raise RuntimeError(f"experiment {experiment.id}: wrote {written} of {len(chunk)} pairs")
        done += len(chunk)
        tick("pairs", done, len(rows))


def _prune(tx: ManagedTransaction, record: Record) -> None:
    """Components and models the earlier version (or the deleted experiment) alone used."""
    for uids in (record["neurons"], record["others"]):
        for chunk in _chunks(uids, BATCH):
            tx.run(queries.PRUNE_COMPONENTS, uids=chunk).consume()
    tx.run(queries.PRUNE_OWNERS, models=record["models"], tasks=[]).consume()


def _write_tx(tx: ManagedTransaction, experiment: Experiment, text: str, batch: int,
              on_batch: BatchCallback | None) -> None:
    tick = on_batch or (lambda stage, done, total: None)
    _check_circuits(tx, experiment)
    earlier = tx.run(queries.LOCK_EXPERIMENT, experiment_id=experiment.id).single()
    tx.run(queries.CLEAR_PAIRS, experiment_id=experiment.id).consume()
    tests = [{"task": t, "circuit": c} for t, c in experiment.circuits.items()]
    written = tx.run(queries.MERGE_EXPERIMENT, experiment_id=experiment.id, tests=tests,
                     experiment=_experiment_props(experiment, text)).single()["written"]
    if written != len(tests):
        raise RuntimeError(f"experiment {experiment.id}: linked {written} of {len(tests)} circuits")
    _write_components(tx, experiment, batch, tick)
    _write_pairs(tx, experiment, batch, tick)
    _prune(tx, earlier)


def write_experiment(driver: Driver, experiment: Experiment, *, database: str, batch: int = BATCH,
                     on_batch: BatchCallback | None = None) -> str:
    """Store ``experiment`` in one transaction, replacing any earlier write of its id; returns the
    id. Its circuits must be stored already (ValueError naming the missing ids, nothing written)."""
    check_experiment(experiment)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    try:
        text = experiment.to_json(indent=None)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"experiment {experiment.id}: params are not JSON ({exc}); use plain "
                         "numbers, strings, lists and maps") from None
    with driver.session(database=database) as session:
        session.execute_write(_write_tx, experiment, text, batch, on_batch)
    return experiment.id


# --- reading and deleting ---------------------------------------------------------------------


def read_experiment(driver: Driver, experiment_id: str, *, database: str) -> Experiment | None:
    """The stored experiment, equal to the one written, or None."""
    records, _, _ = driver.execute_query(queries.READ_EXPERIMENT, experiment_id=experiment_id,
                                         database_=database, routing_="r")
    return Experiment.from_json(records[0]["json"]) if records else None


def experiment_exists(driver: Driver, experiment_id: str, *, database: str) -> bool:
    records, _, _ = driver.execute_query(queries.EXPERIMENT_EXISTS, experiment_id=experiment_id,
                                         database_=database, routing_="r")
    return bool(records[0]["found"])


def circuits_exist(driver: Driver, ids: list[str] | tuple[str, ...], *,
                   database: str) -> dict[str, str | None]:
    """Each of ``ids`` -> the model of the stored circuit with that id, or None when there is none
    (so the API can name unknown ids and circuits of another model before submitting a job)."""
    records, _, _ = driver.execute_query(queries.CIRCUIT_MODELS, ids=list(dict.fromkeys(ids)),
                                         database_=database, routing_="r")
    return {r["id"]: r["model"] for r in records}


def _summary(row: dict[str, Any]) -> ExperimentSummary:
    return ExperimentSummary(
        id=row["id"], model=row["model"], tasks=tuple(row["tasks"]),
        circuits=dict(zip(row["circuit_tasks"], row["circuit_ids"], strict=True)),
        ablation=row["ablation"], seed=row["seed"], n_controls=row["n_controls"],
        created_at=row["created_at"], pairs=tuple(json.loads(row["pairs"] or "[]")))


def list_experiments(driver: Driver, *, database: str, model: str | None = None,
                     task: str | None = None, circuit: str | None = None, offset: int = 0,
                     limit: int = 20) -> tuple[int, list[ExperimentSummary]]:
    """Stored experiments matching every filter given (``circuit``: experiments that used that
    circuit id), newest first: (how many match, the page from ``offset``, at most ``limit``)."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    params = {"model": model, "task": task, "circuit": circuit}

    def read(tx: ManagedTransaction) -> tuple[int, list[dict[str, Any]]]:
        total = tx.run(queries.COUNT_EXPERIMENTS, **params).single()["total"]
        rows = tx.run(queries.LIST_EXPERIMENTS, **params, offset=offset, limit=limit)
        return total, [r.data() for r in rows]

    with driver.session(database=database) as session:
        total, rows = session.execute_read(read)
    return total, [_summary(r) for r in rows]


def _delete_tx(tx: ManagedTransaction, experiment_id: str) -> bool:
    tx.run(queries.CLEAR_PAIRS, experiment_id=experiment_id).consume()
    record = tx.run(queries.DELETE_EXPERIMENT, experiment_id=experiment_id).single()
    if record is None:
        return False
    _prune(tx, record)
    return True


def delete_experiment(driver: Driver, experiment_id: str, *, database: str) -> bool:
    """Remove an experiment, its links and its circuit-to-circuit summaries; circuits and the
    components they include stay. False when there was no such experiment."""
    with driver.session(database=database) as session:
        return session.execute_write(_delete_tx, experiment_id)

