"""Job records in Redis: what the API shows and what workers update, with every state change done
atomically by a small Lua script so that the API, workers and the recovery sweep never race.

A job is a hash ``atlas:job:{id}``; ``atlas:jobs`` orders all jobs by creation time (paging),
``atlas:key:{key_id}:jobs`` those of one API key (a key sees its own jobs); ``atlas:jobs:active``
and ``atlas:key:{key_id}:active`` hold the jobs not yet finished (the sweep and the per-key cap
read them). States: queued -> running -> succeeded | failed | cancelled, and running -> queued
again when the worker running it stops beating (it died).

Every time in a record (created, sent, heartbeat, started, finished) is Redis's own clock (``TIME``
inside the scripts), so hosts whose clocks disagree never make a live job look stale. Staleness is
only trusted over time Redis could have recorded a beat: a heartbeat is measured from the later of
itself and a ``since`` the caller gives (Redis's start, the end of the sweeper's own outage), so a
Redis restart or an outage never makes a live worker look dead.

Redis runs with an append-only file (``circuits services up``, docker-compose), so a restart
keeps every record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

TERMINAL = ("succeeded", "failed", "cancelled")
ALL_JOBS = "atlas:jobs"
ACTIVE = "atlas:jobs:active"
#: Where kombu's Redis transport keeps delivered, not yet acknowledged messages.
UNACKED = "unacked"
#: kombu's separator between a queue's name and a priority step in its list's key.
_PRIORITY_SEP = "\x06\x16"


def job_key(job_id: str) -> str:
    return f"atlas:job:{job_id}"


def key_active(key_id: str) -> str:
    return f"atlas:key:{key_id}:active"


def key_jobs(key_id: str) -> str:
    return f"atlas:key:{key_id}:jobs"


_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

# KEYS: job, all, active, key-active, key-jobs. ARGV: id, cap, then field/value pairs.
_CREATE = _NOW + """
if redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'created_at', now, unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZADD', KEYS[5], now, ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
"""

# KEYS: job, active. ARGV: id, then field/value pairs. A part of a fan-out job (workers.fanout):
# recorded once (0 when it already exists), swept like any job, but in no listing and under no
# key's cap (its parent is).
_CREATE_PART = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'created_at', now, unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: job. ARGV: runner, stale seconds, since. A queued job, or a running one whose runner stopped
# beating, is taken; anything else is left alone (a re-delivered message of a finished job).
_CLAIM = _NOW + """
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return 'missing' end
if s == 'running' then
  local hb = math.max(tonumber(redis.call('HGET', KEYS[1], 'heartbeat') or '0'), tonumber(ARGV[3]))
  if now - hb < tonumber(ARGV[2]) then return 'busy' end
elseif s ~= 'queued' then return s end
redis.call('HSET', KEYS[1], 'state', 'running', 'runner', ARGV[1], 'heartbeat', now,
           'started_at', now, 'stage', 'starting', 'done', '', 'total', '', 'percent', '', 'eta_s', '')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 'ok'
