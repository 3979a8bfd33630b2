"""Fixtures of the fault suite: scratch Redis and Neo4j servers of our own, on free ports in
temporary folders, that a test may stop, kill and restart without touching the shared services
(``circuits services up``) the rest of the suite uses. Everything they start is killed at teardown."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from api.ops.neo4j_local import Neo4jLocal
from api.ops.redis_local import RedisLocal
from tests.conftest import free_port

SCRATCH_PASSWORD = "scratch-fault-pass"


def _kill_all(services: list) -> None:
    for service in services:
        for pid in service.process.all_pids():
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def scratch_redis(tmp_path) -> Iterator[callable]:
    """Factory: ``scratch_redis()`` -> a started :class:`RedisLocal` (append-only file on)."""
    started: list[RedisLocal] = []

    def start() -> RedisLocal:
        server = RedisLocal(home=tmp_path / f"redis-{len(started)}", port=free_port())
        started.append(server)
        server.up()
        return server

    yield start
    _kill_all(started)


@pytest.fixture(scope="module")
def scratch_neo4j(tmp_path_factory) -> Iterator[callable]:
    """Factory: ``scratch_neo4j(heap="256m")`` -> a started :class:`Neo4jLocal` with auth on
    (password :data:`SCRATCH_PASSWORD`). Module-scoped: a Neo4j start costs seconds."""
    started: list[Neo4jLocal] = []

    def start(heap: str = "256m", pagecache: str = "32m") -> Neo4jLocal:
        home = tmp_path_factory.mktemp("neo4j")
        server = Neo4jLocal(home=home, password=SCRATCH_PASSWORD, port=free_port(), heap=heap,
                            pagecache=pagecache)
        started.append(server)
        server.up()
        return server

    yield start
    _kill_all(started)
