"""Style LoRAs judged by their samples (`raypdiff vision-eval`): style accuracy, kernel and Fréchet distances in a
Fashion-MNIST classifier's feature space (KID- and FID-style) and class accuracy, for the base, the zoo's LoRAs, their
weight average and generated LoRAs on seen styles, and on styles a second generator never saw; grids, interpolation.
With --zoo-only, the zoo's LoRAs against the base alone: whether the zoo learned its styles."""
from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from raypdiff import plots, reports
from raypdiff.config import Config, ConfigError, derive
from raypdiff.generate import Generator
from raypdiff.reports import cell, table
from raypdiff.stats import interval
from raypdiff.train import fold_generator
from raypdiff.storage import Location, local_folder, writable
from raypdiff.vision.domain import image_condition
from raypdiff.zoo.store import ZooMeta

SEEN = ("base", "zoo_mean", "zoo_best", "weight_average", "generated", "generated_best")
ZOO = ("base", "zoo_mean", "zoo_best")  # --zoo-only
HELDOUT = ("base", "nearest_style", "weight_average", "generated", "generated_best",
           "zoo_best")  # weight_average: of the seen styles' captures; zoo_best: the style's own LoRA (oracle)
SCORES = ("style_acc", "kid", "fd", "class_acc")
RESAMPLED = ("style_acc", "kid", "class_acc")  # with intervals; fd on the whole prompt set only


@dataclass
class Judges:
    """Classifiers trained on real images: `styles` tells "plain" (index 0) and each style apart; `classes` reads
    the garment whatever its style, and its features are the Fréchet distance's space."""
    styles: torch.nn.Module
    classes: torch.nn.Module
    names: list[str]  # style i is output i + 1 of `styles`


def train_judges(cfg: Config, specs: list, progress: bool = True) -> tuple[Judges, dict]:
    """Both judges on style_eval.judge_images real train images per style and unstyled (rows the style LoRAs never
    trained on); their accuracy on the styles' val images (the last eval.val_examples train rows: what picks a judge)
    and test images (what reports), each styled with draws of their own."""
    from raypdiff.vision import classify, fashion
    from raypdiff.vision.styles import apply

    e, v = cfg.style_eval, cfg.vision
    (xtr, ytr), (xte, yte) = fashion.load("train", v.data_dir), fashion.load("test", v.data_dir)
    a, n_val = v.style_images, cfg.eval.val_examples  # after the style LoRAs' train rows, before the val rows
    if a + e.judge_images + n_val > len(xtr):
        raise ConfigError(f"style_eval.judge_images: {e.judge_images} rows after vision.style_images={a} overlap the "
                          f"val rows; use fewer")
    x, y = xtr[a:a + e.judge_images], ytr[a:a + e.judge_images]
    images, styles, classes = [x], [np.zeros(len(x), int)], [y]
    for i, spec in enumerate(specs, start=1):
        images.append(apply(spec, x, seed=e.seed + i))
        styles.append(np.full(len(x), i))
        classes.append(y)
    images, styles, classes = np.concatenate(images), np.concatenate(styles), np.concatenate(classes)
    if progress:
        print(f"vision-eval: training the style and class judges on {len(images)} real images", file=sys.stderr)
    judges = Judges(classify.train(images, styles, len(specs) + 1, steps=e.judge_steps, seed=e.seed),
                    classify.train(images, classes, len(fashion.CLASSES), steps=e.judge_steps, seed=e.seed),
                    [s.name for s in specs])
    n_test = min(cfg.eval.test_examples, len(xte))
    acc = {}
    for split, xs, ys, draw in (("val", xtr[len(xtr) - n_val:], ytr[len(xtr) - n_val:], 2000),
                                ("test", xte[:n_test], yte[:n_test], 1000)):
        acc.update(_judged(judges, specs, xs, ys, split, e.seed + draw))
    return judges, acc


def _judged(judges: Judges, specs: list, x: np.ndarray, y: np.ndarray, split: str, seed: int) -> dict:
    """Each judge's accuracy on real images of every style (style i drawn with seed + i), overall and per style: the
    class judge's per style is the most that style's samples can be expected to reach."""
    from raypdiff.vision import classify
    from raypdiff.vision.styles import apply

    styled = np.concatenate([apply(spec, x, seed=seed + i) for i, spec in enumerate(specs, start=1)])
    right = {"style": classify.predict(judges.styles, styled) == np.repeat(np.arange(1, len(specs) + 1), len(x)),
             "class": classify.predict(judges.classes, styled) == np.tile(y, len(specs))}
    out = {}
    for kind, r in right.items():
        out[f"{kind}_{split}_acc"] = float(r.mean())
        out[f"{kind}_{split}_acc_by_style"] = {s.name: float(c.mean()) for s, c in zip(specs, np.split(r, len(specs)))}
    return out


