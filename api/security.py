"""API keys: every ``/v1`` route needs an ``X-API-Key`` header naming a key from the settings; the
read scope may look, the write scope may also submit, cancel and delete. Keys are compared in
constant time and never stored or logged: jobs remember a short hash of the key that made them."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from api.deps import ResourcesDep

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from ATLAS_API_KEYS")


@dataclass(frozen=True)
class Caller:
    """Who made a request: a hash of the key (safe to store) and its scopes."""

    key_id: str
    scopes: frozenset[str]


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _caller(res: ResourcesDep, key: str | None, scope: str) -> Caller:
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing X-API-Key header; "
                            "send a key from ATLAS_API_KEYS", headers={"WWW-Authenticate": "APIKey"})
    for known, scopes in res.settings.key_scopes.items():
        if hmac.compare_digest(known.encode(), key.encode()):
            if scope not in scopes:
                raise HTTPException(status.HTTP_403_FORBIDDEN,
                                    detail=f"this API key has the read scope only; {scope} needs a write key")
            return Caller(key_id(key), scopes)
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="unknown API key",
                        headers={"WWW-Authenticate": "APIKey"})


def _reader(request: Request, res: ResourcesDep, key: Annotated[str | None, Depends(_header)]) -> Caller:
    return _caller(res, key, "read")


def _writer(request: Request, res: ResourcesDep, key: Annotated[str | None, Depends(_header)]) -> Caller:
    return _caller(res, key, "write")


ReadCaller = Annotated[Caller, Depends(_reader)]
WriteCaller = Annotated[Caller, Depends(_writer)]
