"""Settings come from ATLAS_* variables, are validated once, and never print secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_point_at_local_services(monkeypatch):
    for name in ("ATLAS_NEO4J_URI", "ATLAS_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)
    assert (s.neo4j_host, s.neo4j_port) == ("127.0.0.1", 7687)
    assert (s.redis_host, s.redis_port) == ("127.0.0.1", 6379)
    assert s.queues == ["cpu"]


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("ATLAS_NEO4J_URI", "neo4j://db.example:7999")
    monkeypatch.setenv("ATLAS_REDIS_URL", "redis://cache.example:6390/2")
    monkeypatch.setenv("ATLAS_WORKER_QUEUES", "cpu,gpu")
    s = Settings(_env_file=None)
    assert (s.neo4j_host, s.neo4j_port) == ("db.example", 7999)
    assert (s.redis_host, s.redis_port) == ("cache.example", 6390)
    assert s.queues == ["cpu", "gpu"]


def test_secret_never_printed(monkeypatch):
    monkeypatch.setenv("ATLAS_NEO4J_PASSWORD", "hunter2-very-secret")
    s = Settings(_env_file=None)
    assert s.neo4j_password.get_secret_value() == "hunter2-very-secret"
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "hunter2-very-secret" not in text


def test_bad_values_are_named():
    with pytest.raises(ValidationError, match="ATLAS_NEO4J_URI"):
        Settings(_env_file=None, neo4j_uri="http://localhost:7474")
    with pytest.raises(ValueError, match="ATLAS_WORKER_QUEUES"):
        _ = Settings(_env_file=None, worker_queues="cpu,tpu").queues


def test_cli_reports_bad_setting_without_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "services", "status"], cwd=ROOT, capture_output=True,
        text=True, env={"PATH": "/usr/bin:/bin", "ATLAS_NEO4J_URI": "http://nope"},
    )
    assert done.returncode == 1
    assert "ATLAS_NEO4J_URI" in done.stderr and "Traceback" not in done.stderr


def test_key_scopes_admin_implies_write_and_read():
    s = Settings(_env_file=None, api_keys="boss:admin,pen:write,eye:read")
    assert s.key_scopes == {"boss": {"read", "write", "admin"}, "pen": {"read", "write"},
                            "eye": {"read"}}
    assert not s.uses_dev_keys
    with pytest.raises(ValueError, match="ATLAS_API_KEYS must be .*key:admin"):
        _ = Settings(_env_file=None, api_keys="boss:root").key_scopes


def test_dev_keys_are_recognised_wherever_they_appear():
    assert Settings(_env_file=None).uses_dev_keys  # the default
    assert Settings(_env_file=None, api_keys="mine-long-key:admin,atlas-dev-read:read").uses_dev_keys
    assert Settings(_env_file=None, api_keys="atlas-dev-write:admin").uses_dev_keys


def test_guard_and_supervisor_settings_are_bounded():
    s = Settings(_env_file=None)
    assert (s.auth_fail_limit, s.auth_fail_window_s) == (10, 60.0)
    assert (s.supervisor_interval_s, s.supervisor_fail_checks) == (5.0, 6)
    for field, bad in (("auth_fail_limit", 0), ("auth_fail_window_s", 0), ("supervisor_interval_s", -1),
                       ("supervisor_fail_checks", 0)):
        with pytest.raises(ValidationError, match=field):
            Settings(_env_file=None, **{field: bad})
