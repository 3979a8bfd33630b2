"""The local-service lifecycle on a scratch directory and free ports: start, detect a running
service instead of starting a second, stop without leaving a process behind."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from api.ops.neo4j_local import Neo4jLocal
from api.ops.process import ServiceError
from api.ops.redis_local import RedisLocal
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_redis_lifecycle(tmp_path, reaper):
    redis = RedisLocal(home=tmp_path / "redis", port=free_port())
    reaper(redis)
    assert "started" in redis.up()
    pid = redis.process.pid()
    assert "already running" in redis.up()
    assert redis.process.pid() == pid
    assert redis.process.all_pids() == [pid]  # one server, not two
    assert redis.down() == "redis stopped"
    assert redis.process.all_pids() == []
    assert not redis.reachable()
    assert redis.down() == "redis was not running"


def test_port_taken_by_a_stranger_is_reported(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        redis = RedisLocal(home=tmp_path / "redis", port=squatter.getsockname()[1])
        with pytest.raises(ServiceError, match="did not start"):
            redis.up()


@pytest.mark.slow
def test_neo4j_lifecycle(tmp_path, reaper):
    neo4j = Neo4jLocal(home=tmp_path / "neo4j", password="lifecycle-pass", port=free_port(),
                       heap="256m", pagecache="32m")
    reaper(neo4j)
    assert "started" in neo4j.up()
    pid = neo4j.process.pid()
    assert neo4j.reachable()
    assert "already running" in neo4j.up()
    assert neo4j.process.all_pids() == [pid]
    assert neo4j.down() == "neo4j stopped"
    assert neo4j.process.all_pids() == []
    assert not neo4j.reachable()


def test_cli_status_reports_running_services(settings):
    done = subprocess.run([sys.executable, "-m", "api.cli", "services", "status", "--json"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"reachable": true' in done.stdout and "password" not in done.stdout


def test_existing_server_is_used_not_duplicated_or_stopped(tmp_path, reaper):
    port = free_port()
    ours = RedisLocal(home=tmp_path / "ours", port=port)
    reaper(ours)
    ours.up()
    try:
        other = RedisLocal(home=tmp_path / "other", port=port)
        assert "using the existing server" in other.up()
        assert other.down() == "redis was not running"  # never stops what it did not start
        assert ours.reachable()
        assert ours.process.all_pids() == [ours.process.pid()]
    finally:
        ours.down()
