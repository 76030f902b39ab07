"""The Serve endpoint without an API key: open /v1 routes, a schemathesis run against the live OpenAPI schema, and
the web page driven in a real browser (Debian's chromium through Playwright); the README's client snippets run
against it. The page with an API key: tests/test_serve.py."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from helpers import REPO, browser_page, chromium, drive_page, enter_key, form, open_page, page_download, \
    page_generate, start_server, stop_server

pytestmark = pytest.mark.full  # end to end: the full tier

SCHEMATHESIS_CASES = 60  # per operation (bounded: the run stops by itself)
UNKNOWN = "unknown adapter id (never made here, or evicted from the store)"


@pytest.fixture(scope="module")
def server(tiny_generator):
    tmp = Path(tempfile.mkdtemp(prefix="rpo", dir="/tmp"))
    env = {"RAYPDIFF_API_KEY": ""}  # whatever the caller's environment says: this app is open
    proc, url = start_server(["--generator", str(tiny_generator["dir"]), f"serve.store_dir={tmp / 'store'}"], tmp, env)
    try:
        yield {"url": url, "tmp": tmp}
    finally:
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def test_open_routes_need_no_key(server):
    url = server["url"]
    assert httpx.get(f"{url}/v1/tasks").status_code == 200
    r = httpx.post(f"{url}/v1/predict", json={"adapter": {"task": "SST-2"}, "texts": ["fine"]}, timeout=60)
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in ("negative", "positive")


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server, tmp_path):
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    st = Path(sys.executable).with_name("st")
    cmd = [str(st) if st.exists() else "st", "run", f"{server['url']}/openapi.json", "--checks", checks,
           "--max-examples", str(SCHEMATHESIS_CASES), "--workers", "2", "--seed", "1", "--request-timeout", "60",
           "--report", "junit", "--report-dir", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "No issues found" in r.stdout or "passed" in r.stdout, r.stdout[-3000:]


def test_page_in_a_real_browser(server, tmp_path):
    """Fill the prefilled form, generate, download the zip, try two sentences; screenshot the result."""
    exe = chromium()
    if exe is None:
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run installs it where it can)")
    shot = Path(os.environ.get("RAYPDIFF_PAGE_SCREENSHOT", tmp_path / "serve_page.png"))
    result = drive_page(exe, server["url"], tmp_path, shot)
    assert result["tasks"] == 2 and re.match(r"^[0-9a-f]{64}$", result["adapter_id"])
    assert "adapter_model.safetensors" in result["zip_names"]
    assert all(label in ("negative", "positive") for label in result["labels"]) and len(result["labels"]) == 2
    assert shot.stat().st_size > 10_000


def test_serve_config_matches_serve_build(tmp_path):
    """serve_config.yaml: valid for `serve deploy`, its args valid ServeConfig fields, and its deployments the ones
    `serve build` emits for the app."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from raypdiff.config import Config

    committed = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    ServeDeploySchema.model_validate(committed)
    (app,) = committed["applications"]
    assert app["import_path"] == "raypdiff.serve.app:build_app"
    Config.from_dict({"serve": app["args"]})
    (tmp_path / "built_app.py").write_text("from raypdiff.serve.app import build_app\napplication = build_app({})\n")
    r = subprocess.run(["serve", "build", "built_app:application", "-d", str(tmp_path), "-o", str(tmp_path / "o.yaml")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    built = yaml.safe_load((tmp_path / "o.yaml").read_text())
    assert built["applications"][0]["deployments"] == app["deployments"]
    assert built["http_options"]["port"] == committed["http_options"]["port"]


# The page's form, errors and download (issue 27, item 7), driven in the browser over real HTTP.

def test_page_entering_a_key_keeps_what_the_user_typed(server):
    """Entering a key reloads the tasks; the reload fills the form only while the user has not edited it (and keeps
    the picked task); picking a task fills it."""
    from playwright.sync_api import expect

    with browser_page() as page:
        open_page(page, server["url"])
        expect(page.locator("#description")).to_have_value(re.compile("sentiment"))
        page.select_option("#preset", label="STS-B")
        sts = form(page)
        assert "sentiment" not in sts["#description"] and " ||| " in sts["#examples"]
        enter_key(page, "any-key-the-open-server-ignores")  # not edited: the picked task's form stays
        assert form(page) == sts and page.locator("#preset option:checked").inner_text() == "STS-B"
        mine = {"#description": "Is this tweet sarcastic?", "#labels": "no, yes",
                "#examples": "oh great, another monday => yes\nlovely weather today => no"}
        for field, value in mine.items():
            page.fill(field, value)
        enter_key(page, "another-key")
        assert form(page) == {**sts, **mine}, "the reload overwrote what the user typed"
        assert page.locator("#gen-error").inner_text() == ""
        page.select_option("#preset", label="SST-2")  # an explicit pick: the form is that task's
        expect(page.locator("#description")).to_have_value(re.compile("sentiment"))
        assert page.locator("#labels").input_value() == "negative, positive"


def test_page_shows_the_servers_error_when_a_download_fails(server, tmp_path):
    """A failed download (404: the adapter left the store) shows the server's one-line error, no zip is saved, and a
    later successful download clears the error; no key involved."""
    from playwright.sync_api import expect

    with browser_page() as page:
        downloads = []
        page.on("download", lambda d: downloads.append(d))
        open_page(page, server["url"])
        adapter_id = page_generate(page)
        folder = server["tmp"] / "store" / adapter_id
        aside = tmp_path / "aside"
        shutil.move(folder, aside)  # as if evicted
        assert httpx.get(f"{server['url']}/v1/adapters/{adapter_id}").json() == {"error": UNKNOWN}
        page.click("#download")
        expect(page.locator("#download-error")).to_have_text("download failed: " + UNKNOWN)
        assert not downloads  # the JSON error is not handed over as a zip
        shutil.move(aside, folder)  # back in the store
        assert "adapter_model.safetensors" in page_download(page, tmp_path / "adapter.zip")
        expect(page.locator("#download-error")).to_have_text("")


def readme_block(first: str) -> str:
    """The README's fenced code block whose first line starts with `first`."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    found = [b for b in blocks if b.startswith(first)]
    assert len(found) == 1, f"README: {len(found)} code blocks start with {first!r}"
    return found[0]


def test_readme_curl_download_fails_instead_of_saving_the_error(server, tmp_path):
    """The README's curl download line, verbatim but for host and id: a 4xx exits non-zero and unzips nothing; a
    stored adapter unzips."""
    (line,) = [x for x in readme_block("curl ").splitlines() if "-o adapter.zip" in x]
    host = server["url"].removeprefix("http://")

    def run_line(adapter_id: str) -> tuple[subprocess.CompletedProcess, Path]:
        cwd = tmp_path / adapter_id[:8]
        cwd.mkdir()
        cmd = line.replace("localhost:8000", host).replace("<id>", adapter_id)
        return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=120), cwd

    r, cwd = run_line("0" * 64)
    assert r.returncode != 0 and not (cwd / "adapter").exists(), r.stdout + r.stderr
    zipped = cwd / "adapter.zip"
    assert not zipped.exists() or b"error" not in zipped.read_bytes()  # no JSON error saved under the zip's name
    made = httpx.post(f"{server['url']}/v1/adapters", json={"task": "SST-2", "seed": 5}, timeout=60).json()
    r, cwd = run_line(made["adapters"][0]["id"])
    assert r.returncode == 0 and (cwd / "adapter" / "adapter_model.safetensors").is_file(), r.stderr


def test_readme_python_client_runs_offline_with_the_main_dependencies(server, tmp_path):
    """httpx is a main dependency, and the README's Python client snippet, verbatim but for the URL, runs offline
    (the packaged base model) and gives /v1/predict's probabilities."""
    import tomllib

    import numpy as np

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(r"httpx\b", d) for d in deps), deps
    code = readme_block("import httpx").replace("http://127.0.0.1:8000", server["url"])
    check = """
import json, torch
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(resolve_base("sentence-transformers/all-MiniLM-L6-v2"))
with torch.no_grad():
    got = model.eval()(**tok(["a moving film"], return_tensors="pt")).logits.softmax(-1)[0].tolist()
served = api.post("/v1/predict", json={"adapter_id": adapter["id"], "texts": ["a moving film"]}).json()
print("CHECK " + json.dumps({"got": got, "served": [served["predictions"][0]["probabilities"][n]
                                                     for n in adapter["label_names"]]}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code + check], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    (out,) = [x for x in r.stdout.splitlines() if x.startswith("CHECK ")]
    seen = json.loads(out[len("CHECK "):])
    np.testing.assert_allclose(seen["got"], seen["served"], atol=1e-4)
    assert (tmp_path / "sst2" / "adapter_model.safetensors").is_file()
