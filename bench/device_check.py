"""The GPU check (bench/device_check.sh): the tiny text zoo, its generator, adapters generated and scored, and a tiny
random SD pipeline's style zoo, generator and samples, each stage timed with nvidia-smi's memory; without CUDA the same
stages run on the CPU and the GPU parts are listed as skipped. Writes bench/results/device.{json,md}.

    bench/device_check.sh [--data-root ../shared/data] [--work runs/device_check] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MARK = ".device_check"  # a work folder we made (and so may clear)
TASK = "SST-2"  # configs/tiny.yaml's tasks: SST-2, STS-B
NO_CUDA = "no CUDA device"
# one Ray Train checkpoint at the end of each phase (20 steps each in the tiny configs): checkpoints written from the
# workers and read back are checked, without tiny_vision.yaml's 20 of them (~1 s each on 2 CPUs)
CKPT = ["trainer.checkpoint_every=20"]

# Where the current code keeps a stage on the CPU whatever the machine: said in the results, not hidden.
CPU_ONLY = {
    "text_generate": "raypdiff generate has no device setting: the generator samples and adapters are written on "
                     "the CPU",
    "text_evaluate": "raypdiff evaluate's scoring actors ask Ray for no GPU and build their models on the CPU",
    "style_collect": "the style domain (raypdiff/vision/domain.py StyleDomain.run, style_lora.finetune) never moves "
                     "the pipeline off the CPU, so collect.num_gpus would only hold a GPU it does not use",
    "style_generate": "raypdiff generate has no device setting: style LoRAs are sampled and written on the CPU",
}


class GpuMemory:
    """nvidia-smi's used memory (MiB, the first GPU) before, at its peak during, and after a stage; polled."""

    def __init__(self):
        self.smi = shutil.which("nvidia-smi")

    def read(self):
        if self.smi is None:
            return None
        try:
            out = subprocess.run([self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            return int(out.split()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def during(self, fn):
        """fn's result; self.last: {before_mib, peak_mib, after_mib} (None without nvidia-smi), kept when fn fails
        too (an out-of-memory error is a reading worth having)."""
        self.last = None
        if self.smi is None:
            return fn()
        before, peak, stop = self.read(), [0], threading.Event()

        def poll():
            while not stop.wait(0.5):
                peak[0] = max(peak[0], self.read() or 0)

        t = threading.Thread(target=poll, daemon=True)
        t.start()
        try:
            return fn()
        finally:
            stop.set()
            t.join()
            after = self.read()
            self.last = {"before_mib": before, "peak_mib": max(peak[0], before or 0, after or 0), "after_mib": after}


class Check:
    def __init__(self, args, cuda: bool):
        self.args, self.cuda, self.work = args, cuda, Path(args.work).resolve()
        self.smi, self.stages, self.common = GpuMemory(), [], ["tracking.enabled=false"]
        self.env = dict(os.environ)
        self.save = lambda: None  # main's: the results so far, written after every stage
        self.made = {}  # what a stage made for those after it: zoo, gen, style_gen, style_lora
        if args.data_root:
            self.common.append(f"data.root={Path(args.data_root).resolve()}")

    def need(self, key: str, stage: str):
        if key not in self.made:
            raise RuntimeError(f"no {key}: stage {stage} failed")
        return self.made[key]

    def cli(self, name: str, argv: list[str]):
        """`raypdiff <argv>` in a subprocess (a crash on the GPU fails this stage, not the check); log kept."""
        log = self.work / "logs" / f"{name}.log"
        with open(log, "a") as fh:
            fh.write(f"$ raypdiff {' '.join(argv)}\n")
            fh.flush()
            try:
                r = subprocess.run([sys.executable, "-m", "raypdiff.cli", *argv], cwd=ROOT, stdout=fh, env=self.env,
                                   stderr=subprocess.STDOUT, timeout=self.args.stage_timeout)
            except subprocess.TimeoutExpired:  # e.g. Ray waiting for a GPU it does not have
                raise RuntimeError(f"raypdiff {argv[0]} ran past --stage-timeout {self.args.stage_timeout:.0f} s "
                                   f"(log: {log})") from None
        if r.returncode != 0:
            lines = [x for x in log.read_text().splitlines() if x.strip()]
            raise RuntimeError(f"raypdiff {argv[0]} exited {r.returncode}: {lines[-1] if lines else ''} (log: {log})")

    def stage(self, name: str, what: str, run, gpu_parts: list[str] = ()):
        """Time run(on_gpu) with nvidia-smi's memory; gpu_parts: what the stage asks of the GPU on a CUDA machine
        (skipped without one). A failure on the GPU is recorded, then the stage is run again on the CPU so the
        stages after it still run."""
        on_gpu = self.cuda and bool(gpu_parts)
        rec = {"name": name, "what": what, "device": "cuda" if on_gpu else "cpu", "gpu_parts": list(gpu_parts),
               "skipped": [] if self.cuda else [f"{p} ({NO_CUDA})" for p in gpu_parts],
               "cpu_only": CPU_ONLY.get(name), "ok": False, "error": None, "facts": None}
        print(f"[{len(self.stages) + 1}] {name}: {what} ({rec['device']})", flush=True)
        t0 = time.time()
        try:
            rec["facts"], rec["ok"] = self.smi.during(lambda: run(on_gpu)), True
        except Exception as e:  # noqa: BLE001 - a failed stage is a result of the check
            rec["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        rec["seconds"], rec["gpu_memory"] = round(time.time() - t0, 2), self.smi.last
        if on_gpu and rec["gpu_memory"] is not None:  # a stage asked for the GPU but never on it would pass unseen
            rec["gpu_memory_rose"] = rec["gpu_memory"]["peak_mib"] > (rec["gpu_memory"]["before_mib"] or 0)
        if on_gpu and not rec["ok"]:
            print(f"    failed on the GPU: {rec['error']}; again on the CPU", flush=True)
            t1 = time.time()
            try:
                rec["facts"], rec["cpu_rerun"] = run(False), {"ok": True}
            except Exception as e:  # noqa: BLE001
                rec["cpu_rerun"] = {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
            rec["cpu_rerun"]["seconds"] = round(time.time() - t1, 2)
        mem = rec["gpu_memory"]
        used = "" if mem is None else f", nvidia-smi {mem['before_mib']} -> peak {mem['peak_mib']} MiB"
        print(f"    {'ok' if rec['ok'] else 'FAILED'} in {rec['seconds']:.1f} s{used}"
              + (f": {rec['error']}" if rec["error"] else ""), flush=True)
        self.stages.append(rec)
        self.save()
        return rec


def text_stages(c: Check) -> None:
    from raypdiff.zoo.store import read_meta

    w, common = c.work, c.common

    def collect(gpu):
        zoo = w / ("zoo" if gpu else "zoo_cpu")  # a CPU rerun never resumes a half-written GPU zoo
        # 0.5: both of the tiny zoo's Ray Tasks share the one GPU, as fractional GPUs do on a cluster
        c.cli("text_collect", ["collect", "-q", "-c", "configs/tiny.yaml", *common, f"collect.output_dir={zoo}",
                               *(["collect.num_gpus=0.5"] if gpu else [])])
        c.made["zoo"] = zoo
        return {"zoo": str(zoo), "tasks": list(read_meta(zoo).tasks)}

    def train(gpu):
        gen = w / ("gen" if gpu else "gen_cpu")
        zoo = c.need("zoo", "text_collect")
        c.cli("text_train", ["train", "-q", "-c", "configs/tiny_gen.yaml", "--zoo", str(zoo), *common,
                             f"trainer.output_dir={gen}", *CKPT, *(["trainer.use_gpu=true"] if gpu else [])])
        c.made["gen"] = gen
        s = json.loads((gen / "train_summary.json").read_text())
        return {"generator": s["generator"], "train_seconds": round(s["train_seconds"], 2)}

    def generate(gpu):
        gen = c.need("gen", "text_train")
        c.cli("text_generate", ["generate", "--generator", str(gen), "--task", TASK, "--num", "2", "--out",
                                str(w / "adapters")])
        manifest = json.loads((w / "adapters" / "manifest.json").read_text())
        return {"task": TASK, "adapters": len(manifest["adapters"])}

    def evaluate(gpu):
        out, gen = w / "report", c.need("gen", "text_train")
        c.cli("text_evaluate", ["evaluate", "--generator", str(gen), "--out", str(out), "--num", "2",
                                "--recon-num", "2", "--matrix-num", "1", "--bootstrap", "100", "--workers", "1"])
        report = json.loads((out / "report.json").read_text())
        return {"test": {t: {"generated_mean": r["test"]["generated"]["mean"], "zoo_mean": r["test"]["zoo"]["mean"]}
                         for t, r in report["tasks"].items()}}

    c.stage("text_collect", "tiny text zoo (configs/tiny.yaml: SST-2, STS-B)", collect, ["collect.num_gpus=0.5"])
    c.stage("text_train", "generator on it (configs/tiny_gen.yaml, Ray Train)", train, ["trainer.use_gpu=true"])
    c.stage("text_generate", f"2 {TASK} adapters (raypdiff generate)", generate)
    c.stage("text_evaluate", "adapters scored on test (raypdiff evaluate)", evaluate)


def style_setup(c: Check) -> str | None:
    """A tiny random SD pipeline (the one tests/test_vision_named.py checks) and 4 edge-styled images for
    --style-images; None, or why the style stages cannot run."""
    from PIL import Image

    from raypdiff.config import ConfigError
    from raypdiff.vision import fashion
    from raypdiff.vision.styles import DEFAULT_STYLES, apply

    try:
        x, _ = fashion.load("test", c.args.fashion_dir)
    except ConfigError as e:
        return str(e)
    sys.path.insert(0, str(ROOT / "tests"))
    from test_vision_named import tiny_pipeline  # one definition of the tiny pipeline, tests' and ours

    tiny_pipeline("sd", c.work / "sd")
    (c.work / "style_images").mkdir()
    edges = next(s for s in DEFAULT_STYLES if s.name == "edges")
    for i, img in enumerate(apply(edges, x[500:504])):
        Image.fromarray(img).resize((64, 64)).save(c.work / "style_images" / f"{i}.png")
    return None


def style_stages(c: Check) -> None:
    from raypdiff.zoo.store import read_meta

    w = c.work
    common = [*c.common, f"vision.pipeline={w / 'sd'}", "vision.image_size=32", "vision.guidance_scale=2.0",
              *([f"vision.data_dir={Path(c.args.fashion_dir).resolve()}"] if c.args.fashion_dir else [])]

    def collect(gpu):
        c.cli("style_collect", ["collect", "-q", "-c", "configs/tiny_vision.yaml", *common,
                                f"collect.output_dir={w / 'style_zoo'}"])
        return {"zoo": str(w / "style_zoo"), "styles": list(read_meta(w / "style_zoo").tasks)}

    def train(gpu):
        gen = w / ("style_gen" if gpu else "style_gen_cpu")
        c.cli("style_train", ["train", "-q", "-c", "configs/tiny_vision.yaml", "--zoo", str(w / "style_zoo"),
                              *common, f"trainer.output_dir={gen}", *CKPT, *(["trainer.use_gpu=true"] if gpu else [])])
        c.made["style_gen"] = gen
        return {"generator": str(gen), "train_seconds": round(
            json.loads((gen / "train_summary.json").read_text())["train_seconds"], 2)}

    def generate(gpu):
        c.cli("style_generate", ["generate", "--generator", str(c.need("style_gen", "style_train")), "--style-images",
                                 str(w / "style_images"), "--num", "2", "--out", str(w / "style_adapters")])
        m = json.loads((w / "style_adapters" / "manifest.json").read_text())
        c.made["style_lora"] = m["adapters"][0]
        return {"adapters": len(m["adapters"]), "nearest_style": m["nearest_task"]}

    def samples(gpu):
        import numpy as np
        import torch

        from raypdiff.config import load_config
        from raypdiff.vision.t2i import TextToImage, load_pipeline

        v = load_config(ROOT / "configs" / "tiny_vision.yaml", common).vision
        pipe = load_pipeline(w / "sd").to("cuda" if gpu else "cpu")
        t2i, prompts = TextToImage(pipe, v), ["a bag", "a coat", "a shirt", "a sneaker"]
        base = t2i.sample(prompts, v.sample_steps, torch.Generator().manual_seed(0), v.guidance_scale)
        t2i.load_lora(c.need("style_lora", "style_generate"))
        styled = t2i.sample(prompts, v.sample_steps, torch.Generator().manual_seed(0), v.guidance_scale)
        np.save(w / "style_samples.npy", styled)
        return {"device": str(t2i.denoiser.device), "samples": list(styled.shape),
                "lora_changes_samples": bool(not np.array_equal(base, styled))}

    c.stage("style_collect", "style zoo on a tiny random SD pipeline (configs/tiny_vision.yaml: inverted, edges)",
            collect)
    c.stage("style_train", "style generator on it (Ray Train)", train, ["trainer.use_gpu=true"])
    c.stage("style_generate", "2 style LoRAs from 4 edge-styled images (generate --style-images)", generate)
    c.stage("style_samples", "the SD pipeline samples 4 prompts with and without a generated LoRA", samples,
            ["the SD pipeline on cuda"])


def markdown(r: dict) -> str:
    m = r["machine"]
    gpu = f"{m['gpu']}, {m['gpu_memory_mib']} MiB" if m.get("gpu") else "none (no CUDA device)"
    lines = [f"# Device check on {r['device']} (`bench/device_check.sh`)", "",
             f"Machine: {m['cpus']} CPUs, {m['processor']}; GPU: {gpu}; torch {m['torch']}. Wall time "
             f"{r['wall_seconds']:.0f} s. GPU memory: nvidia-smi's used memory on the first GPU before / at its peak "
             "during each stage (all processes).", "",
             "| stage | what | ran on | seconds | GPU memory (MiB) | GPU parts skipped | CPU only in the current code "
             "| result |", "|---|---|---|---|---|---|---|---|"]
    for s in r["stages"]:
        mem = s.get("gpu_memory")
        mem = "n/a" if mem is None else f"{mem['before_mib']} / {mem['peak_mib']}"
        result = "ok" if s["ok"] else f"failed: {s['error']}"
        if "cpu_rerun" in s:
            result += f"; on the CPU: {'ok' if s['cpu_rerun']['ok'] else s['cpu_rerun']['error']}"
        lines.append(f"| {s['name']} | {s['what']} | {s['device']} | {s['seconds']:.1f} | {mem} | "
                     f"{', '.join(s['skipped']) or '-'} | {s['cpu_only'] or '-'} | {result} |")
    if r.get("style_skipped"):
        lines += ["", f"Style stages skipped: {r['style_skipped']}"]
    ev = next((s for s in r["stages"] if s["name"] == "text_evaluate" and s["facts"]), None)
    if ev:
        lines += ["", "Test scores (2 generated adapters vs the zoo, tiny settings: a smoke check, not a result): "
                  + "; ".join(f"{t} generated {x['generated_mean']:.3f} vs zoo {x['zoo_mean']:.3f}"
                              for t, x in ev["facts"]["test"].items()) + "."]
    lines += ["", f"Every stage passed: {'yes' if r['ok'] else 'no'}." if r["finished"] else
              "Unfinished: the check stopped (or is still running) after the stages above."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Stages: text_collect, text_train, text_generate, text_evaluate (raypdiff's CLI on configs/tiny*.yaml), "
               "then style_collect, style_train, style_generate, style_samples (configs/tiny_vision.yaml on a tiny "
               "random SD pipeline). With CUDA the GPU flags are collect.num_gpus=0.5, trainer.use_gpu=true and the "
               "pipeline on cuda; a stage that fails on the GPU is recorded and run again on the CPU. Exit status 1 "
               "when any stage failed.")
    p.add_argument("--data-root", default=os.environ.get("RAYPDIFF_DATA_DIR"),
                   help="folder holding glue/ (default: RAYPDIFF_DATA_DIR)")
    p.add_argument("--fashion-dir", help="Fashion-MNIST's IDX files (default: the Debian package's folder)")
    p.add_argument("--work", default="runs/device_check",
                   help="folder for the zoos, generators and logs (cleared first; default runs/device_check)")
    p.add_argument("--out", default=str(RESULTS), help="folder for device.json and device.md (default bench/results)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="auto (default): cuda where torch sees one; cpu: skip the GPU parts even with one")
    p.add_argument("--domains", default="text,style",
                   help="which stages: text, style or text,style (default: both)")
    p.add_argument("--stage-timeout", type=float, default=300,
                   help="seconds one CLI call may take before its stage fails (default 300)")
    args = p.parse_args()
    domains = args.domains.split(",")
    if not domains or set(domains) - {"text", "style"} or len(set(domains)) < len(domains):
        p.error(f"--domains {args.domains}: give text, style or text,style")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"device_check: error: --device cuda: torch {torch.__version__} sees {NO_CUDA}", file=sys.stderr)
        return 2
    cuda = args.device != "cpu" and torch.cuda.is_available()
    work = Path(args.work).resolve()
    if work.exists() and any(work.iterdir()) and not (work / MARK).exists():
        print(f"device_check: error: --work {work} holds files this check did not make; give an empty or new folder",
              file=sys.stderr)
        return 2
    shutil.rmtree(work, ignore_errors=True)  # every run from scratch: a resumed zoo or generator would time nothing
    (work / "logs").mkdir(parents=True)
    (work / MARK).touch()

    c = Check(args, cuda)
    machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "nvidia_smi": c.smi.smi is not None}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        machine.update(gpu=props.name, gpu_memory_mib=props.total_memory // 2**20, cuda=torch.version.cuda)
    print(f"device check on {'cuda: ' + machine['gpu'] if cuda else 'cpu (' + NO_CUDA + ')'}; work: {work}", flush=True)
    t0 = time.time()
    import secrets

    # One local Ray for every stage, which the CLI calls join through RAY_ADDRESS (as under `ray job submit`): its
    # start is paid once, and it goes when this process ends. Ray 2.60 may turn token auth on (~/.ray/auth_token) but
    # its clients send a token only with RAY_AUTH_MODE=token: one private token for the head and the CLI calls, set
    # before Ray is imported (it reads them then).
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    c.env = dict(os.environ)
    c.env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    machine["ray_start_seconds"] = round(time.time() - t0, 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    r = {"device": "cuda" if cuda else "cpu", "machine": machine, "finished": False, "ok": False,
         "style_skipped": None, "work": str(work), "stages": c.stages}

    def save():  # after every stage: a check cut off by its time limit still leaves what it found
        r["wall_seconds"] = round(time.time() - t0, 1)
        (out / "device.json").write_text(json.dumps(r, indent=1))
        (out / "device.md").write_text(markdown(r))

    c.save = save
    r["domains"] = domains
    if "text" in domains:
        text_stages(c)
    if "style" in domains:
        t1 = time.time()
        r["style_skipped"] = style_setup(c)
        r["style_setup_seconds"] = round(time.time() - t1, 2)
        if r["style_skipped"] is None:
            style_stages(c)
        else:
            print(f"style stages skipped: {r['style_skipped']}", flush=True)
    r.update(finished=True, ok=all(s["ok"] for s in c.stages) and r["style_skipped"] is None)
    save()
    print(f"{'every stage passed' if r['ok'] else 'FAILED'} in {r['wall_seconds']:.0f} s; "
          f"{out / 'device.json'}, {out / 'device.md'}")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
