"""Ablation sweeps on Ray Tune. A trial trains the generator on Ray Train (driven from the trial function, reporting
to Tune through TuneReportCallback) on the zoo or a subsample of it, then runs the held-out report: the val metric is
the objective, the test metric (with its interval) goes into the tables. Resumable; one MLflow run per trial."""
from __future__ import annotations

import itertools
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import numpy as np
from ray.tune import Callback

from raypdiff import plots, reports
from raypdiff.config import Config, derive, parse_overrides
from raypdiff.reports import cell, table
from raypdiff.storage import Location, local_copy, local_folder, writable

EXPERIMENT = "sweep"  # the Tune experiment's folder under sweep.output_dir/tune


# ---- the plan: which trials, with which settings ----

def default_value(cfg: Config, axis: str, zoo_captures: int):
    """The value an axis has in `cfg` itself (the default row's)."""
    if axis == "captures":
        return zoo_captures
    if axis == "normalize":
        return cfg.normalize.mode
    if axis == "latent":
        return cfg.autoencoder.latent
    if axis == "noise":
        on = (cfg.autoencoder.input_noise > 0, cfg.autoencoder.latent_noise > 0)
        return {(True, True): "both", (True, False): "input", (False, True): "latent"}.get(on, "none")
    c = cfg.condition
    return "onehot" if c.encoder == "onehot" else "no_quality" if not c.quality else \
        "description" if c.k == 0 else f"k{c.k}"


def overrides(cfg: Config, axis: str, value) -> list[str]:
    """Dotted overrides that set `axis` to `value` (captures are a zoo subsample, not an override)."""
    if axis == "normalize":
        return [f"normalize.mode={value}"]
    if axis == "latent":
        return [f"autoencoder.latent={value}"]
    if axis == "noise":
        ae = cfg.autoencoder
        inp, lat = ae.input_noise or 0.001, ae.latent_noise or 0.1  # the paper's levels where the config has none
        return [f"autoencoder.input_noise={inp if value in ('input', 'both') else 0.0}",
                f"autoencoder.latent_noise={lat if value in ('latent', 'both') else 0.0}"]
    if axis == "condition":
        if value == "onehot":
            return ["condition.encoder=onehot"]
        if value == "no_quality":
            return ["condition.quality=false"]
        return ["condition.k=0" if value == "description" else f"condition.k={value[1:]}", "condition.quality=true"]
    return []


def plan(cfg: Config, zoo_captures: int) -> list[dict]:
    """The trials: {"name", "settings" (axis → value), "seed"}, in a fixed order."""
    sw = cfg.sweep
    base = {a: default_value(cfg, a, zoo_captures) for a in sw.axes}
    if sw.mode == "grid":
        combos = [dict(zip(sw.axes, vs)) for vs in itertools.product(*sw.axes.values())]
        return [{"name": ",".join(f"{a}={v}" for a, v in c.items()), "settings": c, "seed": sw.seeds[0]}
                for c in combos]
    out = [{"name": f"default,seed={s}", "settings": dict(base), "seed": s} for s in sw.seeds]
    for axis, values in sw.axes.items():
        out += [{"name": f"{axis}={v}", "settings": {**base, axis: v}, "seed": sw.seeds[0]}
                for v in values if v != base[axis]]
    return out


def trial_config(cfg: Config, trial: dict) -> Config:
    """The trial's full config: the sweep's, its axis settings applied, its own output folders and seed."""
    extra = [o for axis, v in trial["settings"].items() for o in overrides(cfg, axis, v)]
    return derive(cfg, {**dict(parse_overrides(extra)), "trainer.seed": trial["seed"], "tracking.enabled": False})


# ---- one trial (runs inside Tune) ----

