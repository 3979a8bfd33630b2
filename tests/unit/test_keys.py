"""The key guards that need no server: the development keys are refused beyond loopback (by the app
factory, by ``circuits api``, and docker-compose demands keys of its own), and the failed-key
counter blocks an address for exactly its window."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from api.main import create_app
from api.security import FailedKeys, UnsafeKeys, check_keys_for_bind, is_loopback
from workers.settings import DEV_API_KEYS, Settings

ROOT = Path(__file__).resolve().parents[2]
OWN_KEYS = "a-key-of-our-own-0123456789:admin,another-of-ours-0123456789:read"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("api.example.org", False),
])
def test_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_dev_keys_refused_beyond_loopback_only():
    dev = Settings(_env_file=None)
    check_keys_for_bind(dev, "127.0.0.1")  # a laptop: fine
    with pytest.raises(UnsafeKeys, match="refusing to serve on 0.0.0.0 .*set ATLAS_API_KEYS"):
        check_keys_for_bind(dev, "0.0.0.0")
    mixed = Settings(_env_file=None, api_keys=f"{OWN_KEYS},atlas-dev-read:read")
    with pytest.raises(UnsafeKeys, match="development API keys"):
        check_keys_for_bind(mixed, "10.0.0.5")
    check_keys_for_bind(Settings(_env_file=None, api_keys=OWN_KEYS), "0.0.0.0")


def test_app_factory_checks_atlas_api_host():
    with pytest.raises(UnsafeKeys, match="ATLAS_API_KEYS"):
        create_app(Settings(_env_file=None, api_host="0.0.0.0"))
    app = create_app(Settings(_env_file=None, api_host="0.0.0.0", api_keys=OWN_KEYS))
    assert app.state.failed_keys.limit == 10
    with pytest.raises(ValueError, match="ATLAS_API_KEYS must be"):
        create_app(Settings(_env_file=None, api_keys="no-scope-here"))  # malformed: fails at start


def test_cli_api_on_all_interfaces_with_dev_keys_exits_with_one_line():
    env = {"PATH": "/usr/bin:/bin", "ATLAS_API_PORT": "1"}  # it must stop before binding anything
    done = subprocess.run([sys.executable, "-m", "api.cli", "api", "--host", "0.0.0.0"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "refusing to serve on 0.0.0.0" in done.stderr and "ATLAS_API_KEYS" in done.stderr
    assert "Traceback" not in done.stderr
    via_setting = subprocess.run([sys.executable, "-m", "api.cli", "api"], cwd=ROOT, capture_output=True,
                                 text=True, env=env | {"ATLAS_API_HOST": "0.0.0.0"}, timeout=60)
    assert via_setting.returncode == 1 and "refusing to serve" in via_setting.stderr


def test_compose_demands_keys_from_the_environment():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in ("api", "worker", "worker-gpu"):
        keys = compose["services"][name]["environment"]["ATLAS_API_KEYS"]
        assert keys.startswith("${ATLAS_API_KEYS:?"), keys  # compose stops when it is unset
    text = (ROOT / "docker-compose.yml").read_text()
    assert not any(key in text for key in DEV_API_KEYS)
    assert "ATLAS_API_KEYS" not in (ROOT / "Dockerfile").read_text().split("# No API keys")[0]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_keys_block_for_the_window_then_slide():
    clock = Clock()
    guard = FailedKeys(3, 10.0, clock=clock)
    blocks = []
    for _ in range(3):  # failures at t = 0, 1, 2
        blocks.append(guard.record("1.2.3.4"))
        clock.now += 1
    assert blocks == [False, False, True]
    assert guard.blocked_for("1.2.3.4") == pytest.approx(7.0)  # the first failure leaves at t = 10
    assert guard.blocked_for("5.6.7.8") == 0  # per address
    clock.now += 7
    assert guard.blocked_for("1.2.3.4") == 0  # one more try allowed ...
    assert guard.record("1.2.3.4") is True  # ... and a failed one blocks again, until t = 11
    assert guard.blocked_for("1.2.3.4") == pytest.approx(1.0)
    clock.now += 20
    assert guard.blocked_for("1.2.3.4") == 0 and "1.2.3.4" not in guard._fails  # forgotten


def test_failed_keys_memory_is_bounded():
    clock = Clock()
    guard = FailedKeys(5, 60.0, max_addresses=100, clock=clock)
    for i in range(1000):
        guard.record(f"10.0.{i // 256}.{i % 256}")
    assert len(guard._fails) == 100
    assert guard.blocked_for("10.0.3.231") == 0  # the newest survive, each with one failure
    clock.now += 61
    guard.record("192.0.2.1")
    assert len(guard._fails) <= 100
