"""The Serve endpoint over real HTTP: `raypdiff serve` on a private local Ray, the tiny generator loaded from the MLflow
model registry, an API key from RAYPDIFF_API_KEY, two replicas per deployment. Every route, every error, the key,
a downloaded zip loading into PeftModel, the store's cap, and a replica killed under load."""
from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from helpers import SLOW_MS, browser_page, enter_key, form, open_page, page_download, page_generate, start_server, \
    stop_server

pytestmark = pytest.mark.full  # end to end: the full tier

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_ADAPTERS = 16  # the store's cap in this app (the least allowed)
HEX64 = re.compile(r"^[0-9a-f]{64}$")
KEY_ERROR = "missing or wrong API key (send Authorization: Bearer <key>)"
BODY_TIMEOUT, KEEP_ALIVE = 2, 2  # seconds (serve.body_timeout_s, serve.keep_alive_s)


@pytest.fixture(scope="module")
def server(tiny_generator):
    tmp = Path(tempfile.mkdtemp(prefix="rps", dir="/tmp"))
    proc, url = start_server(["--generator", tiny_generator["model"], "--replicas", "2",
                              f"serve.tracking_uri={tiny_generator['uri']}", f"serve.store_dir={tmp / 'store'}",
                              f"serve.max_adapters={MAX_ADAPTERS}", f"serve.body_timeout_s={BODY_TIMEOUT}",
                              f"serve.keep_alive_s={KEEP_ALIVE}"], tmp, env={"RAYPDIFF_API_KEY": KEY})
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            yield {"client": client, "url": url, "proc": proc, "store": tmp / "store"}
    finally:
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def make(client, **body) -> list[dict]:
    r = client.post("/v1/adapters", json=body)
    assert r.status_code == 200, r.text
    return r.json()["adapters"]


def predict(client, adapter_id: str, texts: list) -> list[dict]:
    r = client.post("/v1/predict", json={"adapter_id": adapter_id, "texts": texts})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def download(client, adapter_id: str, dest: Path) -> Path:
    r = client.get(f"/v1/adapters/{adapter_id}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        files = sorted(z.namelist())
        assert files in (["adapter_config.json", "adapter_model.safetensors", "raypdiff.json"],  # a zoo task's
                         ["adapter_config.json", "adapter_model.safetensors", "head.safetensors", "raypdiff.json"])
        z.extractall(dest)
    return dest


SST2 = ["a gripping, beautifully acted film", "tedious and badly written", "it was fine"]
PAIRS = [["a man is playing a guitar", "a person plays an instrument"], ["a cat sleeps", "stocks fell sharply"]]
FREE = {"description": "Say whether a product review is happy or unhappy.", "label_names": ["unhappy", "happy"],
        "examples": [{"text": "love it, works great", "label": "happy"}, {"text": "broke in a day", "label": "unhappy"}]}


def test_health_and_tasks(server):
    c = server["client"]
    r = httpx.get(f"{server['url']}/healthz")  # open: no key needed
    assert r.status_code == 200 and r.json() == {"status": "ok", "generator_tasks": 2}
    catalog = c.get("/v1/tasks").json()
    assert catalog["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    tasks = {t["name"]: t for t in catalog["tasks"]}
    assert set(tasks) == {"SST-2", "STS-B"}
    assert tasks["SST-2"]["label_names"] == ["negative", "positive"] and not tasks["SST-2"]["regression"]
    assert tasks["STS-B"]["regression"] and tasks["STS-B"]["text_fields"] == ["sentence1", "sentence2"]
    for t in tasks.values():  # the page's prefill: labeled training rows in the request format
        assert len(t["examples"]) >= 2 and all({"text", "label"} == set(e) for e in t["examples"])
    assert httpx.get(f"{server['url']}/").text.startswith("<!doctype html>")
    assert httpx.get(f"{server['url']}/openapi.json").json()["info"]["title"] == "raypdiff"


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/v1/tasks", None),
    ("POST", "/v1/adapters", {"task": "SST-2"}),
    ("GET", "/v1/adapters/" + "0" * 64, None),
    ("POST", "/v1/predict", {"adapter": {"task": "SST-2"}, "texts": ["x"]}),
])
@pytest.mark.parametrize("header", [None, "Bearer wrong-key-123", KEY, f"Basic {KEY}"])
def test_every_v1_route_needs_the_key(server, method, path, body, header):
    headers = {} if header is None else {"Authorization": header}
    r = httpx.request(method, server["url"] + path, json=body, headers=headers, timeout=60)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"error": KEY_ERROR}


