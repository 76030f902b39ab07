"""What the endpoint checks before any route reads a request (pure ASGI, Ray-free): header size, the API key on /v1
routes, the body's announced and actual size, a body that stops arriving; security headers on every answer."""
from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass
from typing import Optional

from starlette.exceptions import HTTPException

MAX_HEADER_BYTES = 16 * 1024  # what a browser or client sends is a few hundred bytes
KEY_ERROR = "missing or wrong API key (send Authorization: Bearer <key>)"
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", b"frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
                    (b"referrer-policy", b"no-referrer")]


@dataclass(frozen=True)
class Limits:
    api_key: Optional[str] = None  # None: /v1 routes are open
    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 10.0  # a body that has started must keep arriving: seconds allowed between its chunks


class Refusal(HTTPException):
    """An HTTPException, so that a route reading the body passes it on (FastAPI turns other errors there into 400)."""


def authorized(header: Optional[str], key: Optional[str]) -> bool:
    """`Authorization: Bearer <key>`; the scheme is case-insensitive (RFC 7235), the key compared in constant time."""
    if key is None:
        return True
    scheme, _, token = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def check_head(scope: dict, limits: Limits) -> None:
    """Refusal for what the request line and headers already show; nothing of the body is read."""
    headers = scope["headers"]
    if sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
        raise Refusal(431, f"request headers: more than {MAX_HEADER_BYTES} bytes")
    h = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
    path = scope["path"]
    if (path == "/v1" or path.startswith("/v1/")) and not authorized(h.get("authorization"), limits.api_key):
        raise Refusal(401, KEY_ERROR, {"WWW-Authenticate": "Bearer"})
    length = h.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise Refusal(400, "content-length: not a byte count")
        if int(length) > limits.max_body_bytes:
            raise Refusal(413, f"request body: {int(length)} bytes, more than the {limits.max_body_bytes} allowed")


class Guard:
    """ASGI middleware; its Limits come from `scope["app"].state.limits` (set where the settings are known)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limits = getattr(scope["app"].state, "limits", None) or Limits()
        started = False

        async def send_secured(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        seen, body_done = 0, False

        async def receive_bounded():
            nonlocal seen, body_done
            if body_done:  # after the body, receive() waits for a disconnect: no deadline there
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), limits.body_timeout_s)
            except asyncio.TimeoutError:
                raise Refusal(408, f"request body: nothing arrived for {limits.body_timeout_s:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > limits.max_body_bytes:
                    raise Refusal(413, f"request body: more than the {limits.max_body_bytes} bytes allowed")
            return message

        try:
            check_head(scope, limits)
            await self.app(scope, receive_bounded, send_secured)
        except Refusal as r:
            if started:  # the answer is already on its way; nothing else can be said
                raise
            body = json.dumps({"error": r.detail}).encode()
            extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (r.headers or {}).items()]
            await send_secured({"type": "http.response.start", "status": r.status_code,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode()), *extra]})
            await send_secured({"type": "http.response.body", "body": body})
