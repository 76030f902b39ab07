"""New tasks at k examples per label without any zoo: the base body with heads built from the examples (prototype,
logistic, and the one leave-one-out picks) against SetFit and the majority class, on each task's test rows."""
from __future__ import annotations

import time

import numpy as np

from raypdiff import heads
from raypdiff.baselines import setfit
from raypdiff.newtask import Builder
from raypdiff.reports import cell, format_ci, table
from raypdiff.stats import Bootstrap, mean_ci
from raypdiff.tasks import Split, TaskData, TaskSpec, majority_class

HEAD_METHODS = ("base+prototype", "base+logistic", "base+auto")


def draw_per_label(train: Split, spec: TaskSpec, k: int, rng: np.random.Generator) -> list:
    """k (texts, label) examples of each label (all of a label's rows when it has fewer)."""
    idx = np.concatenate([rng.choice(np.flatnonzero(train.labels == j), min(k, int((train.labels == j).sum())),
                                     replace=False) for j in range(spec.num_labels)])
    return [(train.texts[i], int(train.labels[i])) for i in idx]


def score_task(builder: Builder, spec: TaskSpec, data: TaskData, ks: list[int], setfit_ks: list[int], draws: int,
               seed: int, bootstrap: int) -> dict:
    """Per k: each method's test predictions over `draws` support draws → {"methods": {method: {metric: {mean, ci}}},
    "seconds": {method: per-adapter seconds}}; the same examples for every method at a k and draw."""
    zero = np.zeros(builder.body_layout.size, np.float32)
    x_test = builder.features(zero, data.test)
    boots = {m: Bootstrap(m, data.test.labels, bootstrap, seed) for m in (spec.metric, "macro_f1")}
    majority = np.full(len(data.test), majority_class(data.train.labels))
    out = {"metric": spec.metric, "test_rows": len(data.test), "k": {}}
    for k in ks:
        preds: dict[str, list] = {m: [] for m in HEAD_METHODS}
        secs: dict[str, list] = {m: [] for m in HEAD_METHODS}
        preds["majority"], secs["majority"] = [majority], [0.0]
        for d in range(draws):
            ex = draw_per_label(data.train, spec, k, np.random.default_rng([seed, k, d]))
            t0 = time.time()
            built = builder.build(spec, ex, {"base": zero})  # features of the examples + leave-one-out + fit
            secs["base+auto"].append(time.time() - t0)
            preds["base+auto"].append(built.head.predict(x_test))
            split = Split([t for t, _ in ex], np.asarray([y for _, y in ex]))
            for kind in ("prototype", "logistic"):
                t0 = time.time()
                h = heads.fit(kind, builder.features(zero, split), split.labels, spec.num_labels)
                secs[f"base+{kind}"].append(time.time() - t0)
                preds[f"base+{kind}"].append(h.predict(x_test))
            if k in setfit_ks:
                p, s = setfit(builder.model_cfg.base, ex, data.test.texts, seed=seed + d)
                preds.setdefault("setfit", []).append(p)
                secs.setdefault("setfit", []).append(s)
        out["k"][str(k)] = {
            "methods": {m: {name: b.mean(np.stack(p)) for name, b in boots.items()} for m, p in preds.items()},
            "seconds": {m: float(np.median(s)) for m, s in secs.items()},
            "preds": {m: np.stack(p) for m, p in preds.items()}}
    return out


def route_seconds(gen, builder: Builder, spec: TaskSpec, data: TaskData, k: int, num: int, repeats: int,
                  seed: int) -> dict:
    """Wall seconds to one adapter by the product's route (raypdiff.newtask: the base body and `num` generated bodies,
    a head chosen by leave-one-out on each), k examples per label, over `repeats` support draws: p50, p90."""
    from raypdiff.newtask import candidates

    secs = []
    for r in range(repeats):
        ex = draw_per_label(data.train, spec, k, np.random.default_rng([seed, k, 1000 + r]))
        t0 = time.time()
        builder.build(spec, ex, candidates("auto", gen, builder, spec, ex, num, seed + r))
        secs.append(time.time() - t0)
    return {"k": k, "num": num, "repeats": repeats, "p50": float(np.median(secs)),
            "p90": float(np.percentile(secs, 90))}


def paired(a: np.ndarray, b: np.ndarray, labels: np.ndarray, bootstrap: int, seed: int) -> str:
    """higher / lower / no difference: macro-F1 of a − b, paired over resampled test rows."""
    from raypdiff.stats import verdict

    return verdict(Bootstrap("macro_f1", labels, bootstrap, seed).diff(a, b)["ci"])


def summarize(tasks: dict[str, dict], labels: dict[str, np.ndarray], bootstrap: int, seed: int) -> dict:
    """Per k and method: the macro-F1 average over tasks with a 95% interval over tasks, median seconds per adapter;
    base+auto against SetFit counted by paired interval."""
    rng = np.random.default_rng(seed)
    summary = {}
    for k in next(iter(tasks.values()))["k"]:
        rows = [t["k"][k] for t in tasks.values()]
        methods = sorted({m for r in rows for m in r["methods"]})
        block = {}
        for m in methods:
            vals = [r["methods"][m]["macro_f1"]["mean"] for r in rows if m in r["methods"]]
            mean, ci = mean_ci(vals, bootstrap, rng)
            block[m] = {"macro_f1": mean, "ci": ci, "tasks": len(vals),
                        "seconds_per_adapter": float(np.median([r["seconds"][m] for r in rows if m in r["seconds"]]))}
        if "setfit" in methods:
            v = [paired(t["k"][k]["preds"]["base+auto"], t["k"][k]["preds"]["setfit"], labels[n], bootstrap, seed)
                 for n, t in tasks.items()]
            block["base+auto vs setfit"] = {w: v.count(w) for w in ("higher", "lower", "no difference")}
        summary[k] = block
    return summary


def markdown(report: dict) -> str:
    lines = ["# New tasks without a zoo: heads built from k examples per label vs SetFit", "",
             report["note"], ""]
    if report.get("route"):
        r = report["route"]
        lines += [f"Time to one adapter by the product's route ({r['task']}, the base body and generated bodies from "
                  f"{r['generator']}, heads by leave-one-out): " + "; ".join(
                      f"k = {s['k']} per label, {s['num']} generated: p50 {s['p50']:.2f} s, p90 {s['p90']:.2f} s"
                      for s in r["seconds"]), ""]
    lines += ["## Average over tasks (macro-F1, 95% interval over tasks)", "",
              *table(["k per label", "method", "macro-F1", "interval", "tasks", "s per adapter"])]
    for k, block in report["summary"].items():
        for m, v in block.items():
            if "macro_f1" in v:
                lines.append(f"| {k} | {m} | {v['macro_f1']:.3f} | {format_ci(v['ci'])} | "
                             f"{v['tasks']} | {v['seconds_per_adapter']:.2f} |")
    for k, block in report["summary"].items():
        if "base+auto vs setfit" in block:
            w = block["base+auto vs setfit"]
            lines.append(f"\nk = {k}: base+auto against SetFit by paired interval: higher on {w['higher']}, lower on "
                         f"{w['lower']}, no difference on {w['no difference']} tasks.")
    lines += ["", "## Per task (macro-F1, 95% interval over test rows)", ""]
    for name, t in report["tasks"].items():
        for k, r in t["k"].items():
            cells = ", ".join(f"{m} {cell(v['macro_f1']['mean'], v['macro_f1']['ci'])}"
                              for m, v in r["methods"].items())
            lines.append(f"- {name} (k={k}, {t['metric']} for the task): {cells}")
    return "\n".join(lines) + "\n"
