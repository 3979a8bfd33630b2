"""``circuits api`` serves the HTTP API; ``circuits worker`` runs a Celery worker."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    api = sub.add_parser("api", help="serve the HTTP API with uvicorn")
    api.add_argument("--host", help="interface (default: ATLAS_API_HOST)")
    api.add_argument("--port", type=int, help="port (default: ATLAS_API_PORT)")
    api.set_defaults(handler=run_api)
    worker = sub.add_parser("worker", help="run a Celery worker on the project's queues")
    worker.add_argument("--queues", help="comma-separated subset of cpu,gpu (default: ATLAS_WORKER_QUEUES)")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default 1)")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(handler=run_worker)


def run_api(args: argparse.Namespace) -> int:
    """Serve until interrupted; refuses (one line, exit 1) to listen beyond loopback with the
    development keys, before uvicorn binds anything."""
    import uvicorn

    from api.security import check_keys_for_bind  # the app's imports, only when serving
    from workers.settings import get_settings

    settings = get_settings()
    host = args.host or settings.api_host
    check_keys_for_bind(settings, host)
    uvicorn.run("api.main:create_app", factory=True, host=host, port=args.port or settings.api_port)
    return 0


def run_worker(args: argparse.Namespace) -> int:
    from workers.app import run_worker as start
    from workers.settings import get_settings

    settings = get_settings()
    if args.queues:
        settings = settings.model_copy(update={"worker_queues": args.queues})
    settings.queues  # noqa: B018 - validates the queue names before Celery starts
    start(settings, concurrency=args.concurrency, loglevel=args.loglevel)
    return 0
