"""Settings for every process of circuit-atlas, read once from environment variables.

All variables carry the prefix ``ATLAS_`` (``ATLAS_NEO4J_URI``, ``ATLAS_REDIS_URL`` ...) and may also
come from a ``.env`` file in the working directory. The defaults work against the local services
that ``circuits services up`` starts, so a fresh clone needs no configuration.

This module lives in ``workers`` because workers are the lowest layer that opens connections to the
services; ``api`` reads it from here, ``discovery`` and ``graphstore`` never read settings (they are
handed drivers and parameters).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Queues the Celery workers consume. Jobs are routed by device: ``cpu`` or ``gpu``.
QUEUES: tuple[str, ...] = ("cpu", "gpu")
#: What each scope of an ``ATLAS_API_KEYS`` entry grants: admin implies write, write implies read.
SCOPES: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin"}),
}
#: The development keys of the default ``ATLAS_API_KEYS``: published in the README, so never safe
#: on an address other machines can reach.
DEV_API_KEYS: frozenset[str] = frozenset({"atlas-dev-write", "atlas-dev-read"})


class Settings(BaseSettings):
    """Where the services are and how the local ones are run. Secrets are ``SecretStr``: they
    print as ``**********`` in reprs, logs and ``circuits services status``."""

    model_config = SettingsConfigDict(env_prefix="ATLAS_", env_file=".env", extra="ignore")

    neo4j_uri: str = Field("bolt://127.0.0.1:7687", description="Bolt URI of the circuit store.")
    neo4j_user: str = Field("neo4j", description="Neo4j user name.")
    neo4j_password: SecretStr = Field(
        SecretStr("circuit-atlas-dev"),
        description="Neo4j password; the local server is initialised with it on first start.",
    )
    neo4j_database: str = Field("neo4j", description="Database that holds the circuits.")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis URL: Celery broker and result backend."
    )
    api_host: str = Field("127.0.0.1", description="Interface the HTTP API binds to.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP API.")
    worker_queues: str = Field("cpu", description="Comma-separated queues a worker consumes.")
    health_timeout_s: float = Field(3.0, gt=0, description="Per-service timeout of /health.")
    cypher_timeout_s: float = Field(
        10.0, gt=0, description="Server-side timeout of a user's read-only Cypher query."
    )
    cypher_row_cap: int = Field(1000, ge=1, description="Most rows a user's Cypher query returns.")
    # Bounded user Cypher (issue 10): each query runs as its own Neo4j user in a child process
    # with a hard deadline, a byte cap and a memory cap; a few run at once (graphstore.sandbox).
    cypher_byte_cap: int = Field(
        4_000_000, ge=1024, le=256_000_000,
        description="Most bytes of rows (as JSON) a user's Cypher query returns; more is truncated.",
    )
    cypher_grace_s: float = Field(
        2.0, gt=0, le=60, description="How long past ATLAS_CYPHER_TIMEOUT_S the API waits for a "
        "query before it kills it (also the longest wait for a free query slot).",
    )
    cypher_max_concurrent: int = Field(
        2, ge=1, le=64, description="User Cypher queries run at once per API process; more get 503.",
    )
    cypher_child_memory_mb: int = Field(
        512, ge=128, le=65_536, description="Address-space cap of the process running one query.",
    )
    cypher_hold_max_s: float = Field(
        300.0, ge=0, le=86_400, description="How long a killed query that the server still runs "
        "keeps its slot taken (an expression Neo4j does not interrupt).",
    )
    cypher_user: str = Field(
        "atlas_reader", min_length=1, max_length=64,
        description="Neo4j user that users' Cypher runs as; created from the admin connection "
        "(Enterprise/Aura: granted only the reader role).",
    )
    cypher_password: SecretStr = Field(
        SecretStr("circuit-atlas-reader-dev"), description="Password of ATLAS_CYPHER_USER; set "
        "on that user when it does not log in with it.",
    )

    api_keys: SecretStr = Field(
        SecretStr("atlas-dev-write:write,atlas-dev-read:read"),
        description="API keys the server accepts, as comma-separated key:scope pairs; scope is read "
        "(GET, Cypher), write (also submit, cancel, delete) or admin (also every key's jobs). The "
        "API refuses to listen beyond loopback while these are the development keys.",
    )
    auth_fail_limit: int = Field(
        10, ge=1, description="Failed-key attempts one client address may make per window before 429."
    )
    auth_fail_window_s: float = Field(
        60.0, gt=0, le=86_400, description="Window of ATLAS_AUTH_FAIL_LIMIT, in seconds."
    )
    api_key: SecretStr = Field(
        SecretStr("atlas-dev-write"), description="Key the CLI sends in X-API-Key."
    )
    api_url: str = Field("", description="Base URL the CLI talks to (default: api_host:api_port).")
    max_body_bytes: int = Field(8_000_000, ge=1024, description="Largest request body the API reads "
                                "(an imported EAP-IG file of GPT-2 small is ~2.4 MB).")
    max_batch_memory: int | None = Field(
        None, ge=1_000_000, description="Bytes a worker's batched passes (EAP-IG's steps x prompts, "
        "fast ACDC's variants) may use when a job sets no max_batch_memory; unset: half the memory "
        "available at the time (GPU: free CUDA memory).",
    )
    max_queued_per_key: int = Field(
        100, ge=1, description="Most queued or running jobs one API key may have at a time."
    )
    auto_queue: str = Field(
        "cpu", description="Queue of jobs submitted with device auto: cpu, or gpu where GPU workers run."
    )
    job_stale_s: float = Field(
        20.0, gt=0, description="A running job whose heartbeat is older than this is re-queued."
    )
    # Jobs surviving outages (issue 10): how long each side waits on an unreachable service, how
    # long a worker keeps retrying the store, and when the sweep re-sends a lost queued job.
    store_retry_s: float = Field(
        120.0, ge=0, le=86_400, description="How long a worker retries storing a circuit while Neo4j "
        "is unreachable before the job fails (nothing is stored then)."
    )
    neo4j_timeout_s: float = Field(
        3.0, gt=0, le=300, description="Connect, connection-pool and transaction-retry limits of the "
        "API's and workers' Neo4j drivers: how long one call waits on an unreachable Neo4j."
    )
    redis_timeout_s: float = Field(
        3.0, gt=0, le=300, description="Socket timeouts of job-record calls to Redis (API, workers)."
    )
    job_resend_s: float = Field(
        60.0, gt=0, le=86_400, description="A queued job whose broker message is gone (neither queued "
        "nor delivered) is sent again by the sweep once it was sent this long ago."
    )

    local_dir: Path = Field(Path(".local"), description="Data, logs and pids of local services.")
    neo4j_heap: str = Field("1g", description="JVM heap of the local Neo4j: room for a 256 MiB "
                            "transaction limit well below it (a quarter).")
    neo4j_pagecache: str = Field("128m", description="Page cache of the local Neo4j.")
    neo4j_start_timeout_s: float = Field(
        300.0, gt=0, description="How long `services up` waits for Neo4j's Bolt to answer."
    )
    supervisor_interval_s: float = Field(
        5.0, gt=0, le=3600, description="How often the services supervisor checks each local service."
    )
    supervisor_fail_checks: int = Field(
        6, ge=1, description="Failed checks in a row (pid alive, not answering) before a restart; "
        "generous, so a server slowed by a busy machine is not restarted under running work."
    )

    @field_validator("neo4j_uri")
    @classmethod
    def _bolt_uri(cls, value: str) -> str:
        scheme = urlparse(value).scheme
        if scheme not in {"bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"}:
            raise ValueError(
                f"ATLAS_NEO4J_URI must be a bolt:// or neo4j:// URI, got scheme {scheme!r}"
            )
        return value

    @field_validator("auto_queue")
    @classmethod
    def _auto_queue(cls, value: str) -> str:
        if value not in QUEUES:
            raise ValueError(f"ATLAS_AUTO_QUEUE must be one of {', '.join(QUEUES)}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if urlparse(value).scheme not in {"redis", "rediss"}:
            raise ValueError("ATLAS_REDIS_URL must start with redis:// or rediss://")
        return value

    @property
    def neo4j_port(self) -> int:
        """Bolt port named in ``neo4j_uri`` (7687 when the URI names none)."""
        return urlparse(self.neo4j_uri).port or 7687

    @property
    def neo4j_host(self) -> str:
        return urlparse(self.neo4j_uri).hostname or "127.0.0.1"

    @property
    def redis_port(self) -> int:
        """Port named in ``redis_url`` (6379 when the URL names none)."""
        return urlparse(self.redis_url).port or 6379

    @property
    def redis_host(self) -> str:
        return urlparse(self.redis_url).hostname or "127.0.0.1"

    @property
    def key_scopes(self) -> dict[str, frozenset[str]]:
        """``api_keys`` parsed: key -> scopes (admin implies write, write implies read)."""
        keys: dict[str, frozenset[str]] = {}
        for item in self.api_keys.get_secret_value().split(","):
            key, _, scope = item.strip().partition(":")
            if not key or scope not in SCOPES:
                raise ValueError("ATLAS_API_KEYS must be comma-separated key:read, key:write or "
                                 "key:admin pairs")
            keys[key] = SCOPES[scope]
        return keys

    @property
    def uses_dev_keys(self) -> bool:
        """True when the API would accept one of the published development keys."""
        return bool(DEV_API_KEYS & set(self.key_scopes))

    @property
    def base_url(self) -> str:
        return self.api_url.rstrip("/") or f"http://{self.api_host}:{self.api_port}"

    @property
    def queues(self) -> list[str]:
        """The worker's queues, validated against :data:`QUEUES`."""
        names = [q.strip() for q in self.worker_queues.split(",") if q.strip()]
        unknown = sorted(set(names) - set(QUEUES))
        if unknown or not names:
            raise ValueError(
                f"ATLAS_WORKER_QUEUES={self.worker_queues!r}: unknown queue(s) {unknown}; "
                f"use a comma-separated subset of {', '.join(QUEUES)}"
            )
        return names


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
