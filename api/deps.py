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
        timeout = settings.health_timeout_s
        driver = GraphDatabase.driver(
            settings.neo4j_uri,
            auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value()),
            connection_timeout=timeout,
            connection_acquisition_timeout=timeout,
        )
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),  # one retry: a dead Redis must not stall /health
        )
        jobs = JobStore.from_url(settings.redis_url, socket_timeout=timeout,
                                 socket_connect_timeout=timeout)
        return cls(settings, driver, client, create_celery(settings), jobs)

    def close(self) -> None:
        self.neo4j.close()
        self.redis.close()
        self.jobs.redis.close()


def _resources(request: Request) -> Resources:
    return request.app.state.resources


ResourcesDep = Annotated[Resources, Depends(_resources)]
