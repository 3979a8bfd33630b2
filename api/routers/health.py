"""``GET /health``: is each backing service reachable? 200 when all are, 503 (with the failing
service named and the reason) when one is not."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import Resources, ResourcesDep

router = APIRouter(tags=["health"])


class ServiceHealth(BaseModel):
    reachable: bool
    address: str
    error: str | None = None


class Health(BaseModel):
    status: str  # "ok" or "degraded"
    neo4j: ServiceHealth
    redis: ServiceHealth


def _check_neo4j(res: Resources) -> ServiceHealth:
    address = f"{res.settings.neo4j_host}:{res.settings.neo4j_port}"
    try:
        res.neo4j.verify_connectivity()
        return ServiceHealth(reachable=True, address=address)
    except Exception as exc:  # noqa: BLE001 - any failure is "unreachable", reported with its reason
        return ServiceHealth(reachable=False, address=address, error=f"{type(exc).__name__}: {exc}")


def _check_redis(res: Resources) -> ServiceHealth:
    address = f"{res.settings.redis_host}:{res.settings.redis_port}"
    try:
        res.redis.ping()
        return ServiceHealth(reachable=True, address=address)
    except Exception as exc:  # noqa: BLE001
        return ServiceHealth(reachable=False, address=address, error=f"{type(exc).__name__}: {exc}")


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(res: ResourcesDep) -> JSONResponse:
    """Check Neo4j and Redis concurrently, each bounded by ``ATLAS_HEALTH_TIMEOUT_S``."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        neo4j_future = pool.submit(_check_neo4j, res)
        redis_future = pool.submit(_check_redis, res)
        body = Health(status="ok", neo4j=neo4j_future.result(), redis=redis_future.result())
    if not (body.neo4j.reachable and body.redis.reachable):
        body.status = "degraded"
        return JSONResponse(status_code=503, content=body.model_dump())
    return JSONResponse(status_code=200, content=body.model_dump())
