"""Test helpers: the real data root (skip without it locally, fail under CI), and `raypdiff` subprocesses on a
private local Ray that leave nothing behind."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """RAYPDIFF_DATA_DIR, else the repo's sibling shared/data."""
    env = os.environ.get("RAYPDIFF_DATA_DIR")
    return Path(env).resolve() if env else REPO.parent / "shared" / "data"


def missing_data(root: Path, ci: bool) -> tuple[str, str] | None:
    """("skip" | "fail", message) when `root` holds no glue/ folder, else None. CI (CI=true) must fail: a run
    that skips every data test because of a wrong path would otherwise pass."""
    if (root / "glue").is_dir():
        return None
    msg = f"real GLUE data not found at {root}: set RAYPDIFF_DATA_DIR to the folder holding glue/ and extra/"
    return ("fail" if ci else "skip"), msg


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def private_ray_env(ray_tmp: Path) -> dict:
    """Our environment without any pointer to another Ray, with Ray's temp files under ray_tmp."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0")
    return env


class RaypdiffProcess:
    """`python -m raypdiff.cli <args>` in its own process group on a private Ray; remembers every process seen
    below it so that none outlives the test."""

    def __init__(self, args: list[str], ray_tmp: Path, log: Path, env: dict | None = None):
        """env: extra environment variables."""
        self.log = log
        self._fh = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "raypdiff.cli", *args], cwd=REPO,
                                     env={**private_ray_env(ray_tmp), **(env or {})}, stdout=self._fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.seen: dict[int, psutil.Process] = {}

    def scan(self) -> list[psutil.Process]:
        """The live descendants now (remembered for the final checks)."""
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            kids = []
        for k in kids:
            self.seen.setdefault(k.pid, k)
        return kids

    def workers(self, title: str) -> list[psutil.Process]:
        """Live descendants whose command line holds `title` (e.g. ray::collect_one, RayTrainWorker)."""
        out = []
        for k in self.scan():
            try:
                if title in " ".join(k.cmdline()):
                    out.append(k)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return out

    def tail(self) -> str:
        self._fh.flush()
        return self.log.read_text()[-4000:]

    def survivors(self, timeout: float = 30.0) -> list[psutil.Process]:
        """Processes seen below us still alive `timeout` s after the driver exited (zombies count as gone)."""
        deadline = time.time() + timeout
        while True:
            alive = []
            for p in self.seen.values():
                try:
                    if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(p)
                except psutil.NoSuchProcess:
                    pass
            if not alive or time.time() > deadline:
                return alive
            time.sleep(0.5)

    def close(self) -> None:
        """Kill whatever is left (our process group and every process we saw below it), by pid."""
        if self.proc.poll() is None:
            self.scan()
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
        for p in self.seen.values():
            try:
                if p.is_running():
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        self._fh.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], tmp: Path, env: dict | None = None, timeout: float = 300) -> tuple[RaypdiffProcess, str]:
    """`raypdiff serve <args>` on a free loopback port and a private Ray → (process, base URL), once /healthz answers."""
    import httpx

    port = free_port()
    proc = RaypdiffProcess(["serve", "--port", str(port), *args], tmp / "ray", tmp / "serve.log", env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.proc.poll() is not None:
            proc.close()
            raise AssertionError(f"raypdiff serve exited {proc.proc.returncode}:\n{proc.tail()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(2)
    tail = proc.tail()
    proc.close()
    raise AssertionError(f"raypdiff serve did not answer /healthz within {timeout:.0f}s:\n{tail}")


def stop_server(proc: RaypdiffProcess) -> None:
    """SIGTERM (the server shuts Serve and Ray down), then make sure nothing below it is left."""
    if proc.proc.poll() is None:
        proc.scan()
        proc.proc.send_signal(signal.SIGTERM)
        try:
            proc.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    proc.close()


def chromium() -> str | None:
    """A Chromium on PATH (Debian's `chromium`), or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


PAGE_TEXTS = "a warm, funny and moving film\nboring, far too long"


def drive_page(exe: str, url: str, tmp: Path, screenshot: Path) -> dict:
    """The web page in a real browser: check the prefill, generate, download the zip, try PAGE_TEXTS, screenshot.
    Returns what it saw: {"tasks", "adapter_id", "zip_names", "labels"}."""
    import re
    import zipfile

    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1200}, accept_downloads=True)
            page.goto(url + "/")
            expect(page.locator("#preset option").first).to_have_text("SST-2")
            expect(page.locator("#description")).to_have_value(re.compile("sentiment"))
            assert "=>" in page.locator("#examples").input_value()  # prefilled labeled rows
            page.fill("#labels", "negative, positive")
            page.click("#generate")
            expect(page.locator("#adapter-id")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
            assert page.locator("#gen-error").inner_text() == ""
            with page.expect_download() as dl:
                page.click("#download")
            zipped = tmp / "adapter.zip"
            dl.value.save_as(zipped)
            page.fill("#texts", PAGE_TEXTS)
            page.click("#try")
            rows = page.locator("#predictions tbody tr")
            expect(rows).to_have_count(len(PAGE_TEXTS.splitlines()))
            assert page.locator("#try-error").inner_text() == ""
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            return {"tasks": page.locator("#preset option").count(), "adapter_id": page.locator("#adapter-id").inner_text(),
                    "zip_names": zipfile.ZipFile(zipped).namelist(),
                    "labels": [rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())]}
        finally:
            browser.close()


