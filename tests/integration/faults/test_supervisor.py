"""The services supervisor on scratch servers (own folders, free ports): a server that is killed
(``kill -9``) or hangs (``SIGSTOP``) comes back within a bounded time, the log says which, when,
why and how long it took, the status file and ``/health`` count the restart, and ``circuits services
down`` stops the supervisor first and leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.ops.redis_local import RedisLocal
from api.ops.supervisor import Supervisor, SupervisorLocal, read_status
from tests.conftest import ROOT, free_port


def _wait(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f}s"
        time.sleep(0.1)


def _restarted(server, old_pid: int) -> bool:
    pid = server.process.pid()
    return pid is not None and pid != old_pid and server.reachable()


@pytest.fixture
def supervising() -> Iterator[Callable[[Supervisor], Supervisor]]:
    """Run supervisors in threads of this test; all stopped at teardown."""
    running: list[tuple[threading.Event, threading.Thread]] = []

    def start(supervisor: Supervisor) -> Supervisor:
        stop = threading.Event()
        thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
        thread.start()
        running.append((stop, thread))
        return supervisor

    yield start
    for stop, thread in running:
        stop.set()
        thread.join(timeout=30)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", "services", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_supervisor_restarts_killed_redis_and_down_leaves_nothing(tmp_path, api_server, reaper):
    local = tmp_path / "local"
    redis = RedisLocal(home=local / "redis", port=free_port())
    watcher = SupervisorLocal(local)
    reaper(redis)
    reaper(watcher)
    # Neo4j points at a port nothing uses: `--only redis` never starts it, and nothing here can
    # touch the shared servers.
    env = {**os.environ, "ATLAS_LOCAL_DIR": str(local), "ATLAS_REDIS_URL": redis.url(),
           "ATLAS_NEO4J_URI": f"bolt://127.0.0.1:{free_port()}", "ATLAS_SUPERVISOR_INTERVAL_S": "0.3"}
    up = _cli(env, "up", "--only", "redis")
    assert up.returncode == 0, up.stderr
    assert "redis started" in up.stdout and "supervisor started" in up.stdout
    old = redis.process.pid()
    assert old is not None and watcher.process.pid() is not None

    killed_at = time.monotonic()
    os.kill(old, signal.SIGKILL)
    _wait(lambda: _restarted(redis, old), 20, "the restart of redis")
    back_after = time.monotonic() - killed_at
    _wait(lambda: "restarted in" in (local / "supervisor.log").read_text(), 5, "the log line")
    log = (local / "supervisor.log").read_text()
    assert f"redis down: process exited (pid {old} gone); restarting" in log
    assert "redis restarted in " in log and f"(pid {redis.process.pid()}, restart #1)" in log
    _wait(lambda: read_status(local)["services"]["redis"]["restarts"] == 1, 5, "the status update")
    record = read_status(local)["services"]["redis"]
    assert record["last_reason"] == f"process exited (pid {old} gone)" and record["last_restart"]
    assert read_status(local)["services"]["neo4j"]["restarts"] == 0  # never started here: left alone

    status = _cli(env, "status", "--json")
    rows = {row["service"]: row for row in json.loads(status.stdout)}
    assert rows["supervisor"]["pid"] == watcher.process.pid() and rows["supervisor"]["restarts"]["redis"] == 1

    key = {"X-API-Key": "atlas-dev-read"}
    with api_server({"ATLAS_LOCAL_DIR": str(local), "ATLAS_REDIS_URL": redis.url()}).client() as client:
        detailed = client.get("/health", headers=key).json()
        anonymous = client.get("/health").json()
    assert detailed["restarts"] == {"redis": 1, "neo4j": 0}
    assert detailed["supervisor"]["running"] is True
    assert detailed["supervisor"]["services"]["redis"]["last_reason"] == record["last_reason"]
    assert "restarts" not in anonymous and "supervisor" not in anonymous

    # Stopping one service: the supervisor stops first, and comes back for the others.
    only = _cli(env, "down", "--only", "redis")
    assert only.returncode == 0, only.stderr
    lines = only.stdout.splitlines()
    assert lines[:2] == ["supervisor stopped", "redis stopped"] and "supervisor started" in lines[2]
    time.sleep(1.0)  # three supervisor rounds: redis must stay down
    assert redis.process.all_pids() == [] and not redis.reachable()
    assert watcher.process.pid() is not None

    down = _cli(env, "down")
    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines()[0] == "supervisor stopped"  # the supervisor first
    assert redis.process.all_pids() == [] and watcher.process.all_pids() == []
    log = (local / "supervisor.log").read_text()
    assert log.count("restarted in") == 1 and log.rstrip().endswith("supervisor stopped (pid "
                                                                    f"{read_status(local)['pid']})")
    assert read_status(local)["running"] is False
    print(f"redis back {back_after:.1f}s after kill -9")


@pytest.mark.slow
def test_hung_redis_is_stopped_and_restarted(tmp_path, supervising, reaper):
    redis = RedisLocal(home=tmp_path / "redis", port=free_port())
    reaper(redis)
    redis.up()
    old = redis.process.pid()
    supervisor = supervising(Supervisor({"redis": redis}, tmp_path, interval_s=0.3, fail_checks=3,
                                        stop_timeout_s=1.0))
    os.kill(old, signal.SIGSTOP)  # alive, holds its port, answers nothing
    try:
        _wait(lambda: _restarted(redis, old), 30, "the restart of the hung redis")
        _wait(lambda: "restarted in" in supervisor.log_path.read_text(), 5, "the log line")
    finally:
        if redis.process.matches(old):
            os.kill(old, signal.SIGKILL)
    log = supervisor.log_path.read_text()
    assert f"redis down: pid {old} alive but not answering for 3 checks" in log
    assert "redis restarted in" in log


@pytest.mark.slow
def test_killed_neo4j_comes_back(scratch_neo4j, tmp_path, supervising):
    """The finding: Neo4j's JVM exited (out of heap) and nothing restarted it. ``kill -9`` stands in
    for the exit, whatever the memory limits of the day make of the query that caused it."""
    neo4j = scratch_neo4j()
    old = neo4j.process.pid()
    supervisor = supervising(Supervisor({"neo4j": neo4j}, tmp_path, interval_s=0.5))
    killed_at = time.monotonic()
    os.kill(old, signal.SIGKILL)
    _wait(lambda: _restarted(neo4j, old), 240, "the restart of neo4j")
    back_after = time.monotonic() - killed_at
    _wait(lambda: "restarted in" in supervisor.log_path.read_text(), 10, "the log line")
    log = supervisor.log_path.read_text()
    assert f"neo4j down: process exited (pid {old} gone); restarting" in log
    assert "neo4j restarted in" in log and "restart #1" in log
    _wait(lambda: (read_status(tmp_path) or {}).get("services", {}).get("neo4j", {}).get("restarts") == 1,
          5, "the status update")
    assert read_status(tmp_path)["services"]["neo4j"]["last_duration_s"] > 0
    print(f"neo4j back {back_after:.1f}s after kill -9")


def test_supervisor_leaves_services_it_did_not_start_alone(tmp_path, supervising):
    """No pid file, no restart: a server `up` found already running, or one `down` stopped."""
    never_started = RedisLocal(home=tmp_path / "redis", port=free_port())
    supervisor = supervising(Supervisor({"redis": never_started}, tmp_path, interval_s=0.1))
    time.sleep(0.5)
    assert never_started.process.pid() is None and not Path(never_started.process.pidfile).exists()
    assert "redis down" not in supervisor.log_path.read_text()
    assert read_status(tmp_path)["services"]["redis"]["restarts"] == 0