"""

# KEYS: job. ARGV: runner, then field/value pairs. Returns the cancel flag, or 'lost' when this
# runner no longer owns the job.
_BEAT = _NOW + """
if redis.call('HGET', KEYS[1], 'runner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 'lost'
end
redis.call('HSET', KEYS[1], 'heartbeat', now, unpack(ARGV, 2))
return redis.call('HGET', KEYS[1], 'cancel') or '0'
"""

# KEYS: job, active, key-active. ARGV: runner ('' = any), state, then field/value pairs.
# Success is refused ('cancel') when a cancel arrived meanwhile: the caller undoes its write.
_FINISH = _NOW + """
local s = redis.call('HGET', KEYS[1], 'state')
if ARGV[1] ~= '' and (redis.call('HGET', KEYS[1], 'runner') ~= ARGV[1] or s ~= 'running') then return 'lost' end
if ARGV[2] == 'succeeded' and redis.call('HGET', KEYS[1], 'cancel') == '1' then return 'cancel' end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finished_at', now, unpack(ARGV, 3))
redis.call('SREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
redis.call('SREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
return 'ok'
"""

# KEYS: job, active, key-active. A queued job ends at once; a running one is flagged and its
# worker stops at its next progress report.
_CANCEL = _NOW + """
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return 'missing' end
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancel', '1', 'finished_at', now)
  redis.call('SREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
  redis.call('SREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
  return 'stopped'
end
if s == 'running' then redis.call('HSET', KEYS[1], 'cancel', '1') return 'cancelling' end
return s
"""

# KEYS: job. ARGV: stale seconds, since.
_REQUEUE = _NOW + """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
local hb = math.max(tonumber(redis.call('HGET', KEYS[1], 'heartbeat') or '0'), tonumber(ARGV[2]))
if now - hb < tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'runner', '', 'stage', 'requeued: its worker stopped',
           'sent_at', now)
return 1
"""

# KEYS: job. ARGV: grace seconds, the sent_at the caller saw. A queued job sent (or created) more
# than grace ago, and not sent again since the caller looked, is the caller's to re-send.
_RESEND = _NOW + """
if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 0 end
local sent = redis.call('HGET', KEYS[1], 'sent_at') or ''
if sent ~= ARGV[2] then return 0 end
local last = tonumber(sent ~= '' and sent or redis.call('HGET', KEYS[1], 'created_at') or '0')
if now - last < tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'sent_at', now, 'stage', 'queued: its message was lost, sent again')
redis.call('HINCRBY', KEYS[1], 'resent', 1)
return 1
"""

# KEYS: job. ARGV: task id.
_SENT = _NOW + """
redis.call('HSET', KEYS[1], 'task_id', ARGV[1], 'sent_at', now)
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
        self._create_part = r.register_script(_CREATE_PART)
        self._finish, self._cancel = r.register_script(_FINISH), r.register_script(_CANCEL)
        self._requeue, self._resend, self._sent = (r.register_script(_REQUEUE), r.register_script(_RESEND),
                                                   r.register_script(_SENT))

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True, **kwargs))

    # -- Redis's clock -----------------------------------------------------------------------------
    def now(self) -> float:
        """Redis's clock, the one every record's times are on."""
        seconds, micros = self.redis.time()
        return seconds + micros / 1e6

    def redis_started(self) -> float:
        """When the Redis server started, on its clock: no heartbeat can be older than this for a
        worker that was alive all along, since none could be written before."""
        info = self.redis.info("server")
        return info["server_time_usec"] / 1e6 - info["uptime_in_seconds"]

    # -- the API's side ----------------------------------------------------------------------------
    def create(self, job_id: str, *, spec: dict, key_id: str, queue: str, cap: int,
               kind: str = "discovery") -> bool:
        """Record a queued job of ``kind`` (a key of :data:`workers.kinds.KINDS`); False (nothing
        written) when ``key_id`` already has ``cap`` active."""
        fields = {"id": job_id, "kind": kind, "key_id": key_id, "spec": json.dumps(spec), "queue": queue,
                  "state": "queued", "attempts": 0, "cancel": 0, "stage": "queued"}
        keys = [job_key(job_id), ALL_JOBS, ACTIVE, key_active(key_id), key_jobs(key_id)]
        return bool(self._create(keys=keys, args=[job_id, cap, *_pairs(fields)]))

    def create_part(self, job_id: str, *, parent: str, spec: dict, key_id: str, queue: str, kind: str) -> bool:
        """Record a queued part of job ``parent`` (same key and queue); False when it exists
        already (the parent runs again after a crash: its parts keep their state and results)."""
        fields = {"id": job_id, "kind": kind, "parent": parent, "key_id": key_id, "spec": json.dumps(spec),
                  "queue": queue, "state": "queued", "attempts": 0, "cancel": 0, "stage": "queued"}
        return bool(self._create_part(keys=[job_key(job_id), ACTIVE], args=[job_id, *_pairs(fields)]))

    def get(self, job_id: str) -> dict[str, str] | None:
        record = self.redis.hgetall(job_key(job_id))
        return record or None

    def page(self, *, offset: int, limit: int, key_id: str | None = None) -> tuple[int, list[dict[str, str]]]:
        """(total, records) newest first: every job, or only those ``key_id`` created."""
        index = ALL_JOBS if key_id is None else key_jobs(key_id)
        ids = self.redis.zrevrange(index, offset, offset + limit - 1)
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hgetall(job_key(job_id))
        return self.redis.zcard(index), [r for r in pipe.execute() if r]

    def cancel(self, job_id: str) -> str:
        """'stopped' (it was queued), 'cancelling' (running: its worker stops it), 'missing', or
        the terminal state the job already had."""
        record = self.get(job_id)
        if record is None:
            return "missing"
        keys = [job_key(job_id), ACTIVE, key_active(record["key_id"])]
        return self._cancel(keys=keys)

    def set_task(self, job_id: str, task_id: str) -> None:
        """Record that the job's message went out as Celery task ``task_id``, and when."""
        self._sent(keys=[job_key(job_id)], args=[task_id])

    # -- the worker's side -------------------------------------------------------------------------
    def claim(self, job_id: str, runner: str, *, stale_s: float, since: float = 0.0) -> str:
        """'ok' when ``runner`` now runs the job; 'busy' when another runner beats for it; else the
        job's state or 'missing'. A running job is taken over only when its heartbeat is
        ``stale_s`` older than both itself and ``since`` (pass :meth:`redis_started`)."""
        return self._claim(keys=[job_key(job_id)], args=[runner, stale_s, since])

    def beat(self, job_id: str, runner: str, **fields: Any) -> str:
        """Heartbeat plus progress fields; returns '1' when a cancel was asked, 'lost' when another
        runner owns the job now."""
        return self._beat(keys=[job_key(job_id)], args=[runner, *_pairs(fields)])

    def finish(self, job_id: str, runner: str, state: str, **fields: Any) -> str:
        """'ok'; 'cancel' when success is refused because a cancel arrived; 'lost' when not ours."""
        assert state in TERMINAL
        record = self.get(job_id) or {}
        keys = [job_key(job_id), ACTIVE, key_active(record.get("key_id", ""))]
        return self._finish(keys=keys, args=[runner, state, *_pairs(fields)])

    def requeue_stale(self, stale_s: float, *, since: float = 0.0) -> list[dict[str, str]]:
        """Jobs whose runner stopped beating, put back to queued; the caller re-sends them. A beat
        counts as stale only ``stale_s`` after both itself and ``since``."""
        requeued = []
        for job_id in self.redis.smembers(ACTIVE):
            if self._requeue(keys=[job_key(job_id)], args=[stale_s, since]):
                requeued.append(self.get(job_id) or {})
        return [r for r in requeued if r]

    def lost_queued(self, grace_s: float) -> list[dict[str, str]]:
        """Queued jobs sent (or created) over ``grace_s`` ago whose message the broker holds
        nowhere: neither in its queue's lists nor among delivered, unacknowledged messages.
        Each is returned once (its ``sent_at`` is bumped here): the caller re-sends it."""
        now, waiting, pipe = self.now(), [], self.redis.pipeline(transaction=False)
        for job_id in self.redis.smembers(ACTIVE):
            pipe.hgetall(job_key(job_id))
        for record in pipe.execute():
            if record and record.get("state") == "queued":
                last = float(record.get("sent_at") or record.get("created_at") or 0)
                if now - last >= grace_s:
                    waiting.append(record)
        if not waiting:
            return []
        held = self.broker_holds({r["queue"] for r in waiting},
                                 [n for r in waiting for n in (r["id"], r.get("task_id", "")) if n])
        lost = [r for r in waiting if r["id"] not in held and r.get("task_id", "") not in held]
        return [r for r in lost
                if self._resend(keys=[job_key(r["id"])], args=[grace_s, r.get("sent_at", "")])]

    def broker_holds(self, queues: set[str], needles: list[str], *, chunk: int = 500) -> set[str]:
        """Which of ``needles`` (job or task ids) appear in a message the broker holds for
        ``queues`` (every priority list of each) or has delivered without an acknowledgement."""
        found: set[str] = set()

        def scan(raw: str) -> None:
            found.update(n for n in needles if n not in found and n in raw)

        lists = [q + suffix for q in queues for suffix in ("", *(f"{_PRIORITY_SEP}{p}" for p in (3, 6, 9)))]
        for name in lists:
            for start in range(0, self.redis.llen(name), chunk):
                for raw in self.redis.lrange(name, start, start + chunk - 1):
                    scan(raw)
        for _, raw in self.redis.hscan_iter(UNACKED, count=chunk):
            scan(raw)
        return found