def prompt_set(cfg: Config) -> np.ndarray:
    """(N,) class ids: every Fashion-MNIST class style_eval.per_class times, the same for every method."""
    from raypdiff.vision.fashion import CLASSES

    return np.tile(np.arange(len(CLASSES)), cfg.style_eval.per_class)


class Sampler:
    """The base pipeline with a LoRA slot: any adapter vector (zeros: the base itself) → its samples of the prompt
    set, always from the same initial noise, so methods differ only by their adapter."""

    def __init__(self, cfg: Config, layout_seed: int = 0):
        from raypdiff.vision.domain import pipeline_source
        from raypdiff.vision.t2i import TextToImage, load_pipeline
        from raypdiff.vision.train import guidance

        self.cfg = cfg
        self.pipe = load_pipeline(pipeline_source(cfg))
        self.model = TextToImage(self.pipe, cfg.vision)
        self.layout = self.model.add_lora(cfg.lora, layout_seed)
        self.labels = prompt_set(cfg)
        self.guidance = guidance(cfg)

    def load(self, vector: Optional[np.ndarray]) -> None:
        from raypdiff import lora

        lora.load_vector(self.model.denoiser, np.zeros(self.layout.size, np.float32) if vector is None else vector,
                         self.layout)

    def sample(self, vector: Optional[np.ndarray]) -> np.ndarray:
        """(N, S, S) uint8 samples of the prompt set."""
        from raypdiff.vision.base import prompts_for

        self.load(vector)
        return self.model.sample(prompts_for(self.cfg.vision, self.labels), self.cfg.vision.sample_steps,
                                 torch.Generator().manual_seed(self.cfg.style_eval.seed), self.guidance)

    def val_score(self, vector: np.ndarray, images: np.ndarray, labels: np.ndarray) -> float:
        """Minus the denoising error on (N, 28, 28) images (the zoo's capture score): what best-by-val picks by."""
        from raypdiff.vision.style_lora import denoise_errors

        self.load(vector)
        return -float(denoise_errors(self.pipe, self.cfg.vision, images, labels, seed=self.cfg.eval.split_seed).mean())


