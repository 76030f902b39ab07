"""The Serve endpoint without an API key: open /v1 routes, a schemathesis run against the live OpenAPI schema, and
the web page driven in a real browser (Debian's chromium through Playwright)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from helpers import REPO, chromium, drive_page, start_server, stop_server

pytestmark = pytest.mark.full  # end to end: the full tier

SCHEMATHESIS_CASES = 60  # per operation (bounded: the run stops by itself)


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
