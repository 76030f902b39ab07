"""raypdiff.serve.guard on a small FastAPI app in process (no Ray): what is refused before a route reads anything,
and the headers every answer carries. The same checks over real HTTP to `raypdiff serve`: tests/test_serve.py."""
from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from raypdiff.serve.guard import KEY_ERROR, MAX_HEADER_BYTES, SECURITY_HEADERS, Guard, Limits, authorized

KEY = "k" * 16
AUTH = {"Authorization": f"Bearer {KEY}"}
reads: list[int] = []  # bodies the route got to read


class Body(BaseModel):
    x: str


def make_app(limits: Limits) -> FastAPI:
    app = FastAPI(redirect_slashes=False)
    app.add_middleware(Guard)
    app.state.limits = limits

    @app.exception_handler(HTTPException)
    async def _error(request, exc):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.post("/v1/echo")
    async def echo(b: Body):
        reads.append(len(b.x))
        return {"n": len(b.x)}

    @app.get("/open")
    def open_route():
        return {"ok": True}

    return app


def call(app: FastAPI, method: str, path: str, **kw) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.request(method, path, **kw)
    return asyncio.run(go())


async def trickle(chunks: list[bytes], pause: float):
    for c in chunks:
        yield c
        await asyncio.sleep(pause)


JSON = {"content-type": "application/json"}
CASES = [  # (request, status, message in the error, whether the route read the body)
    (dict(method="POST", path="/v1/echo", json={"x": "a"}), 401, KEY_ERROR, False),
    (dict(method="POST", path="/v1/echo", json={"x": 1}), 401, KEY_ERROR, False),  # the key before validation
    (dict(method="POST", path="/v1/echo", json={"x": "a"}, headers={"Authorization": f"Basic {KEY}"}), 401, KEY_ERROR,
     False),
    (dict(method="POST", path="/v1/echo", json={"x": "a"}, headers={"Authorization": f"bearer {KEY}"}), 200, None, True),
    (dict(method="POST", path="/v1/echo", json={"x": "a"}, headers={"Authorization": f"BEARER  {KEY} "}), 200, None,
     True),
    (dict(method="POST", path="/v1/echo", json={"x": "a" * 5000}, headers=AUTH), 413, "5008 bytes, more than the 4096",
     False),
    (dict(method="POST", path="/v1/echo", content=trickle([b'{"x": "' + b"a" * 3000, b"a" * 3000 + b'"}'], 0), headers={
        **AUTH, **JSON}), 413, "more than the 4096 bytes allowed", False),  # chunked: counted as it arrives
    (dict(method="POST", path="/v1/echo", content=trickle([b'{"x": ', b'"a"}'], 0.6), headers={**AUTH, **JSON}), 408,
     "nothing arrived for 0.3 s", False),
    (dict(method="POST", path="/v1/echo", content=b'{"x": "a"}', headers={**AUTH, **JSON, "content-length": "ten"}),
     400, "content-length: not a byte count", False),
    (dict(method="GET", path="/open", headers={"x-big": "h" * MAX_HEADER_BYTES}), 431, "request headers", False),
    (dict(method="GET", path="/open"), 200, None, False),  # outside /v1: no key
]


@pytest.mark.parametrize("request_,status,message,read", CASES)
def test_guard_refuses_before_the_route_reads(request_, status, message, read):
    app = make_app(Limits(KEY, max_body_bytes=4096, body_timeout_s=0.3))
    reads.clear()
    r = call(app, **request_)
    assert r.status_code == status, r.text
    if message is not None:
        assert message in r.json()["error"]
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    assert bool(reads) == read
    for k, v in SECURITY_HEADERS:  # on every answer, refusals included
        assert r.headers[k.decode()] == v.decode()


def test_an_open_app_needs_no_key_and_keeps_its_limits():
    app = make_app(Limits(None, max_body_bytes=4096))
    assert call(app, "POST", "/v1/echo", json={"x": "a"}).json() == {"n": 1}
    assert call(app, "POST", "/v1/echo", json={"x": "a" * 5000}).status_code == 413


@pytest.mark.parametrize("header,key,ok", [
    (None, None, True), ("anything", None, True), (None, KEY, False), ("", KEY, False), (KEY, KEY, False),
    (f"Bearer {KEY}", KEY, True), (f"bEaReR {KEY}", KEY, True), (f"Bearer {KEY}x", KEY, False),
    (f"Bearer{KEY}", KEY, False), (f"Token {KEY}", KEY, False),
])
def test_authorized(header, key, ok):
    assert authorized(header, key) is ok
