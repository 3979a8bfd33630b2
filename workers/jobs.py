"""Job records in Redis: what the API shows and what workers update, with every state change done
atomically by a small Lua script so that the API, workers and the recovery sweep never race.

A job is a hash ``atlas:job:{id}``; ``atlas:jobs`` orders all jobs by creation time (paging);
``atlas:jobs:active`` and ``atlas:key:{key_id}:active`` hold the jobs not yet finished (the sweep
and the per-key cap read them). States: queued -> running -> succeeded | failed | cancelled, and
running -> queued again when the worker running it stops beating (it died).

Redis runs with an append-only file (``circuits services up``, docker-compose), so a restart
keeps every record.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

TERMINAL = ("succeeded", "failed", "cancelled")
ALL_JOBS = "atlas:jobs"
ACTIVE = "atlas:jobs:active"


def job_key(job_id: str) -> str:
    return f"atlas:job:{job_id}"


def key_active(key_id: str) -> str:
    return f"atlas:key:{key_id}:active"


# KEYS: job, all, active, key-active. ARGV: id, created_at, cap, then field/value pairs.
_CREATE = """
if redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
"""

# KEYS: job. ARGV: runner, now, stale seconds. A queued job, or a running one whose runner stopped
# beating, is taken; anything else is left alone (a re-delivered message of a finished job).
_CLAIM = """
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return 'missing' end
if s == 'running' then
  local hb = tonumber(redis.call('HGET', KEYS[1], 'heartbeat') or '0')
  if tonumber(ARGV[2]) - hb < tonumber(ARGV[3]) then return 'busy' end
elseif s ~= 'queued' then return s end
redis.call('HSET', KEYS[1], 'state', 'running', 'runner', ARGV[1], 'heartbeat', ARGV[2],
           'started_at', ARGV[2], 'stage', 'starting', 'done', '', 'total', '', 'percent', '', 'eta_s', '')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 'ok'
"""

# KEYS: job. ARGV: runner, now, then field/value pairs. Returns the cancel flag, or 'lost' when this
# runner no longer owns the job.
_BEAT = """
if redis.call('HGET', KEYS[1], 'runner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 'lost'
end
redis.call('HSET', KEYS[1], 'heartbeat', ARGV[2], unpack(ARGV, 3))
return redis.call('HGET', KEYS[1], 'cancel') or '0'
"""

# KEYS: job, active, key-active. ARGV: runner ('' = any), state, now, then field/value pairs.
# Success is refused ('cancel') when a cancel arrived meanwhile: the caller undoes its write.
_FINISH = """
local s = redis.call('HGET', KEYS[1], 'state')
if ARGV[1] ~= '' and (redis.call('HGET', KEYS[1], 'runner') ~= ARGV[1] or s ~= 'running') then return 'lost' end
if ARGV[2] == 'succeeded' and redis.call('HGET', KEYS[1], 'cancel') == '1' then return 'cancel' end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finished_at', ARGV[3], unpack(ARGV, 4))
redis.call('SREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
redis.call('SREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
return 'ok'
"""

# KEYS: job, active, key-active. ARGV: now. A queued job ends at once; a running one is flagged and
# its worker stops at its next progress report.
_CANCEL = """
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return 'missing' end
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancel', '1', 'finished_at', ARGV[1])
  redis.call('SREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
  redis.call('SREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
  return 'stopped'
end
if s == 'running' then redis.call('HSET', KEYS[1], 'cancel', '1') return 'cancelling' end
return s
"""

# KEYS: job. ARGV: now, stale seconds.
_REQUEUE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
local hb = tonumber(redis.call('HGET', KEYS[1], 'heartbeat') or '0')
if tonumber(ARGV[1]) - hb < tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'runner', '', 'stage', 'requeued: its worker stopped')
return 1
"""


def _pairs(fields: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in fields.items():
        out += [name, "" if value is None else str(value)]
    return out


@dataclass
class JobStore:
    """Job records over a Redis client created with ``decode_responses=True``."""

    redis: redis.Redis

    def __post_init__(self) -> None:
        r = self.redis
        self._create, self._claim, self._beat = r.register_script(_CREATE), r.register_script(_CLAIM), r.register_script(_BEAT)
        self._finish, self._cancel = r.register_script(_FINISH), r.register_script(_CANCEL)
        self._requeue = r.register_script(_REQUEUE)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True, **kwargs))

    # -- the API's side ----------------------------------------------------------------------------
    def create(self, job_id: str, *, spec: dict, key_id: str, queue: str, cap: int) -> bool:
        """Record a queued job; False (nothing written) when ``key_id`` already has ``cap`` active."""
        now = time.time()
        fields = {"id": job_id, "key_id": key_id, "spec": json.dumps(spec), "queue": queue,
                  "state": "queued", "created_at": now, "attempts": 0, "cancel": 0, "stage": "queued"}
        keys = [job_key(job_id), ALL_JOBS, ACTIVE, key_active(key_id)]
        return bool(self._create(keys=keys, args=[job_id, now, cap, *_pairs(fields)]))

    def get(self, job_id: str) -> dict[str, str] | None:
        record = self.redis.hgetall(job_key(job_id))
        return record or None

    def page(self, *, offset: int, limit: int) -> tuple[int, list[dict[str, str]]]:
        """(total, records) newest first."""
        ids = self.redis.zrevrange(ALL_JOBS, offset, offset + limit - 1)
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hgetall(job_key(job_id))
        return self.redis.zcard(ALL_JOBS), [r for r in pipe.execute() if r]

    def cancel(self, job_id: str) -> str:
        """'stopped' (it was queued), 'cancelling' (running: its worker stops it), 'missing', or
        the terminal state the job already had."""
        record = self.get(job_id)
        if record is None:
            return "missing"
        keys = [job_key(job_id), ACTIVE, key_active(record["key_id"])]
        return self._cancel(keys=keys, args=[time.time()])

    def set_task(self, job_id: str, task_id: str) -> None:
        self.redis.hset(job_key(job_id), "task_id", task_id)

    # -- the worker's side -------------------------------------------------------------------------
    def claim(self, job_id: str, runner: str, *, stale_s: float) -> str:
        return self._claim(keys=[job_key(job_id)], args=[runner, time.time(), stale_s])

    def beat(self, job_id: str, runner: str, **fields: Any) -> str:
        """Heartbeat plus progress fields; returns '1' when a cancel was asked, 'lost' when another
        runner owns the job now."""
        return self._beat(keys=[job_key(job_id)], args=[runner, time.time(), *_pairs(fields)])

    def finish(self, job_id: str, runner: str, state: str, **fields: Any) -> str:
        """'ok'; 'cancel' when success is refused because a cancel arrived; 'lost' when not ours."""
        assert state in TERMINAL
        record = self.get(job_id) or {}
        keys = [job_key(job_id), ACTIVE, key_active(record.get("key_id", ""))]
        return self._finish(keys=keys, args=[runner, state, time.time(), *_pairs(fields)])

    def requeue_stale(self, stale_s: float) -> list[dict[str, str]]:
        """Jobs whose runner stopped beating, put back to queued; the caller re-sends them."""
        requeued = []
        for job_id in self.redis.smembers(ACTIVE):
            if self._requeue(keys=[job_key(job_id)], args=[time.time(), stale_s]):
                requeued.append(self.get(job_id) or {})
        return [r for r in requeued if r]