def run_trial(config: dict, table: dict) -> None:
    """Tune's function trainable: train (Ray Train workers of their own, reporting through TuneReportCallback),
    evaluate on val and test, report the result. table: trial name → its config, zoo and folder."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raypdiff.evaluate import evaluate_generated
    from raypdiff.train import train_generator

    trial = table[config["trial"]]
    out = Location.of(trial["dir"])
    cfg = derive(Config.from_dict(trial["cfg"]), {"trainer.output_dir": str(out / "generator")})
    summary = train_generator(cfg, trial["zoo"], progress=False, callbacks=[TuneReportCallback()])
    report = evaluate_generated(summary["generator"], str(out / "report"), num=cfg.sweep.num, workers=1,
                                zoo=trial["full_zoo"])
    # the last training loss again: ASHA (sweep.asha) reads "loss" in every report
    ray.tune.report({**trial_metrics(report), "train_seconds": summary["train_seconds"],
                     "loss": (summary["final"] or {}).get("loss", float("nan"))})


def trial_metrics(report: dict) -> dict:
    """The objective (val: generated mean over tasks) and, for the tables, each task's val / test / test interval."""
    out: dict = {}
    for t, r in report["tasks"].items():
        g = r["test"]["generated"]
        out.update({f"{t}.val": r["val"]["generated_mean"], f"{t}.test": g["mean"],
                    f"{t}.test_lo": g["ci"][0], f"{t}.test_hi": g["ci"][1], f"{t}.zoo_test": r["test"]["zoo"]["mean"]})
    tasks = list(report["tasks"])
    out["val"] = float(np.mean([out[f"{t}.val"] for t in tasks]))
    out["average_test"] = float(np.mean([out[f"{t}.test"] for t in tasks]))
    return out


# ---- the driver ----

