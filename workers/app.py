"""The Celery application: Redis as broker and result backend, queues declared explicitly.

Jobs are routed by device to the ``cpu`` or ``gpu`` queue. ``acks_late`` with
``reject_on_worker_lost`` means a job whose pool process dies is delivered again rather than lost;
a job whose whole worker dies is re-queued by the heartbeat sweep (:mod:`workers.tasks`). The graph
store's replace-on-write makes either re-run safe.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from workers.settings import QUEUES, Settings

#: Task names, so the API can send tasks without importing their code (or torch).
PING_TASK = "atlas.ping"
DISCOVER_TASK = "atlas.discover"


def create_celery(settings: Settings) -> Celery:
    """A Celery app wired to ``settings.redis_url``; tasks load only in worker processes."""
    app = Celery("circuit_atlas", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
        task_create_missing_queues=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        worker_prefetch_multiplier=1,
        result_extended=True,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        # A job may run for a long time; Redis re-delivers unacked jobs after this many seconds.
        broker_transport_options={"visibility_timeout": 6 * 3600},
        worker_hijack_root_logger=False,
    )
    return app


def worker_argv(settings: Settings, *, concurrency: int = 1, loglevel: str = "INFO",
                hostname: str | None = None) -> list[str]:
    """The ``celery worker`` arguments for this project's queues."""
    return [
        "worker",
        f"--queues={','.join(settings.queues)}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        f"--hostname={hostname or f'atlas-{os.getpid()}@%h'}",
        "--without-gossip",
        "--without-mingle",
    ]


def run_worker(settings: Settings, **kwargs: object) -> None:
    """Run a worker in this process until it is stopped (what ``circuits worker`` does)."""
    app = create_celery(settings)
    app.conf.include = ["workers.tasks"]
    app.worker_main(worker_argv(settings, **kwargs))  # type: ignore[arg-type]