def test_generation_is_seeded_and_content_addressed(server):
    c = server["client"]
    a = make(c, task="SST-2", num=3, seed=7)
    assert len(a) == 3 and all(HEX64.match(x["id"]) for x in a) and len({x["id"] for x in a}) == 3
    assert [x["id"] for x in make(c, task="SST-2", num=3, seed=7)] == [x["id"] for x in a]  # same request, same ids
    assert not {x["id"] for x in make(c, task="SST-2", num=3, seed=8)} & {x["id"] for x in a}
    assert a[0]["download"] == f"/v1/adapters/{a[0]['id']}" and a[0]["layout_task"] == "SST-2"
    free = make(c, **FREE)[0]  # a new description: one adapter, a body and a head built from its examples
    assert free["task"] is None and free["label_names"] == ["unhappy", "happy"] and free["layout_task"] == "new-task"
    assert free["built"]["head"] in ("prototype", "logistic") and free["built"]["body"] in ("base", "generated:0")
    assert set(free["built"]["leave_one_out"]) == {"base", "generated:0"}
    assert make(c, **FREE)[0]["id"] == free["id"]  # the same request, the same adapter
    tuned = make(c, **FREE, tune_steps=2)[0]  # then fine-tuned on its examples: other weights, another id
    assert tuned["built"]["tune_steps"] == 2 and free["built"]["tune_steps"] == 0 and tuned["id"] != free["id"]
    r = c.post("/v1/predict", json={"adapter_id": free["id"], "texts": [["a", "b"]]})  # it was built on single texts
    assert r.status_code == 422 and "this adapter (built from its examples) reads single texts" in r.json()["error"]
    mixed = {**FREE, "examples": [*FREE["examples"], {"text": ["a", "b"], "label": "happy"}]}
    r = c.post("/v1/adapters", json=mixed)
    assert r.status_code == 422 and "where row 0 has 1" in r.json()["error"], r.text


