"""A job made of parts that several workers run in parallel, on the one job machinery: each part
is a job record of its own (claim, heartbeat, cancel, sweep as for any job; in no listing), sent
as one Celery group; the parent job waits for them and meanwhile runs, in its own process, every
part no worker has taken yet. So one worker alone finishes the job, and each idle worker speeds it
up. A part returns its result in its record; only the parent stores anything, once.

After a crash the parent runs again (the sweep re-queues it); parts that finished keep their
results, a part whose worker died is taken over by whoever claims it after it went stale."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from workers.jobs import TERMINAL
from workers.machinery import JobRun

log = logging.getLogger(__name__)
POLL_S = 0.5  # how often the parent looks at parts other workers run


@dataclass(frozen=True)
class Part:
    """One part: its job id, spec, and how many units of progress it is (e.g. circuits)."""

    id: str
    spec: BaseModel
    units: int


def part_id(parent: str, name: str) -> str:
    return f"{parent}.{name}"


class FanOut:
    """The parts of the job ``run`` runs, recorded as jobs of ``kind``, run to their end."""

    def __init__(self, run: JobRun, kind: str, parts: Sequence[Part],
                 units_done: Callable[[dict], int]):
        """``units_done(fields)``: units of a running part done so far, from its record (or, for a
        part run here, its live fields)."""
        self.run, self.kind, self.parts, self.units_done = run, kind, list(parts), units_done
        self.records: dict[str, dict[str, str]] = {}

    def start(self) -> None:
        """Record the parts that are not recorded yet and send those as one group."""
        from workers.tasks import send_parts  # the Celery task module; loaded in worker processes

        jobs, parent = self.run.jobs, self.run.redis_call(lambda: self.run.jobs.get(self.run.job_id)) or {}
        new = [p for p in self.parts if self.run.redis_call(lambda p=p: jobs.create_part(
            p.id, parent=self.run.job_id, spec=p.spec.model_dump(), key_id=parent.get("key_id", ""),
            queue=parent.get("queue", "cpu"), kind=self.kind))]
        if new:
            try:
                send_parts([p.id for p in new], parent.get("queue", "cpu"))
            except Exception:  # noqa: BLE001 - the parent runs unsent parts itself; the sweep re-sends
                log.warning("job %s: could not send its %d parts; running them here", self.run.job_id, len(new))

    def wait(self) -> dict[str, dict[str, str]]:
        """Every part's final record, by id; parts nobody runs are run here. A cancel of the
        parent cancels the parts still going (JobCancelled); a failed part fails the job."""
        from workers.tasks import run_job

        try:
            while True:
                self._refresh()
                self._fail_on_failed_part()
                if all(self.records[p.id].get("state") in TERMINAL for p in self.parts):
                    return self.records
                ran = False
                for part in self.parts:  # the claim decides: a part alive elsewhere is skipped ("busy")
                    if self.records[part.id].get("state") in TERMINAL:
                        continue
                    outcome = run_job(f"{self.run.runner}/inline", part.id, parent=self.run,
                                      watch=lambda child, part=part: self._publish(part, child.fields))
                    self.run.check()
                    if "skipped" not in outcome:
                        ran = True
                        break
                if not ran:
                    self._publish()
                    self.run.sleep(POLL_S)
        except BaseException:
            if not self.run.lost.is_set():  # lost: the parent's new runner carries on with the parts
                self._cancel_parts()
            raise

    def _refresh(self) -> None:
        jobs = self.run.jobs
        for part in self.parts:
            if self.records.get(part.id, {}).get("state") not in TERMINAL:
                self.records[part.id] = self.run.redis_call(lambda part=part: jobs.get(part.id)) or {}

    def _fail_on_failed_part(self) -> None:
        for part in self.parts:
            record = self.records[part.id]
            if record.get("state") in ("failed", "cancelled"):
                what = "failed" if record["state"] == "failed" else "was cancelled"
                raise ValueError(f"part {part.id} {what}: {record.get('error') or record.get('stage')}")

    def _publish(self, live: Part | None = None, fields: dict | None = None) -> None:
        """The parent's progress: units done over all parts (a part run here from its live fields)."""
        done = 0
        for part in self.parts:
            record = self.records.get(part.id, {})
            if record.get("state") == "succeeded":
                done += part.units
            elif live is not None and part.id == live.id:
                done += min(part.units, self.units_done(fields or {}))
            elif record.get("state") == "running":
                done += min(part.units, self.units_done(record))
        total = sum(p.units for p in self.parts)
        self.run.fields["stage"] = f"discovering: {done} of {total} done in {len(self.parts)} parts"
        self.run.progress(done, total)

    def _cancel_parts(self) -> None:
        """Stop the parts still going (a cancel, a failure, a crash here): best effort."""
        for part in self.parts:
            if self.records.get(part.id, {}).get("state") not in TERMINAL:
                try:
                    self.run.jobs.cancel(part.id)
                except Exception:  # noqa: BLE001 - Redis down: the parts finish unseen, nothing stored
                    log.warning("could not cancel part %s", part.id)
