"""The Celery application: Redis as broker and result backend, queues declared explicitly.

Jobs are routed by device to the ``cpu`` or ``gpu`` queue. ``acks_late`` with
``reject_on_worker_lost`` means a job whose pool process dies is delivered again rather than lost;
a job whose whole worker dies is re-queued by the heartbeat sweep (:mod:`workers.sweep`). The graph
store's replace-on-write makes either re-run safe.

Every wait on Redis is bounded (``ATLAS_REDIS_TIMEOUT_S``): a publish during an outage fails within
seconds (the API answers 503), while a worker keeps reconnecting for as long as the outage lasts and
never cancels a running job because of it (its claim and heartbeat decide, not the connection).
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from workers.settings import QUEUES, Settings

#: Task names, so the API can send tasks without importing their code (or torch).
PING_TASK = "atlas.ping"
DISCOVER_TASK = "atlas.discover"  # the name discovery jobs had before job kinds
JOB_TASK = "atlas.job"  # every kind of job (workers.kinds)


def create_celery(settings: Settings) -> Celery:
    """A Celery app wired to ``settings.redis_url``; tasks load only in worker processes."""
    app = Celery("circuit_atlas", broker=settings.redis_url, backend=settings.redis_url)
    # Reads block up to 1 s (kombu's BRPOP poll), so the socket timeout stays above that.
    wait = max(settings.redis_timeout_s, 2.0)
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
        broker_transport_options={"visibility_timeout": 6 * 3600, "socket_timeout": wait,
                                  "socket_connect_timeout": wait},
        broker_connection_max_retries=None,  # a worker waits out any outage
        # A publish (the API's submit, the sweep's re-send) gives up within about a second.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.3,
                                   "interval_max": 0.5},
        worker_cancel_long_running_tasks_on_connection_loss=False,
        redis_socket_timeout=wait,
        redis_socket_connect_timeout=wait,
        # A result written while Redis restarts is retried, not lost (the job record is what counts).
        result_backend_always_retry=True,
        result_backend_max_retries=20,
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
