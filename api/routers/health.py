"""``GET /health``: is each backing service reachable? 200 when all are, 503 when one is not.

Without a key it says up or down and nothing else: no addresses, no exception texts, which would
tell a stranger where the store lives and what it runs. With a valid key (any scope) it also names
each service's address, the reason it is unreachable, and what the services supervisor has
restarted (when its status file is in ``ATLAS_LOCAL_DIR``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import Resources, ResourcesDep
from api.ops.supervisor import SupervisorLocal, read_status
from api.security import AUTH_RESPONSES, OptionalCaller

router = APIRouter(tags=["health"])


class ServiceHealth(BaseModel):
    reachable: bool
    address: str | None = None  # with a key only
    error: str | None = None  # with a key only, when unreachable


class Restart(BaseModel):
    restarts: int
    failed_restarts: int = 0
    last_restart: str | None = None
    last_reason: str | None = None
    last_duration_s: float | None = None


class SupervisorHealth(BaseModel):
    running: bool
    checked_at: str | None = None
    services: dict[str, Restart] = {}


class Health(BaseModel):
    status: str  # "ok" or "degraded"
    neo4j: ServiceHealth
    redis: ServiceHealth
    restarts: dict[str, int] | None = None  # with a key, when a supervisor ran here: restarts per service
    supervisor: SupervisorHealth | None = None  # with a key, the same in detail


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


def _supervisor(res: Resources) -> SupervisorHealth | None:
    """What the supervisor of the local services reports, or None when none ever ran here."""
    home = res.settings.local_dir.resolve()
    status = read_status(home)
    if status is None:
        return None
    return SupervisorHealth(running=SupervisorLocal(home).process.pid() is not None,
                            checked_at=status.get("checked_at"),
                            services={n: Restart(**r) for n, r in status.get("services", {}).items()})


@router.get("/health", response_model=Health, response_model_exclude_none=True,
            responses={503: {"model": Health, "description": "A service is unreachable"},
                       **{code: AUTH_RESPONSES[code] for code in (401, 429)}})
def health(res: ResourcesDep, caller: OptionalCaller) -> JSONResponse:
    """Check Neo4j and Redis concurrently, each bounded by ``ATLAS_HEALTH_TIMEOUT_S``. A key is
    optional; an unknown one is 401 (and counts as a failed attempt, like on any route)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        neo4j_future = pool.submit(_check_neo4j, res)
        redis_future = pool.submit(_check_redis, res)
        body = Health(status="ok", neo4j=neo4j_future.result(), redis=redis_future.result())
    if not (body.neo4j.reachable and body.redis.reachable):
        body.status = "degraded"
    if caller is None:
        body = Health(status=body.status, neo4j=ServiceHealth(reachable=body.neo4j.reachable),
                      redis=ServiceHealth(reachable=body.redis.reachable))
    else:
        body.supervisor = _supervisor(res)
        if body.supervisor is not None:
            body.restarts = {name: r.restarts for name, r in body.supervisor.services.items()}
    code = 200 if body.status == "ok" else 503
    return JSONResponse(status_code=code, content=body.model_dump(exclude_none=True))
