"""docker-compose.yml wires the whole system (no Docker engine here, so we check the file)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env(service: dict) -> dict[str, str]:
    env = service["environment"]
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def _resolve(value: str) -> str:
    """Substitute ${VAR:-default} with its default, as compose does when VAR is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_services_present(compose):
    assert {"neo4j", "redis", "api", "worker", "worker-gpu"} <= set(compose["services"])


def test_neo4j_service(compose):
    neo4j = compose["services"]["neo4j"]
    assert neo4j["image"] == "neo4j:5.26-community"
    assert "NEO4J_AUTH" in _env(neo4j)
    assert any(str(p).endswith(":7687") for p in neo4j["ports"])
    assert any(v.endswith(":/data") for v in neo4j["volumes"])
    assert "cypher-shell" in " ".join(neo4j["healthcheck"]["test"])
    assert set(v.split(":")[0] for v in neo4j["volumes"]) <= set(compose["volumes"])


def test_redis_service(compose):
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    assert "ping" in redis["healthcheck"]["test"]
    assert any(str(p).endswith(":6379") for p in redis["ports"])


def test_api_and_workers_share_one_image_with_different_commands(compose):
    s = compose["services"]
    images = {s[name]["image"] for name in ("api", "worker", "worker-gpu")}
    assert len(images) == 1
    assert all(s[name]["build"] == "." for name in ("api", "worker", "worker-gpu"))
    assert (ROOT / "Dockerfile").exists()
    commands = {tuple(s[name]["command"]) for name in ("api", "worker", "worker-gpu")}
    assert len(commands) == 3
    assert s["api"]["command"][:2] == ["circuits", "api"]
    assert s["worker"]["command"][:2] == ["circuits", "worker"]
    assert any(str(p).endswith(":8000") for p in s["api"]["ports"])
    assert "/health" in " ".join(s["api"]["healthcheck"]["test"])


@pytest.mark.parametrize("name", ["api", "worker", "worker-gpu"])
def test_environment_wiring(compose, name):
    service = compose["services"][name]
    env = {k: _resolve(v) for k, v in _env(service).items()}
    settings = Settings(_env_file=None, **{k.removeprefix("ATLAS_").lower(): v for k, v in env.items()})
    assert (settings.neo4j_host, settings.neo4j_port) == ("neo4j", 7687)
    assert (settings.redis_host, settings.redis_port) == ("redis", 6379)
    neo4j_auth = _resolve(_env(compose["services"]["neo4j"])["NEO4J_AUTH"])
    assert neo4j_auth == f"{settings.neo4j_user}/{settings.neo4j_password.get_secret_value()}"
    for dep in ("neo4j", "redis"):
        assert service["depends_on"][dep]["condition"] == "service_healthy"


def test_gpu_worker_profile(compose):
    gpu = compose["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert "gpu" in gpu["command"][gpu["command"].index("--queues") + 1].split(",")
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "profiles" not in compose["services"]["worker"]


def test_image_holds_the_shipped_models_and_runs_where_the_catalog_looks():
    """discovery.catalog finds models/ and runs/ beside the package, so the image copies both and
    installs the package in place (a wheel install would look in site-packages and find none)."""
    from discovery.catalog import SHIPPED_DIR, SHIPPED_RUNS_DIR

    text = (ROOT / "Dockerfile").read_text()
    for folder in (SHIPPED_DIR, SHIPPED_RUNS_DIR):
        assert folder.parent == ROOT and f"COPY {folder.name} ./{folder.name}" in text
    assert "--no-deps -e ." in text