def test_concurrent_requests_are_batched_and_each_comes_out_as_alone(server, tmp_path):
    c = server["client"]
    alone = {s: make(c, task="SST-2", seed=s)[0]["id"] for s in range(6)}
    together: dict[int, dict] = {}

    def one(seed):
        together[seed] = httpx.post(f"{server['url']}/v1/adapters", json={"task": "SST-2", "seed": seed},
                                    headers=AUTH, timeout=60).json()

    threads = [threading.Thread(target=one, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    from safetensors.numpy import load_file

    for s in range(6):  # the same adapter whether sampled alone or in a batch with others (to float precision)
        got = together[s]["adapters"][0]["id"]
        if got != alone[s]:
            a = load_file(str(download(c, got, tmp_path / f"b{s}") / "adapter_model.safetensors"))
            b = load_file(str(download(c, alone[s], tmp_path / f"a{s}") / "adapter_model.safetensors"))
            assert all(np.allclose(a[k], b[k], atol=1e-5) for k in a)


def peft_predictions(folder: Path, texts: list, num_labels: int) -> torch.Tensor:
    """What a user gets from the unzipped folder with plain transformers + PEFT."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raypdiff.lora import resolve_base

    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"  # the public id, not a path
    local = resolve_base("all-MiniLM-L6-v2")  # offline stand-in for that hub id
    base = AutoModelForSequenceClassification.from_pretrained(local, num_labels=num_labels)
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(local)
    cols = [list(c) for c in zip(*texts)] if isinstance(texts[0], list) else [texts]
    with torch.no_grad():
        logits = model(**tok(*cols, padding=True, truncation=True, max_length=32, return_tensors="pt")).logits
    return logits[:, 0] if num_labels == 1 else logits.softmax(-1)


@pytest.mark.parametrize("body,texts", [({"task": "SST-2"}, SST2), ({"task": "STS-B"}, PAIRS), (FREE, SST2)],
                         ids=["SST-2", "STS-B-pairs", "description"])
def test_downloaded_zip_loads_in_peft_and_predicts_like_the_endpoint(server, tmp_path, body, texts):
    c = server["client"]
    info = make(c, **body, seed=3)[0]
    served = predict(c, info["id"], texts)
    folder = download(c, info["id"], tmp_path / "adapter")
    meta = json.loads((folder / "raypdiff.json").read_text())
    assert meta["id"] == info["id"] and meta["label_names"] == info["label_names"]
    regression = info["regression"]
    if info.get("built"):  # a new task's body + head: the encoder under PEFT, the head from head.safetensors
        from raypdiff.newtask import TaskAdapter

        got = torch.from_numpy(TaskAdapter(folder).logits(texts)).softmax(-1)
    else:
        got = peft_predictions(folder, texts, 1 if regression else len(info["label_names"]))
    if regression:
        np.testing.assert_allclose([p["score"] for p in served], got.numpy(), atol=1e-4)
        assert all(p["label"] is None and p["probabilities"] is None for p in served)
    else:
        names = info["label_names"]
        np.testing.assert_allclose([[p["probabilities"][n] for n in names] for p in served], got.numpy(), atol=1e-4)
        assert [p["label"] for p in served] == [names[i] for i in got.argmax(-1).tolist()]


def test_predict_with_an_adapter_made_on_the_fly(server):
    c = server["client"]
    r = c.post("/v1/predict", json={"adapter": {"task": "SST-2", "seed": 11}, "texts": SST2})
    assert r.status_code == 200, r.text
    assert r.json()["adapter_id"] == make(c, task="SST-2", seed=11)[0]["id"]
    assert len(r.json()["predictions"]) == len(SST2)


@pytest.mark.parametrize("method,path,body,status,message", [
    ("POST", "/v1/adapters", {"task": "NOPE"}, 422, "unknown task 'NOPE'"),
    ("POST", "/v1/adapters", {**FREE, "examples": [{"text": "x", "label": "meh"}]}, 422, "label 'meh' is not one of"),
    ("POST", "/v1/adapters", {**FREE, "description": "   "}, 422, "description: must not be empty"),
    ("POST", "/v1/adapters", {**FREE, "description": ""}, 422, "description: must not be empty"),
    ("POST", "/v1/adapters", {}, 422, "give either task"),
    ("POST", "/v1/adapters", {"task": "SST-2", **FREE}, 422, "give either task"),
    ("POST", "/v1/adapters", {"task": "SST-2", "num": 17}, 422, "num: Input should be less than or equal to 16"),
    ("POST", "/v1/adapters", {"task": "SST-2", "num": 0}, 422, "num: Input should be greater than or equal to 1"),
    ("POST", "/v1/adapters", {"task": "SST-2", "seed": -1}, 422, "seed:"),
    ("POST", "/v1/adapters", {"task": "SST-2", "quality": 1.5}, 422, "quality:"),
    ("POST", "/v1/adapters", {"task": "SST-2", "guidance": "lots"}, 422, "guidance:"),
    ("POST", "/v1/adapters", {"task": "SST-2", "num": "3"}, 422, "num: Input should be a valid integer"),  # no coercion
    ("POST", "/v1/adapters", {"task": "SST-2", "num": True}, 422, "num: Input should be a valid integer"),
    ("POST", "/v1/adapters", {"task": "SST-2", "seed": True}, 422, "seed: Input should be a valid integer"),
    ("POST", "/v1/adapters", {"task": "SST-2", "num": 2.0}, 422, "num: Input should be a valid integer"),
    ("GET", "/v1/tasks/", None, 404, ""),  # no redirect (its Location would echo the request's Host)
    ("POST", "/v1/adapters", {"task": "SST-2", "tune_steps": 5}, 422, "tune_steps go with description"),
    ("POST", "/v1/adapters", {**FREE, "tune_steps": 101}, 422, "tune_steps: Input should be less than or equal to 100"),
    ("POST", "/v1/adapters", {**FREE, "description": "d" * 2001}, 422, "description: String should have at most 2000"),
    ("POST", "/v1/adapters", {**FREE, "label_names": ["a", "a"]}, 422, "label_names: duplicates"),
    ("POST", "/v1/adapters", {**FREE, "label_names": ["only"]}, 422, "label_names: List should have at least 2"),
    ("POST", "/v1/adapters", {**FREE, "examples": [{"text": "t", "label": "happy"}] * 33}, 422, "examples:"),
    ("POST", "/v1/adapters", {"task": "SST-2", "generator": "/etc/passwd"}, 422, "generator: Extra inputs"),
    ("POST", "/v1/adapters", "{not json", 422, "body: not valid JSON"),
    ("POST", "/v1/adapters", [1, 2], 422, "Input should be a valid dictionary"),
    ("GET", "/v1/adapters/" + "0" * 64, None, 404, "unknown adapter id"),
    ("GET", "/v1/adapters/" + "0" * 63, None, 422, "adapter_id: String should match pattern"),
    ("GET", "/v1/adapters/..%2F..%2Fetc%2Fpasswd", None, 404, ""),
    ("GET", "/v1/adapters/" + "G" * 64, None, 422, "adapter_id: String should match pattern"),
    ("POST", "/v1/predict", {"adapter_id": "0" * 64, "texts": ["x"]}, 404, "unknown adapter id"),
    ("POST", "/v1/predict", {"adapter_id": "xyz", "texts": ["x"]}, 422, "adapter_id: String should match pattern"),
    ("POST", "/v1/predict", {"texts": ["x"]}, 422, "give either adapter_id or adapter"),
    ("POST", "/v1/predict", {"adapter": {"task": "SST-2"}, "texts": []}, 422, "texts: List should have at least 1"),
    ("POST", "/v1/predict", {"adapter": {"task": "SST-2"}, "texts": ["x"] * 65}, 422, "texts: List should have at most"),
    ("POST", "/v1/predict", {"adapter": {"task": "SST-2"}, "texts": ["x" * 1001]}, 422, "String should have at most"),
    ("POST", "/v1/predict", {"adapter": {"task": "SST-2"}, "texts": [["a", "b", "c"]]}, 422, "texts."),
    ("POST", "/v1/predict", {"adapter": {"task": "STS-B"}, "texts": ["single"]}, 422, "STS-B reads [first, second]"),
    ("POST", "/v1/predict", {"adapter": {"task": "SST-2"}, "texts": ["x", ["a", "b"]]}, 422, "all single texts"),
    ("POST", "/v1/predict", {"adapter": {"task": "NOPE"}, "texts": ["x"]}, 422, "unknown task 'NOPE'"),
    ("PUT", "/v1/adapters", {"task": "SST-2"}, 405, ""),
    ("GET", "/v1/nothing", None, 404, ""),
], ids=lambda v: v if isinstance(v, (int, str)) and len(str(v)) < 40 else None)
def test_errors_are_4xx_with_one_line(server, method, path, body, status, message):
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    r = server["client"].request(method, path, headers={"Content-Type": "application/json"}, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and "\n" not in error and "Traceback" not in r.text
    assert message in error


def test_store_is_capped_least_recently_used_out(server):
    c = server["client"]
    keep = make(c, task="STS-B", seed=500)[0]["id"]
    first = [a["id"] for a in make(c, task="SST-2", num=8, seed=501)]
    time.sleep(0.05)
    assert c.get(f"/v1/adapters/{keep}").status_code == 200  # a use: now the most recently used
    make(c, task="SST-2", num=12, seed=502)  # 21 made > the cap of 16
    ids = [p.name for p in server["store"].iterdir() if HEX64.match(p.name)]
    assert len(ids) <= MAX_ADAPTERS
    assert c.get(f"/v1/adapters/{keep}").status_code == 200
    assert c.get(f"/v1/adapters/{first[0]}").status_code == 404
    r = c.post("/v1/predict", json={"adapter_id": first[0], "texts": ["x"]})
    assert r.status_code == 404 and "evicted" in r.json()["error"]


def test_a_killed_replica_is_replaced_and_requests_keep_succeeding(server):
    """Requests loop while one Generator and one Predictor replica are SIGKILLed: none fails (the ingress retries on
    the other replica) and Serve starts replacements."""
    c, proc = server["client"], server["proc"]
    adapter = make(c, task="SST-2", seed=900)[0]["id"]
    results: list = []
    stop = threading.Event()

    def load():
        with httpx.Client(base_url=server["url"], headers=AUTH, timeout=60) as cl:
            i = 0
            while not stop.is_set():
                i += 1
                r1 = cl.post("/v1/adapters", json={"task": "SST-2", "seed": 1000 + i % 5})
                r2 = cl.post("/v1/predict", json={"adapter_id": adapter, "texts": SST2})
                results.extend([r1.status_code, r2.status_code])

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        killed = []
        for title in ("ServeReplica:raypdiff:Generator", "ServeReplica:raypdiff:Predictor"):
            victims = proc.workers(title)
            assert len(victims) == 2, f"{title}: {len(victims)} replicas"
            victims[0].kill()
            killed.append(victims[0].pid)
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for both replacements
            live = {t: [p.pid for p in proc.workers(t)] for t in ("ServeReplica:raypdiff:Generator",
                                                                   "ServeReplica:raypdiff:Predictor")}
            if all(len(v) == 2 and not set(v) & set(killed) for v in live.values()):
                break
            time.sleep(1)
        else:
            pytest.fail(f"replicas not replaced within 120 s: {live}")
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [s for s in results if s != 200]
    assert len(results) > 20 and not failed, f"{len(failed)} of {len(results)} requests failed: {set(failed)}"


def raw(url: str, data: bytes, pause_after: float = 0.0, more: bytes = b"") -> tuple[bytes, float]:
    """Send bytes on one TCP connection (then, after a pause, more); → (everything the server sent until it closed,
    seconds from the first byte sent to the close)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        t0 = time.time()
        sock.sendall(data)
        if pause_after:
            time.sleep(pause_after)
            if more:
                try:
                    sock.sendall(more)
                except OSError:
                    pass
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got, time.time() - t0


def test_the_key_is_checked_before_the_body_is_read(server):
    url = server["url"]
    r = httpx.post(f"{url}/v1/adapters", json={"task": "SST-2", "num": 99}, timeout=60)  # invalid, and no key
    assert r.status_code == 401, r.text
    big = b'{"description": "' + b"d" * (2 << 20) + b'"}'  # 2 MB: over serve.max_body_bytes (1 MiB)
    t0 = time.time()
    r = httpx.post(f"{url}/v1/adapters", content=big, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 401 and time.time() - t0 < 5
    r = httpx.post(f"{url}/v1/adapters", content=big, headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "more than the 1048576 allowed" in r.json()["error"]
    r = httpx.post(f"{url}/v1/adapters", json={"task": "SST-2"}, headers={"Authorization": f"bearer {KEY}"}, timeout=60)
    assert r.status_code == 200, r.text  # the scheme is case-insensitive (RFC 7235)
    r = httpx.get(f"{url}/v1/tasks", headers={**AUTH, "X-Big": "h" * (1 << 20)}, timeout=60)
    assert r.status_code in (400, 431), r.text  # 1 MB of headers: refused (431 by the guard, or 400 by the server)


def test_a_body_that_stops_arriving_is_answered_408(server):
    head = (f"POST /v1/adapters HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()
    got, seconds = raw(server["url"], head + b'{"task": ', pause_after=BODY_TIMEOUT + 3)
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"nothing arrived for 2 s" in got and seconds < BODY_TIMEOUT + 15


def test_an_idle_connection_is_closed_after_keep_alive(server):
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    got, seconds = raw(server["url"], request)  # the server answers, then closes the idle connection
    assert got.startswith(b"HTTP/1.1 200") and KEEP_ALIVE - 0.5 < seconds < KEEP_ALIVE + 10


def test_headers_head_docs_and_no_redirects(server):
    url = server["url"]
    page = httpx.get(f"{url}/")
    for k, v in {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}.items():
        assert page.headers[k] == v
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert httpx.get(f"{url}/v1/tasks").headers["x-content-type-options"] == "nosniff"  # a refusal carries them too
    assert httpx.head(f"{url}/healthz").status_code == 200  # load balancers' health checks
    r = httpx.get(f"{url}/v1/tasks/", headers={**AUTH, "Host": "evil.example"})
    assert r.status_code == 404 and "location" not in r.headers
    docs = httpx.get(f"{url}/docs").text  # offline: every asset from this server, none from a CDN
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", docs)
    assert assets and all(a.startswith("/") for a in assets), assets
    for a in assets:
        r = httpx.get(url + a)
        assert r.status_code == 200 and len(r.content) > 1000, a
    schema = httpx.get(f"{url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


# The page with an API key (issue 27, item 7), in a real browser; the open page: tests/test_serve_open.py

def test_page_with_a_key_clears_the_stale_error_and_keeps_the_typed_form(server):
    """With a key set on the server: the page's first task list is refused (401, the server's message shown); the
    right key clears that error and lists the tasks without overwriting what the user typed meanwhile; on an
    untouched page the key's task list fills the form."""
    from playwright.sync_api import expect

    url = server["url"]
    with browser_page() as page:
        open_page(page, url)
        expect(page.locator("#gen-error")).to_have_text("Could not list tasks: " + KEY_ERROR)
        assert page.locator("#preset option").count() == 0
        mine = {"#description": "Is this tweet sarcastic?", "#labels": "no, yes",
                "#examples": "oh great, another monday => yes\nlovely weather today => no"}
        for field, value in mine.items():
            page.fill(field, value)
        enter_key(page, "wrong-key-0123")
        expect(page.locator("#gen-error")).to_have_text("Could not list tasks: " + KEY_ERROR)
        enter_key(page, KEY)
        expect(page.locator("#gen-error")).to_have_text("")  # the stale error is gone
        assert page.locator("#preset option").count() == 2
        assert form(page) == {**mine, "#texts": ""}, "the key's task list overwrote what the user typed"

        fresh = page.context.browser.new_page()  # untouched: the key's task list fills the form
        open_page(fresh, url)
        expect(fresh.locator("#gen-error")).to_have_text("Could not list tasks: " + KEY_ERROR)
        enter_key(fresh, KEY)
        expect(fresh.locator("#gen-error")).to_have_text("")
        expect(fresh.locator("#description")).to_have_value(re.compile("sentiment"))
        assert fresh.locator("#labels").input_value() == "negative, positive"


def test_page_with_a_key_downloads_and_shows_the_servers_401(server, tmp_path):
    """With a key: the download (a fetch with the key, saved from a Blob) gives the zip; with a wrong key the
    download and the prediction show the server's 401 message and save nothing; the right key again clears every
    error, and both work."""
    from playwright.sync_api import expect

    with browser_page() as page:
        downloads = []
        page.on("download", lambda d: downloads.append(d))
        open_page(page, server["url"])
        enter_key(page, KEY)
        page_generate(page)
        assert "adapter_model.safetensors" in page_download(page, tmp_path / "a.zip")
        enter_key(page, "wrong-key-0123")
        expect(page.locator("#gen-error")).to_have_text("Could not list tasks: " + KEY_ERROR)
        page.click("#download")
        expect(page.locator("#download-error")).to_have_text("download failed: " + KEY_ERROR)
        page.click("#try")
        expect(page.locator("#try-error")).to_have_text(KEY_ERROR)
        assert len(downloads) == 1  # the 401 was not saved as a zip
        enter_key(page, KEY)
        for box in ("#gen-error", "#download-error", "#try-error"):
            expect(page.locator(box)).to_have_text("")
        assert "adapter_model.safetensors" in page_download(page, tmp_path / "b.zip")
        page.click("#try")
        expect(page.locator("#predictions tbody tr")).to_have_count(2, timeout=SLOW_MS)  # a cold Predictor: slower
        assert page.locator("#try-error").inner_text() == ""
