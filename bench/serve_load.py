"""Load on the Serve endpoint, loopback only and bounded in time: latency percentiles and requests/s of
POST /v1/adapters (1 adapter, a new seed each request) and POST /v1/predict (8 texts, a cached adapter) at several
concurrencies, with 1 and 2 replicas; errors; peak memory of the server's processes; a 60 s soak at concurrency 32;
replicas SIGKILLed under load. Writes bench/results/serve.{json,md} (and, with --page, serve_page.png).

    python bench/serve_load.py --generator runs/generator
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import chromium, drive_page, start_server, stop_server  # noqa: E402  (the tests' server + page driver)

TEXTS = ["a gripping, beautifully acted film", "tedious and badly written", "it was fine, i guess",
         "the best thing i have seen all year", "i want those two hours back", "a charming little story",
         "flat characters and a muddled plot", "surprisingly moving"]  # 8 texts per predict request


class Memory:
    """Peak summed RSS of a process and everything below it, sampled every 0.5 s in a thread."""

    def __init__(self, pid: int):
        self.root, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            total = 0
            for p in [self.root, *self.root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.5)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.peak / 2**30


async def closed_loop(url: str, make_body, path: str, concurrency: int, seconds: float) -> dict:
    """`concurrency` clients, each sending its next request as soon as the last answered, for `seconds`."""
    lat, errors, codes, counter = [], 0, {}, iter(range(10**9))
    deadline = time.perf_counter() + seconds

    async def client(c: httpx.AsyncClient):
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                r = await c.post(path, json=make_body(next(counter)))
                ok = r.status_code == 200
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
            except httpx.HTTPError as e:
                ok = False
                codes[type(e).__name__] = codes.get(type(e).__name__, 0) + 1
            if ok:
                lat.append(time.perf_counter() - t0)
            else:
                errors += 1

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {"concurrency": concurrency, "requests": len(lat) + errors, "errors": errors,
            "codes": {str(k): v for k, v in codes.items()}, "rps": len(lat) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "seconds": wall}


def bodies(adapter_id: str) -> dict:
    return {"adapters": ("/v1/adapters", lambda i: {"task": "SST-2", "seed": 10_000 + i}),
            "predict": ("/v1/predict", lambda i: {"adapter_id": adapter_id, "texts": TEXTS})}


async def soak(url: str, adapter_id: str, concurrency: int, seconds: float) -> dict:
    """Half generate, half predict requests from the same clients."""
    gen = closed_loop(url, bodies(adapter_id)["adapters"][1], "/v1/adapters", concurrency // 2, seconds)
    pred = closed_loop(url, bodies(adapter_id)["predict"][1], "/v1/predict", concurrency - concurrency // 2, seconds)
    a, p = await asyncio.gather(gen, pred)
    return {"adapters": a, "predict": p, "errors": a["errors"] + p["errors"], "requests": a["requests"] + p["requests"]}


def kill_replicas(proc, url: str, adapter_id: str, seconds: float) -> dict:
    """SIGKILL one Generator and one Predictor replica a few seconds into a concurrency-8 mixed load."""
    killed = {}

    def killer():
        time.sleep(min(5.0, seconds / 4))
        for title in ("ServeReplica:raypdiff:Generator", "ServeReplica:raypdiff:Predictor"):
            victims = proc.workers(title)
            if victims:
                victims[0].kill()
                killed[title.rsplit(":", 1)[1]] = victims[0].pid

    t = threading.Thread(target=killer)
    t.start()
    result = asyncio.run(soak(url, adapter_id, 8, seconds))
    t.join()
    replaced = {title: len(proc.workers(f"ServeReplica:raypdiff:{title}")) for title in killed}
    return {**result, "killed": killed, "replicas_after": replaced}


def run_setting(args, replicas: int, tmp: Path) -> dict:
    (tmp / f"r{replicas}").mkdir()
    proc, url = start_server(["--generator", args.generator, "--replicas", str(replicas),
                              f"serve.store_dir={tmp / 'store'}", f"serve.threads={args.threads}"], tmp / f"r{replicas}",
                             env={"RAYPDIFF_API_KEY": ""})
    mem = Memory(proc.proc.pid)
    out: dict = {"replicas": replicas}
    def stored() -> str:
        """The predicted-on adapter, (re)made: the adapters cells can push it out of the store (least recently used
        first, serve.max_adapters); the same request gives the same id."""
        return httpx.post(f"{url}/v1/adapters", json={"task": "SST-2"}, timeout=120).json()["adapters"][0]["id"]

    try:
        adapter_id = stored()
        for _ in range(3):  # warm: the predictor's base model and the adapter are loaded
            httpx.post(f"{url}/v1/predict", json={"adapter_id": adapter_id, "texts": TEXTS}, timeout=120)
        for name, (path, body) in bodies(adapter_id).items():
            out[name] = []
            stored()  # predicting keeps it in use from here on
            for c in args.concurrency:
                cell = asyncio.run(closed_loop(url, body, path, c, args.seconds))
                print(f"replicas {replicas} {name} c={c}: p50 {cell['p50_ms']:.0f} ms p95 {cell['p95_ms']:.0f} "
                      f"rps {cell['rps']:.1f} errors {cell['errors']}", flush=True)
                out[name].append(cell)
        if replicas == max(args.replicas):
            stored()
            out["soak"] = asyncio.run(soak(url, adapter_id, 32, args.soak))
            print(f"soak c=32 {args.soak:.0f}s: {out['soak']['requests']} requests, {out['soak']['errors']} errors",
                  flush=True)
            if replicas >= 2:
                out["kill"] = kill_replicas(proc, url, adapter_id, args.kill_seconds)
                print(f"kill: {out['kill']['requests']} requests, {out['kill']['errors']} errors, killed "
                      f"{out['kill']['killed']}", flush=True)
            if args.page and chromium():
                out["page"] = drive_page(chromium(), url, tmp, Path(args.out) / "serve_page.png")
    finally:
        out["peak_memory_gib"] = mem.stop()
        stop_server(proc)
    return out


def markdown(res: dict) -> str:
    lines = [f"# Serve load (loopback, {res['machine']})", "",
             f"`python bench/serve_load.py --generator {res['generator']}`: closed-loop clients for "
             f"{res['seconds_per_cell']:.0f} s per cell; generate = POST /v1/adapters (1 adapter, a new seed each "
             "request, written to the store); predict = POST /v1/predict (8 texts, a cached adapter). The load "
             "generator runs on the same 2 CPUs as the server.", "",
             "| replicas | route | concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in res["settings"]:
        for name in ("adapters", "predict"):
            for c in s[name]:
                lines.append(f"| {s['replicas']} | {name} | {c['concurrency']} | {c['requests']} | {c['errors']} | "
                             f"{c['rps']:.1f} | {c['p50_ms']:.0f} | {c['p95_ms']:.0f} | {c['p99_ms']:.0f} |")
    lines += ["", "| replicas | peak memory (GiB): `raypdiff serve` and every process below it, Ray's own included |",
              "|---|---|"]
    lines += [f"| {s['replicas']} | {s['peak_memory_gib']:.2f} |" for s in res["settings"]]
    t = res["targets"]
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {k} | {v['measured']} | {'yes' if v['met'] else 'no'} |" for k, v in t.items()]
    return "\n".join(lines) + "\n"


def targets(res: dict) -> dict:
    one = res["settings"][0]
    gen1 = next(c for c in one["adapters"] if c["concurrency"] == 1)
    pred1 = next(c for c in one["predict"] if c["concurrency"] == 1)
    last = res["settings"][-1]
    out = {"generate p50 <= 300 ms at concurrency 1": {"measured": f"{gen1['p50_ms']:.0f} ms",
                                                        "met": gen1["p50_ms"] <= 300},
           "predict p50 <= 150 ms at concurrency 1": {"measured": f"{pred1['p50_ms']:.0f} ms",
                                                       "met": pred1["p50_ms"] <= 150}}
    if "soak" in last:
        s = last["soak"]
        out[f"0 errors at concurrency 32 over {res['soak_seconds']:.0f} s"] = {
            "measured": f"{s['errors']} errors in {s['requests']} requests", "met": s["errors"] == 0}
    if "kill" in last:
        k = last["kill"]
        out["a killed replica: no failed request"] = {
            "measured": f"{k['errors']} failed of {k['requests']} (killed {', '.join(k['killed'])}; replicas after: "
                        f"{k['replicas_after']})", "met": k["errors"] == 0}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", default="runs/generator")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=15.0, help="per (route, concurrency) cell")
    p.add_argument("--soak", type=float, default=60.0, help="seconds of mixed load at concurrency 32")
    p.add_argument("--kill-seconds", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    p.add_argument("--page", action="store_true", help="also drive the web page in chromium and keep a screenshot")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()
    args.generator = str(Path(args.generator).resolve())
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="rpl", dir="/tmp") as tmp:
        settings = [run_setting(args, r, Path(tmp)) for r in args.replicas]
    res = {"generator": str(Path(args.generator).relative_to(ROOT)) if args.generator.startswith(str(ROOT))
           else args.generator, "machine": f"{psutil.cpu_count()} CPUs", "seconds_per_cell": args.seconds,
           "soak_seconds": args.soak, "settings": settings, "wall_seconds": time.time() - t0}
    res["targets"] = targets(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(res, indent=1))
    (out / "serve.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