def sweep(cfg: Config, zoo_dir: str, progress: bool = True) -> dict:
    """Run the sweep, or resume it (the same command again: finished trials are kept, not re-run); writes
    sweep.json / .md / .png to sweep.output_dir; one MLflow parent run, a nested run per trial."""
    import ray.tune
    from ray.tune import TuneConfig, Tuner

    from raypdiff.cluster import connect, cpus
    from raypdiff.domains import require_text
    from raypdiff.zoo.derive import subsample
    from raypdiff.zoo.store import check

    meta = check(zoo_dir)
    require_text(meta.domain, "sweep", zoo_dir)  # before any trial trains a generator
    captures = meta.capture.num * len(meta.capture.seeds)
    trials = plan(cfg, captures)
    out = writable(cfg.sweep.output_dir, "sweep.output_dir")
    full, zoos = str(Location.of(zoo_dir)), {}
    for t in trials:  # subsamples first: a bad captures value fails before any trial starts
        n = t["settings"].get("captures", captures)
        if n != captures and n not in zoos:
            zoos[n] = str(subsample(zoo_dir, n, cfg.sweep.subsample_seed, out / "zoos" / f"captures{n}"))
    table = {t["name"]: {"cfg": trial_config(cfg, t).to_dict(), "zoo": zoos.get(t["settings"].get("captures"), full),
                         "full_zoo": full, "dir": str(out / "trials" / t["name"])} for t in trials}
    connect(cfg.collect.ray_address, progress)
    per_trial = cfg.trainer.num_workers * cfg.trainer.cpus_per_worker
    concurrent = cfg.sweep.max_concurrent_trials or max(1, int(cpus() // per_trial))
    logger = TrialLogger(cfg, out, trials) if cfg.tracking.enabled else None
    # The trial function holds no CPU (its Train workers and its scorer ask for their own) but a bundle must hold
    # something: 1 MiB of memory. Even 0.01 CPU per trial left 0.98 of 2 CPUs, and the second trial's worker never
    # started.
    trainable = ray.tune.with_resources(ray.tune.with_parameters(run_trial, table=table), {"CPU": 0, "memory": 2 ** 20})
    space = {"trial": ray.tune.grid_search([t["name"] for t in trials])}
    # Tune keeps its state on sweep.output_dir's own storage (a bucket or a disk), where a re-run finds it
    path = (out / "tune" / EXPERIMENT).path
    t0 = time.time()
    if Tuner.can_restore(path, storage_filesystem=out.fs):
        tuner = Tuner.restore(path, trainable, resume_errored=True, param_space=space, storage_filesystem=out.fs)
    else:
        scheduler = None
        if cfg.sweep.asha:
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(metric="loss", mode="min", grace_period=cfg.sweep.asha_grace)
        tuner = Tuner(trainable, param_space=space,
                      tune_config=TuneConfig(max_concurrent_trials=concurrent, scheduler=scheduler),
                      run_config=ray.tune.RunConfig(name=EXPERIMENT, storage_path=(out / "tune").path,
                                                    storage_filesystem=out.fs,
                                                    callbacks=[logger] if logger else None,
                                                    verbose=1 if progress else 0))
    grid = tuner.fit()
    rows = {r.config["trial"]: {"metrics": r.metrics or {}, "error": None if r.error is None else
                                str(r.error).strip().splitlines()[-1][:300]} for r in grid}
    summary = summarize(cfg, trials, rows, time.time() - t0)
    with local_folder(out, last=("sweep.json",)) as local:  # sweep.json: the whole set of tables is there
        files = reports.write(local, "sweep", summary, markdown, plot)
        if logger is not None:
            logger.finish(rows, summary, files)
    return summary


class TrialLogger(Callback):
    """MLflow from the Tune side (the driver is the store's one writer): a nested run per finished trial, as it
    finishes; `finish` logs any a killed driver missed, and the tables on the parent run."""

    def __init__(self, cfg: Config, out: Location, trials: list[dict]):
        from raypdiff import tracking

        self.cfg, self.out, self.trials = cfg, out, {t["name"]: t for t in trials}
        self.parent = tracking.sweep_parent(cfg, out)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.log(trial.config["trial"], trial.last_result or {})

    def log(self, name: str, metrics: dict) -> None:
        from raypdiff import tracking

        t = self.trials[name]
        report = self.out / "trials" / name / "report" / "report.json"
        params = {**{f"axis.{a}": v for a, v in t["settings"].items()}, "trainer.seed": t["seed"]}
        figures = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and
                   not isinstance(v, bool) and (k in ("val", "average_test", "train_seconds") or "." in k)}
        # a trial ASHA stopped has no report; MLflow logs local files
        with local_copy(report) if report.is_file() else nullcontext() as local:
            tracking.log_trial(self.cfg, self.parent, name, params, figures, [local] if local else [])

    def finish(self, rows: dict, summary: dict, artifacts: list[Path]) -> None:
        from raypdiff import tracking

        for name, row in rows.items():
            if row["error"] is None and row["metrics"]:
                self.log(name, row["metrics"])
        tracking.log_sweep_summary(self.cfg, self.parent, {"trials": summary["trials"],
                                                            "wall_seconds": summary["wall_seconds"]}, artifacts)


# ---- the tables ----

def _row(cfg_tasks: list[str], metrics: dict) -> dict:
    return {"tasks": {t: {"val": metrics[f"{t}.val"], "test": metrics[f"{t}.test"],
                          "test_ci": [metrics[f"{t}.test_lo"], metrics[f"{t}.test_hi"]]} for t in cfg_tasks},
            "average_test": metrics["average_test"], "val": metrics["val"]}


def summarize(cfg: Config, trials: list[dict], rows: dict, wall: float) -> dict:
    """sweep.json: per axis and value the per-task val / test / test interval and the average test figure; the
    default row once per seed (its spread is the run-to-run noise); the paper's directional claims. wall_seconds:
    this invocation (a resumed sweep's is the rest); trial_seconds: every finished trial's own time, summed."""
    done = {n: r["metrics"] for n, r in rows.items() if r["error"] is None and "average_test" in r["metrics"]}
    tasks = sorted({k.rsplit(".", 1)[0] for m in done.values() for k in m if k.endswith(".test")})
    out: dict = {"mode": cfg.sweep.mode, "trials": len(trials), "finished": len(done),
                 "failed": {n: r["error"] for n, r in rows.items() if r["error"] is not None},
                 "stopped": sorted(n for n, r in rows.items() if r["error"] is None and n not in done),  # by ASHA
                 "wall_seconds": wall, "trial_seconds": float(sum(m.get("time_total_s", 0.0) for m in done.values())),
                 "tasks": tasks, "axes": {}, "defaults": {}, "default_seeds": {}}
    if cfg.sweep.mode == "grid":
        out["grid"] = [{"settings": t["settings"], **_row(tasks, done[t["name"]])} for t in trials if t["name"] in done]
        return out
    if done:  # the zoo's own adapters on test (the same in every trial): the scale the generated figures sit on
        ref = next(iter(done.values()))
        out["zoo_test"] = {t: ref[f"{t}.zoo_test"] for t in tasks}
        out["zoo_average_test"] = float(np.mean(list(out["zoo_test"].values())))
    defaults = [t for t in trials if t["name"].startswith("default,")]
    out["default_seeds"] = {str(t["seed"]): _row(tasks, done[t["name"]]) for t in defaults if t["name"] in done}
    first = defaults[0]["name"]
    for axis, values in cfg.sweep.axes.items():
        base = defaults[0]["settings"][axis]
        out["axes"][axis] = {str(v): _row(tasks, done[first if v == base else f"{axis}={v}"])
                             for v in values if (first if v == base else f"{axis}={v}") in done}
        out["defaults"][axis] = str(base)  # which value is the default row's
    out["noise"] = _noise(out["default_seeds"])
    out["claims"] = claims(out)
    return out


def _noise(seeds: dict) -> Optional[float]:
    """Run-to-run noise of the average test figure: the spread of the default row over its seeds."""
    vals = [r["average_test"] for r in seeds.values()]
    return float(max(vals) - min(vals)) if len(vals) > 1 else None


def claims(summary: dict) -> dict:
    """The paper's three directional claims, as measured: "holds" when the gap exceeds the default row's seed-to-seed
    spread, "no difference" within it, "does not hold" when it goes the other way beyond it."""
    axes, noise = summary["axes"], summary.get("noise") or 0.0

    def compare(axis: str, better: str, others: list[str]) -> dict:
        vals = {v: axes.get(axis, {}).get(v, {}).get("average_test") for v in [better, *others]}
        if any(x is None for x in vals.values()):
            return {"values": vals, "verdict": "not measured"}
        gaps = [vals[better] - vals[o] for o in others]
        verdict = "holds" if min(gaps) > noise else "does not hold" if max(gaps) < -noise else "no difference"
        return {"values": vals, "gaps": gaps, "noise": noise, "verdict": verdict}

    n = {int(k): v["average_test"] for k, v in axes.get("captures", {}).items()}
    if len(n) >= 2:
        xs = sorted(n)
        slope = float(np.polyfit(np.log(xs), [n[x] for x in xs], 1)[0])
        gap = n[xs[-1]] - n[xs[0]]
        larger = {"values": {str(x): n[x] for x in xs}, "slope_per_log_n": slope, "largest_minus_smallest": gap,
                  "noise": noise, "verdict": "holds" if gap > noise and slope > 0 else
                  "does not hold" if gap < -noise else "no difference"}
    else:
        larger = {"verdict": "not measured"}
    examples = max((v for v in axes.get("condition", {}) if v.startswith("k")), key=lambda v: int(v[1:]), default="k4")
    return {"task normalization beats batch and none": compare("normalize", "task", ["batch", "none"]),
            "larger N helps": larger,
            f"description + examples ({examples}) beats one-hot and description only":
                compare("condition", examples, ["onehot", "description"])}


def markdown(s: dict) -> str:
    noise = f"{s['noise']:.4f}" if s.get("noise") is not None else "n/a (one seed)"
    lines = [f"# Ablation sweep ({s['finished']} of {s['trials']} trials, {s['wall_seconds']:.0f} s)", "",
             "Objective (selection): the generated adapters' mean val metric over tasks. Reported: their mean test "
             "metric per task with its 95% bootstrap interval over test rows, and the average over tasks. Run-to-run "
             f"noise (the default row's spread over its seeds, average test): {noise}.", ""]
    tasks = s["tasks"]
    head = table(["value", "val", *(f"{t} test [95% CI]" for t in tasks), "average test"])
    if "zoo_test" in s:
        lines.append("the zoo's own adapters (collected, test): " + ", ".join(f"{t} {v:.3f}" for t, v in
                     s["zoo_test"].items()) + f"; average {s['zoo_average_test']:.4f}")
    for seed, r in s.get("default_seeds", {}).items():
        lines.append(f"default row, seed {seed}: average test {r['average_test']:.4f}, val {r['val']:.4f}")
    for axis, values in s.get("axes", {}).items():
        default = s["defaults"][axis]
        lines += ["", f"## {axis} (default: {default})", "", *head]
        for v, r in values.items():
            cells = " | ".join(cell(r["tasks"][t]["test"], r["tasks"][t]["test_ci"]) for t in tasks)
            lines.append(f"| {v}{' (default)' if v == default else ''} | {r['val']:.3f} | {cells} | "
                         f"{r['average_test']:.4f} |")
    if s.get("claims"):
        lines += ["", "## The paper's claims, as measured here", "", *table(["claim", "verdict", "figures"])]
        for claim, c in s["claims"].items():
            figs = ", ".join(f"{k} {v:.4f}" for k, v in (c.get("values") or {}).items() if v is not None)
            lines.append(f"| {claim} | {c['verdict']} | {figs} |")
    if s.get("stopped"):
        lines += ["", "Stopped early by ASHA (no evaluation): " + ", ".join(s["stopped"])]
    if s.get("failed"):
        lines += ["", "Failed trials: " + "; ".join(f"{k}: {v}" for k, v in s["failed"].items())]
    return "\n".join(lines) + "\n"


def plot(s: dict, path: Path) -> None:
    """One panel per axis: the average test figure (bars or a line over numeric values), each task's test figure
    with its interval, and the default row's seed spread as a band."""
    axes = {a: vals for a, vals in s.get("axes", {}).items() if vals}
    seeds = [r["average_test"] for r in s.get("default_seeds", {}).values()]
    n = max(1, len(axes))
    with plots.figure(path, (4.2 * n, 3.6), dpi=120, ncols=n, squeeze=False) as (fig, panels):
        for ax, (axis, vals) in zip(panels[0], axes.items()):
            labels = list(vals)
            x = np.arange(len(labels))
            avg = [vals[v]["average_test"] for v in labels]
            if axis in ("captures", "latent"):
                ax.plot(x, avg, "k-o", label="average")
            else:
                ax.bar(x, avg, color="#bbbbbb", label="average")
            for j, t in enumerate(s["tasks"]):
                y = np.array([vals[v]["tasks"][t]["test"] for v in labels])
                lo = y - np.array([vals[v]["tasks"][t]["test_ci"][0] for v in labels])
                hi = np.array([vals[v]["tasks"][t]["test_ci"][1] for v in labels]) - y
                ax.errorbar(x + (j - len(s["tasks"]) / 2) * 0.06, y, yerr=[lo, hi], fmt=".", ms=4, lw=0.8,
                            label=t)
            if len(seeds) > 1:
                ax.axhspan(min(seeds), max(seeds), color="tab:orange", alpha=0.25, label="default, seed spread")
            ax.set_xticks(x, labels, rotation=30)
            ax.set_title(axis)
            ax.set_ylabel("test metric (generated mean)")
        if axes:
            panels[0][0].legend(fontsize=6, loc="lower left")
