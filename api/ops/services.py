"""The local services as one unit, built from settings: what ``circuits services`` acts on, and
the supervisor that restarts them when they die."""

from __future__ import annotations

import shutil
from typing import Protocol

from api.ops.neo4j_local import Neo4jLocal
from api.ops.redis_local import RedisLocal
from api.ops.supervisor import Supervisor, SupervisorLocal
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


def supervisor_process(settings: Settings) -> SupervisorLocal:
    """The supervisor's background process (pid, log and status file in the local dir)."""
    return SupervisorLocal(home=settings.local_dir.resolve())


def supervisor(settings: Settings) -> Supervisor:
    """The supervisor's loop over the local services (never the remote ones)."""
    remote = set(remote_services(settings))
    watched = {name: s for name, s in local_services(settings).items() if name not in remote}
    return Supervisor(watched, settings.local_dir.resolve(), interval_s=settings.supervisor_interval_s,
                      fail_checks=settings.supervisor_fail_checks)


def remote_services(settings: Settings) -> list[str]:
    """Services the settings point at another host: `services up` must not try to run those."""
    remote = []
    if settings.redis_host not in LOCAL_HOSTS:
        remote.append("redis")
    if settings.neo4j_host not in LOCAL_HOSTS:
        remote.append("neo4j")
    return remote


def purge(settings: Settings, name: str) -> str:
    """Delete a stopped local service's data (not its downloads); for the supervisor, its log and
    status file (the restart counts)."""
    if name == "supervisor":
        root = settings.local_dir.resolve()
        for leftover in ("supervisor.json", "supervisor.log", "supervisor.console.log"):
            (root / leftover).unlink(missing_ok=True)
        return f"supervisor: log and restart counts under {root} deleted"
    home = settings.local_dir.resolve() / name
    for sub in ("data", "run") if name == "neo4j" else ("data",):
        shutil.rmtree(home / sub, ignore_errors=True)
    return f"{name}: data under {home} deleted"