# The page in a browser, step by step (its form, task list loads, generation, download)

SLOW_MS = 120_000  # the browser's wait for a first generation or prediction (a cold replica on a busy machine)


@contextlib.contextmanager
def browser_page():
    """A fresh page in Debian's chromium (skip without it)."""
    from playwright.sync_api import sync_playwright

    exe = chromium()
    if exe is None:
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run installs it where it can)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1000, "height": 1200}, accept_downloads=True)
        finally:
            browser.close()


FORM = ("#description", "#labels", "#examples", "#texts")


def form(page) -> dict:
    return {f: page.locator(f).input_value() for f in FORM}


LOADS = "() => Number(document.body.dataset.taskLoads || 0)"  # the page counts its finished task list loads


def open_page(page, url: str) -> None:
    page.goto(url + "/")
    page.wait_for_function(f"({LOADS})() >= 1")


def enter_key(page, key: str) -> None:
    """Type the API key and leave the field, as a user does (its change event reloads the tasks); returns once
    the page has handled the reload."""
    before = page.evaluate(LOADS)
    page.fill("#apikey", key)
    page.press("#apikey", "Tab")
    page.wait_for_function(f"({LOADS})() > {before}")


def page_generate(page) -> str:
    from playwright.sync_api import expect

    page.click("#generate")
    expect(page.locator("#adapter-id")).to_have_text(re.compile(r"^[0-9a-f]{64}$"), timeout=SLOW_MS)
    expect(page.locator("#gen-error")).to_have_text("")
    return page.locator("#adapter-id").inner_text()


def page_download(page, dest: Path) -> list[str]:
    with page.expect_download() as dl:
        page.click("#download")
    dl.value.save_as(dest)
    return zipfile.ZipFile(dest).namelist()


@contextlib.contextmanager
def s3_server(bucket: str, secret: str):
    """A real S3 API server (moto) in this process on loopback with `bucket` made; its address and credentials in
    this process's environment, as a user sets them (subprocesses and Ray workers started inside inherit them).
    Yields that environment."""
    import boto3
    from moto.server import ThreadedMotoServer

    from raypdiff import storage

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            storage._filesystem.cache_clear()  # made from the environment: not one from before this server
            boto3.client("s3").create_bucket(Bucket=bucket)
            yield env
    finally:
        storage._filesystem.cache_clear()
        server.stop()
