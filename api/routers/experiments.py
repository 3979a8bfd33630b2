"""``/v1/experiments``: submit competition experiments (jobs of kind ``experiment``), read and list
the stored ones, delete them.

A submit is checked here beyond its spec (:class:`workers.experimentspec.ExperimentSpec`): every
circuit id given must be stored, of the experiment's model and a circuit of the task in its place.
Each failure is a 422 naming the field (``circuits[1]``) and the fix; nothing is queued then.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel

from api.deps import ResourcesDep
from api.routers.circuits import MAX_OFFSET
from api.routers.jobs import JobPublic, submit_job
from api.security import ReadCaller, WriteCaller
from graphstore.experiments import delete_experiment, list_experiments, read_experiment
from graphstore.store import read_circuit
from workers.experimentspec import ExperimentSpec

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])
ExperimentId = Annotated[str, Path(min_length=1, max_length=100, description="an experiment's id")]
Name = Annotated[str, Query(min_length=1, max_length=200)]


class PairVerdicts(BaseModel):
    pair: str
    competes: str  # the verdict's state: supported, not supported, inconclusive
    cooperates: str
    competition: float | None = None
    cooperation: float | None = None


class ExperimentSummaryPublic(BaseModel):
    id: str
    model: str
    tasks: list[str]
    circuits: dict[str, str]
    ablation: str
    seed: int
    n_controls: int
    created_at: str | None = None
    pairs: list[PairVerdicts] = []


class ExperimentPage(BaseModel):
    total: int
    offset: int
    limit: int
    experiments: list[ExperimentSummaryPublic]


def _field_error(index: int, message: str) -> HTTPException:
    """A 422 shaped like a validation error, naming ``circuits[index]``."""
    return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=[
        {"loc": ["body", "circuits", index], "msg": message, "type": "value_error"}])


def _check_circuits(spec: ExperimentSpec, res: ResourcesDep) -> None:
    """Every given circuit is stored, of ``spec.model``, and for the task in its place."""
    if spec.circuits is None:
        return
    db = res.settings.neo4j_database
    for i, (cid, task) in enumerate(zip(spec.circuits, spec.task_names, strict=True)):
        circuit = read_circuit(res.neo4j, cid, database=db)
        if circuit is None:
            raise _field_error(i, f"no stored circuit with id {cid!r}; list them with GET /v1/circuits, or "
                                  "omit circuits to discover them in the experiment")
        if circuit.provenance.model != spec.model:
            raise _field_error(i, f"circuit {cid} is of model {circuit.provenance.model!r}, not "
                                  f"{spec.model!r}; every circuit of an experiment must be of its model")
        if circuit.provenance.task != task:
            raise _field_error(i, f"circuit {cid} is a circuit of task {circuit.provenance.task!r}, but "
                                  f"tasks[{i}] is {task!r}; give the circuits in the order of tasks")


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
def submit(spec: ExperimentSpec, res: ResourcesDep, caller: WriteCaller) -> JobPublic:
    """Queue a competition experiment; 202 with the job (follow it at GET /v1/jobs/{id}; once it
    succeeded, ``result_id`` is the experiment's id: GET /v1/experiments/{id})."""
    _check_circuits(spec, res)
    return submit_job(res, caller, "experiment", spec)


@router.get("", response_model=ExperimentPage)
def list_(res: ResourcesDep, caller: ReadCaller, model: Name | None = None, task: Name | None = None,
          circuit: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
          offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
          limit: Annotated[int, Query(ge=1, le=200)] = 20) -> ExperimentPage:
    """Stored experiments, newest first, filtered by model, task and a circuit they use."""
    total, rows = list_experiments(res.neo4j, database=res.settings.neo4j_database, model=model,
                                   task=task, circuit=circuit, offset=offset, limit=limit)
    return ExperimentPage(total=total, offset=offset, limit=limit,
                          experiments=[ExperimentSummaryPublic.model_validate(_plain(r)) for r in rows])


def _plain(row: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(row) if is_dataclass(row) else dict(row)


@router.get("/{experiment_id}", responses={404: {"description": "No such experiment"}})
def get(experiment_id: ExperimentId, res: ResourcesDep, caller: ReadCaller) -> dict[str, Any]:
    """One experiment, whole: inputs, every table, the verdicts and provenance
    (:class:`discovery.experiments.result.Experiment` as JSON)."""
    experiment = read_experiment(res.neo4j, experiment_id, database=res.settings.neo4j_database)
    if experiment is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no experiment with id {experiment_id!r}")
    return experiment.to_dict()


@router.delete("/{experiment_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"description": "No such experiment"}})
def delete(experiment_id: ExperimentId, res: ResourcesDep, caller: WriteCaller) -> Response:
    """Delete an experiment; the circuits it used stay."""
    if not delete_experiment(res.neo4j, experiment_id, database=res.settings.neo4j_database):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no experiment with id {experiment_id!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
