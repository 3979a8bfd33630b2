"""Shared resources of the API process (settings, Neo4j driver, Redis, Celery client) and the
``Annotated`` dependency aliases the routers use. Created in the app's lifespan, closed at shutdown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
from celery import Celery
from fastapi import Depends, Request
from neo4j import Driver, GraphDatabase
from redis.backoff import NoBackoff
from redis.retry import Retry

from workers.app import create_celery
from workers.jobs import JobStore
from workers.settings import Settings


@dataclass
class Resources:
    settings: Settings
    neo4j: Driver
    redis: redis.Redis
    celery: Celery
    jobs: JobStore

    @classmethod
    def open(cls, settings: Settings) -> Resources:
        """Clients whose every wait is bounded: with Neo4j or Redis down, a request answers 503
        within a few seconds (``ATLAS_NEO4J_TIMEOUT_S``, ``ATLAS_REDIS_TIMEOUT_S``) instead of
        sitting out the drivers' defaults (30 s of transaction retries, 60 s for a connection).

        The connection acquisition deadline bounds connecting and the Bolt handshake too, and a
        managed transaction that failed is tried once more after about a second (the driver's
        first backoff) however short its retry time: so each attempt gets half the budget, and a
        Neo4j that accepts but never answers costs about ``ATLAS_NEO4J_TIMEOUT_S`` + 1 s, a stopped
        one about 1 s. The short retry still covers a deadlock or a pooled connection that a
        Neo4j restart closed."""
        wait = settings.neo4j_timeout_s
        driver = GraphDatabase.driver(
            settings.neo4j_uri,
            auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value()),
            connection_timeout=wait / 2,
            connection_acquisition_timeout=wait / 2,
            max_transaction_retry_time=wait / 6,
        )
        timeout = settings.health_timeout_s
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),  # one retry: a dead Redis must not stall /health
        )
        jobs = JobStore.from_url(settings.redis_url, socket_timeout=settings.redis_timeout_s,
                                 socket_connect_timeout=settings.redis_timeout_s,
                                 retry=Retry(NoBackoff(), 1))  # a dead pooled socket, not an outage
        return cls(settings, driver, client, create_celery(settings), jobs)

    def close(self) -> None:
        self.neo4j.close()
        self.redis.close()
        self.jobs.redis.close()


def _resources(request: Request) -> Resources:
    return request.app.state.resources


ResourcesDep = Annotated[Resources, Depends(_resources)]
