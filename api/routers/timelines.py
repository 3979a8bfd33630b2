"""``/v1/timelines``: submit formation timelines (jobs of kind ``timeline``: every checkpoint of a
run discovered by the workers, stored once), read and list the stored ones, delete them; and the
shipped checkpointed runs a timeline can be asked of.

A submit is validated by :class:`workers.timelinespec.TimelineSpec` (the run's ``run.json`` and
checkpoints are read here, so a bad run is a 422 naming ``run`` and nothing is queued)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel

from api.deps import ResourcesDep
from api.routers.circuits import MAX_OFFSET
from api.routers.jobs import JobPublic, submit_job
from api.security import ReadCaller, WriteCaller
from discovery.catalog import shipped_runs
from discovery.zoo.runs import load_run
from graphstore.timelines import delete_timeline, list_timelines, read_timeline
from workers.timelinespec import TimelineSpec

router = APIRouter(prefix="/v1/timelines", tags=["timelines"])
TimelineId = Annotated[str, Path(min_length=1, max_length=100, description="a timeline's id")]


class TimelineSummaryPublic(BaseModel):
    id: str
    run: str
    tasks: list[str]
    steps: list[int]
    method: str | None = None


class TimelinePage(BaseModel):
    total: int
    offset: int
    limit: int
    timelines: list[TimelineSummaryPublic]


class RunPublic(BaseModel):
    """A shipped checkpointed run: POST /v1/timelines with ``run`` its name."""

    name: str
    recipe: str
    arch: str
    steps: int
    checkpoints: list[int]


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
def submit(spec: TimelineSpec, res: ResourcesDep, caller: WriteCaller) -> JobPublic:
    """Queue a timeline; 202 with the job (GET /v1/jobs/{id} shows circuits done of all, percent
    and ETA; once it succeeded, ``result_id`` is the timeline's id: GET /v1/timelines/{id})."""
    return submit_job(res, caller, "timeline", spec)


@router.get("/runs", response_model=list[RunPublic])
def runs(caller: ReadCaller) -> list[RunPublic]:
    """The checkpointed runs shipped with the project (``runs/``), by name."""
    out = []
    for name, path in shipped_runs().items():
        manifest = load_run(path)
        out.append(RunPublic(name=name, recipe=manifest.recipe, arch=manifest.arch, steps=manifest.steps,
                             checkpoints=[c.step for c in manifest.checkpoints]))
    return out


@router.get("", response_model=TimelinePage)
def list_(res: ResourcesDep, caller: ReadCaller,
          run: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
          offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
          limit: Annotated[int, Query(ge=1, le=200)] = 20) -> TimelinePage:
    """Stored timelines by id, of one run (its resolved directory) when ``run`` is given."""
    rows = list_timelines(res.neo4j, database=res.settings.neo4j_database, run=run)
    page = rows[offset:offset + limit]
    return TimelinePage(total=len(rows), offset=offset, limit=limit, timelines=[
        TimelineSummaryPublic(id=r.id, run=r.run, tasks=list(r.tasks), steps=list(r.steps), method=r.method)
        for r in page])


@router.get("/{timeline_id}", responses={404: {"description": "No such timeline"}})
def get(timeline_id: TimelineId, res: ResourcesDep, caller: ReadCaller,
        circuits: Annotated[bool, Query(description="include every circuit whole (large); they are also "
                                                    "at GET /v1/circuits/{rows[i].circuit_id}")] = False,
        ) -> dict[str, Any]:
    """One timeline: its rows (per step and task: loss, scores, circuit size, faithfulness,
    Jaccard to the final circuit, membership), stabilisation steps, induction diagnostics and
    pairs (``discovery.timeline.Timeline.to_dict``), with its ``id``."""
    data = read_timeline(res.neo4j, timeline_id, database=res.settings.neo4j_database)
    if data is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no timeline with id {timeline_id!r}; "
                                                              "list them with GET /v1/timelines")
    if not circuits:
        data.pop("circuits", None)
    return {"id": timeline_id, **data}


@router.delete("/{timeline_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"description": "No such timeline"}})
def delete(timeline_id: TimelineId, res: ResourcesDep, caller: WriteCaller,
           circuits: Annotated[bool, Query(description="also delete the timeline's circuits")] = True,
           ) -> Response:
    """Delete a timeline (and, by default, the circuits it discovered)."""
    if not delete_timeline(res.neo4j, timeline_id, database=res.settings.neo4j_database, circuits=circuits):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no timeline with id {timeline_id!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
