"""The local services as one unit, built from settings: what ``circuits services`` acts on."""

from __future__ import annotations

import shutil
from typing import Protocol

from api.ops.neo4j_local import Neo4jLocal
from api.ops.redis_local import RedisLocal
from workers.settings import Settings

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class LocalService(Protocol):
    def up(self) -> str: ...
    def down(self) -> str: ...
    def status(self) -> dict[str, object]: ...


def local_services(settings: Settings) -> dict[str, LocalService]:
    """The services to run locally, keyed by name; Redis first (it starts in a blink)."""
    root = settings.local_dir.resolve()
    return {
        "redis": RedisLocal(home=root / "redis", host=settings.redis_host, port=settings.redis_port),
        "neo4j": Neo4jLocal(
            home=root / "neo4j",
            password=settings.neo4j_password.get_secret_value(),
            user=settings.neo4j_user,
            host=settings.neo4j_host,
            port=settings.neo4j_port,
            heap=settings.neo4j_heap,
            pagecache=settings.neo4j_pagecache,
            start_timeout_s=settings.neo4j_start_timeout_s,
        ),
    }


def remote_services(settings: Settings) -> list[str]:
    """Services the settings point at another host: `services up` must not try to run those."""
    remote = []
    if settings.redis_host not in LOCAL_HOSTS:
        remote.append("redis")
    if settings.neo4j_host not in LOCAL_HOSTS:
        remote.append("neo4j")
    return remote


def purge(settings: Settings, name: str) -> str:
    """Delete a stopped local service's data (not its downloads)."""
    home = settings.local_dir.resolve() / name
    for sub in ("data", "run") if name == "neo4j" else ("data",):
        shutil.rmtree(home / sub, ignore_errors=True)
    return f"{name}: data under {home} deleted"
