"""Fixtures shared by every tier. Integration tests use the real local services started by
`circuits services up` (the README's test command starts them) and real processes of our own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.ops.process import spawn, stop_group

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def settings():
    from workers.settings import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def neo4j_driver(settings):
    from neo4j import GraphDatabase

    driver = GraphDatabase.driver(
        settings.neo4j_uri, auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value())
    )
    try:
        driver.verify_connectivity()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Neo4j at {settings.neo4j_uri} is not reachable ({exc}); run `circuits services up`")
    yield driver
    driver.close()


@pytest.fixture(scope="session")
def celery_client(settings):
    import redis

    from workers.app import create_celery

    try:
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {settings.redis_url} is not reachable ({exc}); run `circuits services up`")
    return create_celery(settings)


@pytest.fixture(scope="session")
def worker_process(celery_client, neo4j_driver, tmp_path_factory) -> Iterator[subprocess.Popen]:
    """A real Celery worker *process* (``circuits worker``) on the ``cpu`` queue."""
    from workers.app import PING_TASK

    log = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = spawn([sys.executable, "-m", "api.cli", "worker", "--queues", "cpu"], log, cwd=ROOT)
    try:
        # The first ping is answered once the worker has booted and consumes the queue.
        celery_client.send_task(PING_TASK, args=[{"ready": True}], queue="cpu").get(timeout=120)
    except Exception:
        stop_group(proc)
        pytest.fail(f"the worker did not answer within 120s; its log:\n{log.read_text()[-3000:]}")
    yield proc
    stop_group(proc)
    assert proc.returncode is not None


class ApiServer:
    """A uvicorn process serving the real app on a free port."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"api-{self.port}.log"
        self.proc = spawn(
            [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app",
             "--host", "127.0.0.1", "--port", str(self.port)],
            self.log, env=env, cwd=ROOT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/openapi.json", timeout=2)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    stop_group(self.proc)
                    raise RuntimeError(f"uvicorn did not start:\n{self.log.read_text()[-3000:]}") from None
                time.sleep(0.2)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        stop_group(self.proc)


@pytest.fixture
def api_server(tmp_path) -> Iterator[callable]:
    """Factory: ``api_server(env)`` starts uvicorn with extra environment; all stopped at teardown."""
    servers: list[ApiServer] = []

    def start(env: dict[str, str] | None = None) -> ApiServer:
        servers.append(ApiServer(tmp_path, env))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def reaper():
    """Kill anything a failed lifecycle test left behind, so one failure leaves no stray server."""
    services = []
    yield services.append
    for service in services:
        for pid in service.process.all_pids():
            os.kill(pid, signal.SIGKILL)
