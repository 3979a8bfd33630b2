"""API keys: every ``/v1`` route needs an ``X-API-Key`` header naming a key from the settings; the
read scope may look, the write scope may also submit, cancel and delete, the admin scope may also
see and cancel every key's jobs. Keys are compared in constant time and never stored or logged:
jobs remember a short hash of the key that made them.

Two guards sit around the keys:

- the development keys (published in the README) are refused anywhere but loopback: the API will
  not start bound to another address while ``ATLAS_API_KEYS`` contains one of them;
- failed-key attempts are counted per client address; after ``ATLAS_AUTH_FAIL_LIMIT`` unknown keys
  within ``ATLAS_AUTH_FAIL_WINDOW_S`` seconds, every request from that address that names a key is
  answered 429 (with ``Retry-After``) until the oldest failure leaves the window. A good key is
  refused too while the address is blocked: were it let through, the difference between its answer
  and a bad key's would tell a guesser when a guess was right, which is what the block prevents.
  Requests without a key are not guesses: they are not counted, and get their 401 as usual.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from api.deps import ResourcesDep
from api.openapi import Problem
from workers.settings import DEV_API_KEYS, Settings

log = logging.getLogger("api.security")

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from ATLAS_API_KEYS")


#: OpenAPI entries of the answers a key check may give, for a route's ``responses=``.
AUTH_RESPONSES: dict[int | str, dict] = {
    401: {"model": Problem, "description": "No X-API-Key header, or an unknown key"},
    403: {"model": Problem, "description": "The key lacks the scope this route needs"},
    429: {"model": Problem, "description": "Too many failed keys from this address; see Retry-After"},
}


@dataclass(frozen=True)
class Caller:
    """Who made a request: a hash of the key (safe to store) and its scopes."""

    key_id: str
    scopes: frozenset[str]


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# -- binding: no development keys beyond loopback -----------------------------------------------
class UnsafeKeys(ValueError):
    """The API was asked to listen on a reachable address with the published development keys."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or a wildcard such as 0.0.0.0 reaches beyond this machine


def check_keys_for_bind(settings: Settings, host: str) -> None:
    """Raise :class:`UnsafeKeys` when ``host`` is not loopback and the development keys are on.

    Also parses ``ATLAS_API_KEYS`` once, so a malformed value stops the API at start, not at the
    first request."""
    if settings.uses_dev_keys and not is_loopback(host):
        raise UnsafeKeys(
            f"refusing to serve on {host} with the development API keys ({', '.join(sorted(DEV_API_KEYS))}), "
            "which anyone who read the README can use: set ATLAS_API_KEYS to keys of your own, e.g. "
            "ATLAS_API_KEYS=\"$(openssl rand -hex 24):admin,$(openssl rand -hex 24):read\", "
            "or serve on 127.0.0.1 (ATLAS_API_HOST, --host)"
        )


# -- failed-key attempts per client address ----------------------------------------------------
class FailedKeys:
    """Failed-key attempts per client address in a sliding window of ``window_s`` seconds.

    Bounded in memory: at most ``limit`` timestamps per address and ``max_addresses`` addresses
    (the oldest entries are dropped beyond that). One per API process; thread-safe, because
    FastAPI runs sync dependencies in a thread pool."""

    def __init__(self, limit: int, window_s: float, *, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _live(self, address: str, now: float) -> deque[float] | None:
        """The address's failures still inside the window (expired ones dropped), or None."""
        fails = self._fails.get(address)
        while fails and fails[0] <= now - self.window_s:
            fails.popleft()
        if fails is not None and not fails:
            del self._fails[address]
            return None
        return fails

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try a key again; 0 when it may now."""
        with self._lock:
            now = self._clock()
            fails = self._live(address, now)
            if fails is None or len(fails) < self.limit:
                return 0.0
            return max(fails[0] + self.window_s - now, 0.0)

    def record(self, address: str) -> bool:
        """Count one failed attempt; True when it was the one that blocks the address."""
        with self._lock:
            now = self._clock()
            fails = self._live(address, now)
            if fails is None:
                fails = self._fails[address] = deque(maxlen=self.limit)
            fails.append(now)
            if len(self._fails) > self.max_addresses:
                self._forget_oldest(now)
            return len(fails) == self.limit

    def _forget_oldest(self, now: float) -> None:
        for address in list(self._fails):
            self._live(address, now)
        while len(self._fails) > self.max_addresses:
            del self._fails[next(iter(self._fails))]


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _refuse_if_blocked(guard: FailedKeys, address: str) -> None:
    wait = guard.blocked_for(address)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(seconds)},
                            detail=f"too many failed API keys from this address ({guard.limit} in "
                                   f"{guard.window_s:g}s); every key is refused for {seconds}s more. "
                                   "Check the key you send (ATLAS_API_KEYS names the valid ones)")


# -- the dependencies ------------------------------------------------------------------------
def _identify(request: Request, res: ResourcesDep, key: str) -> Caller:
    """The caller a key names; 429 while its address is blocked, 401 (counted) when unknown."""
    guard: FailedKeys = request.app.state.failed_keys
    address = _client(request)
    _refuse_if_blocked(guard, address)
    for known, scopes in res.settings.key_scopes.items():
        if hmac.compare_digest(known.encode(), key.encode()):
            return Caller(key_id(key), scopes)
    if guard.record(address):
        log.warning("client %s sent %d unknown API keys within %gs; its keys are refused for a while",
                    address, guard.limit, guard.window_s)
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="unknown API key",
                        headers={"WWW-Authenticate": "APIKey"})


def _caller(request: Request, res: ResourcesDep, key: str | None, scope: str) -> Caller:
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing X-API-Key header; "
                            "send a key from ATLAS_API_KEYS", headers={"WWW-Authenticate": "APIKey"})
    caller = _identify(request, res, key)
    if scope not in caller.scopes:
        held = ", ".join(sorted(caller.scopes))
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail=f"this API key has the {held} scope only; {scope} needs a {scope} key")
    return caller


def _reader(request: Request, res: ResourcesDep, key: Annotated[str | None, Depends(_header)]) -> Caller:
    return _caller(request, res, key, "read")


def _writer(request: Request, res: ResourcesDep, key: Annotated[str | None, Depends(_header)]) -> Caller:
    return _caller(request, res, key, "write")


def _optional(request: Request, res: ResourcesDep,
              key: Annotated[str | None, Depends(_header)]) -> Caller | None:
    """None without a key; with one, the same checks (and counting) as any route."""
    return _identify(request, res, key) if key else None


ReadCaller = Annotated[Caller, Depends(_reader)]
WriteCaller = Annotated[Caller, Depends(_writer)]
#: For routes open to everyone that show more to a key holder (``/health``).
OptionalCaller = Annotated[Caller | None, Depends(_optional)]
