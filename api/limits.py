"""The request body cap: an ASGI middleware that answers 413 before the app reads a body larger than
``ATLAS_MAX_BODY_BYTES``.

A declared ``Content-Length`` over the cap is refused without reading the body. A body without one
(``Transfer-Encoding: chunked``) is read up to the cap, counting the bytes of each chunk, and
refused as soon as it passes it; a body within the cap is handed to the app unchanged. No route
ever sees a body over the cap, whatever it does with it.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_detail(max_bytes: int) -> str:
    """The 413 message: names the limit and the setting that holds it."""
    return (f"request body too large: the limit is {max_bytes} bytes (ATLAS_MAX_BODY_BYTES); "
            "send less, e.g. split the request")


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.decode("latin-1")
    return None


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413 and a JSON ``detail``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None:
            if not declared.isdigit():
                await _send_json(send, 400, f"Content-Length {declared!r} is not a byte count")
                return
            if int(declared) > self.max_bytes:
                await _send_json(send, 413, too_large_detail(self.max_bytes))
                return
        body = await self._read_capped(receive)
        if body is None:
            await _send_json(send, 413, too_large_detail(self.max_bytes))
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_capped(self, receive: Receive) -> list[Message] | None:
        """Every message of the body, or None as soon as their bytes pass the cap."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away: let the app see it
                return messages
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read (as one message), then defers to ``receive``."""
    pending: list[Message] = []
    if messages and messages[-1]["type"] == "http.request":
        pending.append({"type": "http.request",
                        "body": b"".join(m.get("body", b"") for m in messages), "more_body": False})
    else:
        pending.extend(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
