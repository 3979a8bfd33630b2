"""A local Redis (Debian's ``redis-server``) on loopback: Celery's broker and result backend.

Layout under ``<local_dir>/redis``: ``data/`` (append-only file, so a restart keeps job records),
``redis.log``, ``redis.pid``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.ops.install import ensure_program
from api.ops.process import ManagedProcess, ServiceError, port_open, tail


@dataclass(frozen=True)
class RedisLocal:
    """Where and how the local Redis runs."""

    home: Path
    host: str = "127.0.0.1"
    port: int = 6379
    start_timeout_s: float = 30.0

    @property
    def log(self) -> Path:
        return self.home / "redis.log"

    @property
    def process(self) -> ManagedProcess:
        # Our argv names the port; once running, Redis rewrites its title to "redis-server HOST:PORT".
        return ManagedProcess("redis", self.home / "redis.pid",
                              (f"--port {self.port} ", f"redis-server {self.host}:{self.port}"))

    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def reachable(self, timeout: float = 1.0) -> bool:
        try:
            client = redis.Redis(host=self.host, port=self.port, socket_timeout=timeout,
                                 socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
            with client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def up(self) -> str:
        """Start Redis unless ours already runs; returns a one-line report."""
        pid = self.process.pid()
        if pid is not None:
            return f"redis already running (pid {pid}) on {self.host}:{self.port}"
        if port_open(self.host, self.port):
            if self.reachable():
                return f"redis: using the existing server on {self.host}:{self.port} (not started by circuits)"
            raise ServiceError(
                f"port {self.host}:{self.port} is taken by a process circuit-atlas did not start, "
                "and it does not answer as Redis. Free the port, or choose another with "
                "ATLAS_REDIS_URL=redis://127.0.0.1:PORT/0"
            )
        server = ensure_program("redis-server", package="redis-server", why="Celery's broker")
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        argv = [
            server,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str((self.home / "data").resolve()),
            "--logfile", str(self.log.resolve()),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--appendonly", "yes",
        ]
        pid = self.process.start(argv, log=self.home / "console.log")
        deadline = time.monotonic() + self.start_timeout_s
        while not self.reachable():
            if self.process.pid() is None:
                raise ServiceError(f"redis-server exited at start; its log says:\n{tail(self.log)}")
            if time.monotonic() > deadline:
                raise ServiceError(f"redis did not answer PING in {self.start_timeout_s:.0f}s")
            time.sleep(0.1)
        return f"redis started (pid {pid}) on {self.host}:{self.port}, log {self.log}"

    def down(self) -> str:
        return "redis stopped" if self.process.stop(timeout=30) else "redis was not running"

    def status(self) -> dict[str, object]:
        return {
            "service": "redis",
            "pid": self.process.pid(),
            "address": f"{self.host}:{self.port}",
            "reachable": self.reachable(),
            "log": str(self.log),
        }