class StyleScorer:
    """One style's scores of samples: the share the style judge calls that style, the kernel (KID) and Fréchet
    distances of their class-judge features to the style's real test images, and the share whose garment the class
    judge reads right. Intervals come from halves of the prompt set drawn without replacement, the same halves for
    every method (paired): each half estimates the whole set's value without bias (an accuracy's, KID's), and at half
    the set a mean's spread over halves is its own sampling spread (variance σ²(1/m - 1/N) = σ²/N at m = N/2). The
    Fréchet distance grows on smaller sets (biased upward), so it is given on the whole set only, with no interval."""

    def __init__(self, judges: Judges, style: str, real: np.ndarray, labels: np.ndarray, num: int, seed: int):
        from raypdiff.vision import classify

        self.judges, self.target, self.labels = judges, judges.names.index(style) + 1, labels
        self.real = classify.features(judges.classes, real)  # (M, 128)
        self.real_term = classify.off_diagonal_mean(classify.cubic_kernel(self.real, self.real))
        rng, n = np.random.default_rng(seed), len(labels)
        self.halves = np.stack([rng.permutation(n)[:n // 2] for _ in range(num)])  # (B, N/2)

    def rows(self, samples: np.ndarray) -> dict:
        """(N, S, S) samples of one adapter → per-sample style judge labels, class hits, features and kernel values."""
        from raypdiff.vision import classify

        f = classify.features(self.judges.classes, samples)
        return {"called": classify.predict(self.judges.styles, samples),
                "class": classify.predict(self.judges.classes, samples) == self.labels, "features": f,
                "k_self": classify.cubic_kernel(f, f), "k_real": classify.cubic_kernel(f, self.real).mean(1)}

    def _values(self, rows: list[dict], idx: np.ndarray) -> np.ndarray:
        """(len(RESAMPLED),) values of the adapters' rows `idx`, averaged over the adapters."""
        from raypdiff.vision.classify import off_diagonal_mean

        def kid(r: dict) -> float:  # classify.kid from the kernel values rows() keeps
            return off_diagonal_mean(r["k_self"][np.ix_(idx, idx)]) + self.real_term - 2 * r["k_real"][idx].mean()

        return np.mean([[(r["called"][idx] == self.target).mean(), kid(r), r["class"][idx].mean()] for r in rows],
                       axis=0)

    def score(self, rows: list[dict]) -> tuple[dict, np.ndarray]:
        """rows of n adapters → ({score: mean over them, score_ci: its 95% interval; fd: no interval}, the (B, 3)
        values on the halves, for paired differences)."""
        from raypdiff.vision.classify import frechet

        point = self._values(rows, np.arange(len(self.labels)))
        draws = np.array([self._values(rows, i) for i in self.halves])
        out = {}
        for j, name in enumerate(RESAMPLED):
            out[name], out[f"{name}_ci"] = float(point[j]), interval(draws[:, j])
        out["fd"] = float(np.mean([frechet(r["features"], self.real) for r in rows]))
        out["called"] = self.called(rows)
        return out, draws

    def called(self, rows: list[dict], top: int = 3) -> dict[str, float]:
        """What the style judge calls the samples (why a style falls short: too weak reads "plain", a neighbour's
        name means the wrong style): the `top` labels by share, over all adapters' samples."""
        share = np.bincount(np.concatenate([r["called"] for r in rows]), minlength=len(self.judges.names) + 1)
        share = share / share.sum()
        names = ["plain", *self.judges.names]
        return {names[i]: round(float(share[i]), 3) for i in np.argsort(-share, kind="stable")[:top] if share[i] > 0}


def paired(a: dict, b: dict, draws_a: np.ndarray, draws_b: np.ndarray) -> dict:
    """Method a minus method b on each resampled score, with the interval of the differences on the same halves."""
    out = {}
    for j, name in enumerate(RESAMPLED):
        out[name], out[f"{name}_ci"] = a[name] - b[name], interval(draws_a[:, j] - draws_b[:, j])
    return out


def produced(r: dict, method: str) -> bool:
    """A style counts as produced by a method when the style judge's share is above the base's by interval (the
    judge's false positives on base samples are the base's share) and the garment stays readable (class acc ≥ 0.6)."""
    return r["paired"][f"{method} - base"]["style_acc_ci"][0] > 0 and r[method]["class_acc"] >= 0.6


def learned(r: dict) -> bool:
    """A style the zoo learned: its LoRAs (the zoo mean) produce it with style accuracy ≥ 0.8."""
    return r["zoo_mean"]["style_acc"] >= 0.8 and produced(r, "zoo_mean")


def _spread(n_rows: int, k: int) -> np.ndarray:
    """k row indices spread evenly over a style's captures (rows run over seeds, then steps)."""
    return np.unique(np.linspace(0, n_rows - 1, min(k, n_rows)).round().astype(int))


def best_capture(a: dict) -> np.ndarray:
    """(1, P): a style's capture with the best val score."""
    return a["vector"][[int(np.argmax(a["value"]))]]


@dataclass
class Samples:
    """What the grids show, kept out of the report's JSON (images, not figures): per "seen:<style>" or
    "heldout:<style>" the real images and each method's first samples, and the interpolation strip."""
    grids: dict[str, dict[str, np.ndarray]]
    strip: list[np.ndarray]


class Methods:
    """Scores methods' adapters on one style by their samples. An adapter is sampled once whichever methods share it
    (the base, best-of-n among the n); each method's first sample of each class is kept for the style's grid."""

    def __init__(self, sampler: Sampler, judges: Judges, data: dict, bootstrap: int, seed: int, progress: bool):
        self.sampler, self.judges, self.data = sampler, judges, data
        self.bootstrap, self.seed, self.progress = bootstrap, seed, progress
        self.cache: dict[bytes, np.ndarray] = {}  # adapter bytes → its samples
        self.grids: dict[str, dict[str, np.ndarray]] = {}

    def sample(self, vector: Optional[np.ndarray]) -> np.ndarray:
        key = b"base" if vector is None else np.ascontiguousarray(vector).tobytes()
        if key not in self.cache:
            self.cache[key] = self.sampler.sample(vector)
        return self.cache[key]

    def best_of(self, vectors: np.ndarray, images: np.ndarray, labels: np.ndarray) -> int:
        """The index of the vector best by val on (images, labels)."""
        return int(np.argmax([self.sampler.val_score(v, images, labels) for v in vectors]))

    def score(self, style: str, methods: dict[str, Optional[np.ndarray]], key: str,
              against: Optional[str] = None) -> dict:
        """methods: name → (n, P) adapter vectors (None: the base; it must come first) → {name: scores, "paired":
        each other method minus the base, and with `against` generated minus it, on the same halves}."""
        real = self.data[style].test[0]
        sc, res = StyleScorer(self.judges, style, real, self.sampler.labels, self.bootstrap, self.seed), {}
        grid = self.grids.setdefault(f"{key}:{style}", {"real": real[:10]})
        draws = {}
        for name, vectors in methods.items():
            if self.progress:
                print(f"vision-eval: {key} style {style}: {name}", file=sys.stderr)
            samples = [self.sample(None)] if vectors is None else [self.sample(v) for v in vectors]
            grid[name] = samples[0][:10]
            res[name], draws[name] = sc.score([sc.rows(s) for s in samples])
        pairs = [(m, "base") for m in methods if m != "base"] + ([("generated", against)] if against else [])
        res["paired"] = {f"{a} - {b}": paired(res[a], res[b], draws[a], draws[b]) for a, b in pairs}
        return res


def run(cfg: Config, zoo_dir: str, gen_path: Optional[str], progress: bool = True) -> dict:
    """Score every style of the zoo (seen by the generator at gen_path) and, with style_eval.heldout_styles, those
    styles again with a generator trained without them; gen_path None scores the held-out styles alone (no seen
    styles, no interpolation). Writes <style_eval.output_dir>/vision.{json,md,png} and the grids (`score`, then
    `write`)."""
    meta, gen = _check(cfg, zoo_dir, gen_path)
    out = writable(cfg.style_eval.output_dir, "style_eval.output_dir")
    report, samples = score(cfg, zoo_dir, meta, gen, out, progress)
    with local_folder(out, last=("vision.json",)) as local:  # vision.json: the whole report is there
        files = write(report, samples, local)
        if cfg.tracking.enabled:
            from raypdiff import tracking

            name = "vision-eval" if gen is not None else "vision-eval-heldout"
            tracking.log_report(cfg, name, flat_metrics(report), files)
    return report


def zoo_only(cfg: Config, zoo_dir: str, progress: bool = True) -> dict:
    """Whether the zoo's style LoRAs produce their styles, before any generator: per style the base, the zoo mean
    (style_eval.zoo_captures captures spread over seeds and steps) and the best capture by val, judged as `run` judges
    them. Writes <style_eval.output_dir>/zoo.{json,md} and a grid per style."""
    meta = _style_zoo(zoo_dir)
    out = writable(cfg.style_eval.output_dir, "style_eval.output_dir")
    t0 = time.time()
    judge_acc, arrays, methods = _scoring(cfg, zoo_dir, meta, progress)
    report: dict = {"judges": judge_acc, "prompts": len(methods.sampler.labels), "styles": {}}
    for s in meta.tasks:
        a = arrays[s]
        report["styles"][s] = methods.score(s, {"base": None, "zoo_mean": a["vector"][_spread(
            len(a["value"]), cfg.style_eval.zoo_captures)], "zoo_best": best_capture(a)}, "seen")
    report["learned"] = [s for s, r in report["styles"].items() if learned(r)]
    report["eval_seconds"] = time.time() - t0
    report.update(_provenance(cfg, zoo_dir, meta, arrays))
    with local_folder(out, last=("zoo.json",)) as local:
        reports.write(local, "zoo", report, zoo_markdown)
        write_pictures(Samples(methods.grids, []), local)
    return report


def _style_zoo(zoo_dir: str) -> ZooMeta:
    from raypdiff.zoo.store import check

    meta = check(zoo_dir)
    if meta.domain != "vision":
        raise ConfigError(f"{zoo_dir} is a text zoo: vision-eval scores style zoos (domain: vision)")
    return meta


def _check(cfg: Config, zoo_dir: str, gen_path: Optional[str]) -> tuple[dict, Optional[Generator]]:
    """The zoo's meta and the generator (None without gen_path), once both are known to fit style_eval and each
    other."""
    e = cfg.style_eval
    meta = _style_zoo(zoo_dir)
    styles = list(meta.tasks)
    for name in [*e.heldout_styles, *e.interpolate]:
        if name not in styles:
            raise ConfigError(f"style_eval: style {name!r} is not in the zoo {zoo_dir} (styles: {', '.join(styles)})")
    if len(set(styles) - set(e.heldout_styles)) < 1:
        raise ConfigError("style_eval.heldout_styles: holds out every style; leave at least one to train on")
    if gen_path is None:
        if not e.heldout_styles:
            raise ConfigError("--heldout-only: style_eval.heldout_styles is empty; name the styles to hold out")
        return meta, None
    gen = Generator(gen_path)
    gen.check_compatible(cfg)
    if gen.task_names != styles:
        raise ConfigError(f"{gen_path} was trained on other styles than the zoo {zoo_dir}'s")
    return meta, gen


def score(cfg: Config, zoo_dir: str, meta: ZooMeta, gen: Optional[Generator], out: Location,
          progress: bool) -> tuple[dict, Samples]:
    """The report as a plain dict (vision.json) and the samples its grids show: each style's methods and the
    interpolation (with gen), and with style_eval.heldout_styles those styles by a generator trained without them
    (kept in out); where the base and the zoo came from."""
    e = cfg.style_eval
    t0 = time.time()
    styles = list(meta.tasks)
    judge_acc, arrays, methods = _scoring(cfg, zoo_dir, meta, progress)
    sampler, judges, data = methods.sampler, methods.judges, methods.data
    report: dict = {"judges": judge_acc, "prompts": len(sampler.labels), "styles": {}, "heldout_styles": {}}
    for s in styles if gen is not None else []:
        a, d = arrays[s], data[s]
        picks = _spread(len(a["value"]), e.zoo_captures)
        generated = gen.vectors(gen.conditions(s, e.num), s, seed=e.seed)
        report["styles"][s] = methods.score(s, {
            "base": None, "zoo_mean": a["vector"][picks], "zoo_best": best_capture(a),
            "weight_average": a["vector"].mean(0, keepdims=True), "generated": generated,
            "generated_best": generated[[methods.best_of(generated, *d.val)]]}, "seen", "zoo_mean")
    if e.heldout_styles:
        rng = np.random.default_rng(e.seed)
        seen = [s for s in styles if s not in e.heldout_styles]
        hgen = fold_generator(cfg, zoo_dir, seen, out, "style_eval.output_dir", progress, prefix="heldout_")
        average = np.concatenate([arrays[s]["vector"] for s in seen]).mean(0, keepdims=True)
        given = {}  # style → the held-out generator's LoRAs from k of its images
        for s in e.heldout_styles:
            a, (x, y) = arrays[s], data[s].train
            pick = rng.choice(len(x), min(cfg.condition.k, len(x)), replace=False)  # the k images a user would give
            cond, nearest = image_condition(hgen, x[pick], e.num)
            given[s] = generated = hgen.vectors(cond, nearest, seed=e.seed)
            report["heldout_styles"][s] = {"nearest": nearest, **methods.score(s, {
                "base": None, "nearest_style": best_capture(arrays[nearest]), "weight_average": average,
                "generated": generated, "generated_best": generated[[methods.best_of(generated, x[pick], y[pick])]],
                "zoo_best": best_capture(a)}, "heldout", "nearest_style")}
        report["condition_read"] = condition_read(cfg, hgen, methods, given, report["heldout_styles"], rng)
    report["interpolation"], strip = (interpolation(cfg, gen, sampler, judges, e.interpolate or styles[:2])
                                      if gen is not None else ([], []))
    report["targets"] = targets(report)
    report["eval_seconds"] = time.time() - t0
    report.update(_provenance(cfg, zoo_dir, meta, arrays))
    return report, Samples(methods.grids, strip)


def _scoring(cfg: Config, zoo_dir: str, meta: ZooMeta, progress: bool) -> tuple[dict, dict, "Methods"]:
    """What every style report scores with: the judges' accuracy on real test images, the zoo's arrays, and Methods
    over the zoo's own base, judges trained here and the styled data exactly as the zoo was scored on it."""
    from raypdiff.domains import domain_for
    from raypdiff.vision.domain import load_styled
    from raypdiff.zoo.store import task_arrays

    specs = [domain_for("vision").spec(meta.tasks[s].spec) for s in meta.tasks]
    zoo_cfg = derive(cfg, {**{f"vision.{k}": x for k, x in _zoo_vision(meta).items()}, "eval": meta.eval})
    data = {s.name: load_styled(zoo_cfg, s) for s in specs}
    judges, judge_acc = train_judges(zoo_cfg, specs, progress)
    methods = Methods(Sampler(zoo_cfg), judges, data, cfg.style_eval.bootstrap, cfg.style_eval.seed, progress)
    return judge_acc, task_arrays(zoo_dir), methods


def _zoo_vision(meta: ZooMeta) -> dict:
    """The vision settings of the zoo's own model (pipeline None: the offline base)."""
    return {"pipeline": None, **meta.base_model["vision"]}


def _provenance(cfg: Config, zoo_dir: str, meta: ZooMeta, arrays: dict) -> dict:
    """base: the zoo's named pipeline, or vision-base's summary of the base it made (None for one it did not make);
    zoo: its styles, captures and collect time."""
    pipeline = _zoo_vision(meta)["pipeline"]
    made = Location.of(cfg.vision.base_dir, "vision.base_dir") / "base.json"
    timing = Location.of(zoo_dir) / "collect_seconds.json"
    if pipeline:
        base = {"pipeline": pipeline}
    else:
        base = ({k: v for k, v in json.loads(made.read_text()).items() if k in (
            "class_acc", "guidance_scale", "class_acc_by_guidance", "train_seconds", "steps", "judge_test_acc")}
                if made.is_file() else None)
    return {"base": base,
            "zoo": {"styles": len(meta.tasks), "captures": int(sum(len(arrays[s]["value"]) for s in meta.tasks)),
                    "collect_seconds": json.loads(timing.read_text())["seconds"] if timing.is_file() else None,
                    "lora": {k: meta.lora[k] for k in ("r", "alpha", "target_modules") if k in meta.lora},
                    "train_steps": meta.train.get("steps"), "train_lr": meta.train.get("lr"),
                    "train_per_task": {t: o for t, o in (meta.train.get("per_task") or {}).items() if t in meta.tasks},
                    "seeds": meta.capture.seeds}}


def recipe(zoo: dict) -> str:
    """A zoo's training in words: "200 steps at lr 0.001; 600 steps for dotted, outline" (train.per_task)."""
    text = f"{zoo['train_steps']} steps" + (f" at lr {zoo['train_lr']:g}" if zoo.get("train_lr") else "")
    groups: dict[str, list[str]] = {}
    for task, over in (zoo.get("train_per_task") or {}).items():
        words = ", ".join(f"{v:g} steps" if k == "steps" else f"{k} {v:g}" for k, v in sorted(over.items()))
        groups.setdefault(words, []).append(task)
    return text + "".join(f"; {words} for {', '.join(tasks)}" for words, tasks in groups.items())


def write(report: dict, samples: Samples, out: Path) -> list[Path]:
    """vision.json, vision.md and vision.png from the report alone; the grids and the strip from the samples."""
    return [*reports.write(out, "vision", report, markdown, plot), *write_pictures(samples, out)]


def flat_metrics(report: dict) -> dict[str, float]:
    """Each method's scores averaged over styles, as MLflow metric names (kind.method.score) → values."""
    return {f"{kind}.{m}.{k}": float(np.mean([r[m][k] for r in report[kind].values()]))
            for kind, methods in (("styles", SEEN), ("heldout_styles", HELDOUT)) if report[kind]
            for m in methods for k in SCORES}


def condition_read(cfg: Config, gen: Generator, methods: Methods, given: dict, held: dict,
                   rng: np.random.Generator) -> dict:
    """Whether the held-out generator reads its images. "k": per held-out style, its LoRAs from 1, condition.k and 16
    of its images and from condition.k random-noise images. "swap": per pair of styles (the held-out ones with each
    other and each with its nearest seen style), the share of samples (the same adapter slot, prompt and noise) whose
    judged style follows the images given: a's style from a's images and b's from b's."""
    from raypdiff.vision import classify

    e, k = cfg.style_eval, cfg.condition.k

    def lora_from(images: np.ndarray) -> np.ndarray:
        cond, nearest = image_condition(gen, images, e.num)
        return gen.vectors(cond, nearest, seed=e.seed)

    def images_of(style: str, n: int) -> np.ndarray:
        x = methods.data[style].train[0]
        return x[rng.choice(len(x), min(n, len(x)), replace=False)]

    given, out = dict(given), {"k": {}, "swap": {}}
    for s, own in list(given.items()):
        x = methods.data[s].train[0]
        variants = {f"k={n}": own if n == k else lora_from(images_of(s, n)) for n in sorted({1, k, 16})}
        variants["random images"] = lora_from(rng.integers(0, 256, (k, *x.shape[1:])).astype(x.dtype))
        out["k"][s] = methods.score(s, {"base": None, **variants}, "condition")
    pairs = [*itertools.combinations(given, 2), *((s, held[s]["nearest"]) for s in list(given))]
    for b in sorted({b for _, b in pairs} - set(given)):  # sorted: the same draws from rng on every run
        given[b] = lora_from(images_of(b, k))
    judged = {s: np.stack([classify.predict(methods.judges.styles, methods.sample(v)) for v in vs])
              for s, vs in given.items()}  # (num, N) style indices
    for a, b in pairs:
        ia, ib = (methods.judges.names.index(t) + 1 for t in (a, b))
        share = {f"{x}_from_{y}": float((judged[t] == i).mean())  # x's style judged on samples from t's images
                 for x, i in (("a", ia), ("b", ib)) for y, t in (("a", a), ("b", b))}
        out["swap"][f"{a} / {b}"] = {"follows": float(((judged[a] == ia) & (judged[b] == ib)).mean()), **share}
    return out


def interpolation(cfg: Config, gen, sampler: Sampler, judges: Judges, pair: list[str]) -> tuple[list[dict], list]:
    """Conditions on the line from one style's mean condition to another's: per point, the share of samples the
    style judge calls each end's style, and the class accuracy; the samples of the first classes for the strip."""
    from raypdiff.vision import classify

    a, b = pair
    ends = [torch.from_numpy(gen.bank[s].mean(0)) for s in pair]
    path, strip = [], []
    for w in np.linspace(0, 1, cfg.style_eval.interpolate_points):
        cond = gen.condition(((1 - w) * ends[0] + w * ends[1])[None].float())
        vector = gen.vectors(cond, a if w < 0.5 else b, seed=cfg.style_eval.seed)[0]  # the nearer end's statistics
        samples = sampler.sample(vector)
        pred = classify.predict(judges.styles, samples)
        path.append({"weight": float(w), f"style_acc:{a}": float((pred == judges.names.index(a) + 1).mean()),
                     f"style_acc:{b}": float((pred == judges.names.index(b) + 1).mean()),
                     "class_acc": float((classify.predict(judges.classes, samples) == sampler.labels).mean())})
        strip.append(samples[:4])
    return path, strip


def targets(report: dict) -> dict:
    """The issue's targets: the zoo's own LoRAs produce their style (style accuracy ≥ 0.8 and `produced`); on seen
    styles the generated LoRAs' style accuracy within 5 points of the trained ones' (zoo mean) and their Fréchet
    distance within 10%; on held-out styles generated above the nearest style's LoRA by interval (paired)."""
    seen = report["styles"].values()
    out = {"zoo_learned": sum(learned(r) for r in seen),
           "seen_style_acc_within_5_points": sum(r["generated"]["style_acc"] >= r["zoo_mean"]["style_acc"] - 0.05
                                                 for r in seen),
           "seen_fd_within_10_percent": sum(r["generated"]["fd"] <= 1.1 * r["zoo_mean"]["fd"] for r in seen),
           "seen_styles": len(report["styles"])}
    held = report["heldout_styles"].values()
    out["heldout_generated_above_nearest"] = sum(
        r["paired"]["generated - nearest_style"]["style_acc_ci"][0] > 0 for r in held)
    out["heldout_styles"] = len(report["heldout_styles"])
    swaps = report.get("condition_read", {}).get("swap", {}).values()
    out["swaps_following_90_percent"], out["swaps"] = sum(x["follows"] >= 0.9 for x in swaps), len(swaps)
    return out


def _cell(r: dict, k: str) -> str:
    return cell(r[k], r[k + "_ci"])


def _preamble(report: dict, title: str) -> list[str]:
    by_style = report["judges"]["class_test_acc_by_style"]
    return [f"# {title} ({report['prompts']} prompts per adapter, the same noise for every method)", "",
            f"Judges on real styled test images: style {report['judges']['style_test_acc']:.3f}, class "
            f"{report['judges']['class_test_acc']:.3f}; the class judge per style (the most a style's samples can be "
            f"expected to reach): {', '.join(f'{s} {a:.2f}' for s, a in by_style.items())}. Distances in the class "
            f"judge's 128-d features to the style's real test images (not Inception features): kid, the kernel "
            f"distance (KID's formula, unbiased); fd, the Fréchet distance (FID's formula, biased upward on small sets: "
            f"no interval). 95% intervals: halves of the prompt set drawn without replacement, the same for every "
            f"method; - base: the method's style accuracy minus the base's on the same halves (the base's share is the "
            f"judge's false-positive rate). produced: above the base by interval with class acc ≥ 0.6. judge calls: "
            f"the style judge's commonest labels for the samples (plain: unstyled).", ""]


def _styles_table(styles: dict, methods: tuple) -> list[str]:
    lines = table(["style", "method", "style acc", "- base", "kid", "fd", "class acc", "produced", "judge calls"])
    for s, r in styles.items():
        for m in methods:
            label = f"nearest_style ({r['nearest']})" if m == "nearest_style" else m
            d = r["paired"].get(f"{m} - base")
            lines.append(f"| {s} | {label} | {_cell(r[m], 'style_acc')} | {_cell(d, 'style_acc') if d else ''} | "
                         f"{_cell(r[m], 'kid')} | {r[m]['fd']:.1f} | "
                         f"{_cell(r[m], 'class_acc')} | {('✓' if produced(r, m) else '✗') if d else ''} | "
                         f"{', '.join(f'{k} {v:.2f}' for k, v in r[m].get('called', {}).items())} |")
    return [*lines, ""]


def zoo_markdown(report: dict) -> str:
    z = report["zoo"]
    return "\n".join([
        *_preamble(report, "The style zoo's LoRAs judged by their samples"),
        f"Zoo: {z['styles']} styles, {z['captures']} captures (seeds {z['seeds']}), LoRA r {z['lora'].get('r')} on "
        f"{', '.join(z['lora'].get('target_modules', []))}, {recipe(z)}"
        + (f", collected in {z['collect_seconds']:.0f} s" if z["collect_seconds"] else "") + ". Learned (the zoo mean's "
        f"style acc ≥ 0.8, produced): {len(report['learned'])} of {len(report['styles'])}"
        + (f": {', '.join(report['learned'])}." if report["learned"] else "."), "",
        *_styles_table(report["styles"], ZOO)]) + "\n"


def markdown(report: dict) -> str:
    lines = _preamble(report, "Style LoRAs judged by their samples")
    for kind, methods in (("styles", SEEN), ("heldout_styles", HELDOUT)):
        if report[kind]:
            lines += [f"## {'Seen styles' if kind == 'styles' else 'Held-out styles (a generator that never saw them)'}",
                      "", *_styles_table(report[kind], methods)]
    t = report["targets"]
    seen = [f"- the zoo's LoRAs (mean) produce their style with style accuracy ≥ 0.8: {t['zoo_learned']} of "
            f"{t['seen_styles']} seen styles",
            f"- generated style accuracy within 5 points of the zoo mean: {t['seen_style_acc_within_5_points']} of "
            f"{t['seen_styles']} seen styles",
            f"- generated Fréchet distance within 10% of the zoo mean's: {t['seen_fd_within_10_percent']} of "
            f"{t['seen_styles']}"] if t["seen_styles"] else ["- seen styles: not scored (--heldout-only)"]
    lines += ["## Targets", "", *seen,
              f"- held-out styles where generated beats the nearest style's LoRA on style accuracy by interval "
              f"(paired): {t['heldout_generated_above_nearest']} of {t['heldout_styles']}",
              f"- swapped images: the judged style follows the images on ≥ 90% of samples: "
              f"{t['swaps_following_90_percent']} of {t['swaps']} pairs", "", *_condition_read(report)]
    path = report["interpolation"]
    if path:
        lines += ["## Interpolation", "", *table(["weight", *(k for k in path[0] if k != "weight")])]
    for p in path:
        lines.append(f"| {p['weight']:.2f} | " + " | ".join(f"{v:.3f}" for k, v in p.items() if k != "weight") + " |")
    return "\n".join(lines) + "\n"


def _condition_read(report: dict) -> list[str]:
    c = report.get("condition_read")
    if not c:
        return []
    lines = ["## Held-out styles: is the condition read?", "", "The held-out generator given k of the style's own "
             "images (k=1, condition.k, 16) or random-noise images:", "",
             *table(["style", "images given", "style acc", "- base", "class acc"])]
    for s, r in c["k"].items():
        for m in (m for m in r if m not in ("base", "paired")):
            d = r["paired"][f"{m} - base"]
            lines.append(f"| {s} | {m} | {_cell(r[m], 'style_acc')} | {_cell(d, 'style_acc')} | "
                         f"{_cell(r[m], 'class_acc')} |")
    lines += ["", "Swapped images (a / b): the share of samples (the same adapter slot, prompt and noise) judged a's "
              "style from a's images and b's from b's (follows); each style's share on samples from either's images.",
              "", *table(["a / b", "follows", "a from a's", "a from b's", "b from b's", "b from a's"])]
    for pair, x in c["swap"].items():
        lines.append(f"| {pair} | " + " | ".join(f"{x[k]:.3f}" for k in ("follows", "a_from_a", "a_from_b", "b_from_b",
                                                                          "b_from_a")) + " |")
    return [*lines, ""]


def _montage(rows: list[np.ndarray], scale: int = 3) -> np.ndarray:
    """rows of (n, S, S) images (n may differ; crops to 28 px) → one (R*28*scale, n*28*scale) uint8 image."""
    from raypdiff.vision.classify import crop28

    width = max(len(r) for r in rows)
    canvas = np.zeros((len(rows) * 28, width * 28), np.uint8)
    for i, r in enumerate(rows):
        for j, img in enumerate(crop28(np.asarray(r))):
            canvas[i * 28:(i + 1) * 28, j * 28:(j + 1) * 28] = img
    return canvas.repeat(scale, 0).repeat(scale, 1)


def write_pictures(samples: Samples, out: Path) -> list[Path]:
    """A grid per style (rows: real then each method; columns: the ten classes) and interpolation.png (rows:
    classes; columns: points on the path)."""
    from PIL import Image

    paths = []
    for key, grid in samples.grids.items():
        kind, style = key.split(":", 1)
        p = out / f"grid_{kind}_{style.replace(' ', '_')}.png"
        Image.fromarray(_montage(list(grid.values()))).save(p)
        paths.append(p)
    strip = samples.strip
    if not strip:  # --zoo-only, --heldout-only: no generator on the whole zoo, so no strip
        return paths
    p = out / "interpolation.png"
    Image.fromarray(_montage([np.stack([s[i] for s in strip]) for i in range(len(strip[0]))])).save(p)
    return [*paths, p]


def plot(report: dict, path: Path) -> None:
    """vision.png: per score, each method's mean over styles, seen styles then held-out ones."""
    means = flat_metrics(report)
    with plots.figure(path, (18, 4), dpi=100, ncols=len(SCORES)) as (fig, axes):
        for ax, k in zip(axes, SCORES):
            kinds = [(kind, methods, prefix) for kind, methods, prefix in (("styles", SEEN, ""),
                     ("heldout_styles", HELDOUT, "held-out ")) if report[kind]]  # the kinds scored, side by side
            labels = []
            for kind, methods, prefix in kinds:
                ax.bar(np.arange(len(methods)) + len(labels), [means[f"{kind}.{m}.{k}"] for m in methods],
                       color="C0" if kind == "styles" else "C1")
                labels += [*(prefix + m for m in methods), ""]
            labels = labels[:-1]
            ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{k} (mean over styles)")
