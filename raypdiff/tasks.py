"""Tasks: definitions (built-in GLUE + extra, or user YAML), loaders for local files and the HF hub, metrics.

A task resolves to `TaskData`: three disjoint splits of text tuples and labels (class indices, or floats for
regression): train (fine-tuning), val (every selection) and test (reports only), with the rows each came from.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from raypdiff.errors import ConfigError, require
from raypdiff.stats import metric_rows

Metric = Literal["accuracy", "f1", "mcc", "pearson"]
METRICS = ("accuracy", "f1", "mcc", "pearson")


@dataclass
class TaskSpec:
    name: str
    description: str
    text_fields: list[str]
    label_field: str
    metric: Metric
    label_names: Optional[list[str]] = None  # None → regression (one float output)
    # Where the rows come from: local files, or the HF hub (hub = "dataset[:config]"). test rows come from
    # `test`, else `dev` (GLUE's dev file); val rows from `val`, else carved out of `train`.
    train: Optional[str] = None
    dev: Optional[str] = None
    val: Optional[str] = None
    test: Optional[str] = None
    columns: Optional[list[str]] = None  # names for header-less TSV files (GLUE CoLA)
    hub: Optional[str] = None
    hub_splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "dev": "validation"})
    hub_text_fields: Optional[list[str]] = None
    packaged: Optional[str] = None  # rows shipped inside an installed package (raypdiff.packaged), split by group
    family: Optional[str] = None  # sentiment, topic, nli, ...: leave-one-family-out holds a whole family out
    # A derived task relabels the rows of `source` (a built-in task, or one defined earlier in the list): `relabel`
    # maps each of its label names to source labels (default: the source label of the same name), and rows whose
    # label maps nowhere are dropped. Resolved specs carry `source_label_names` to read the source's files.
    source: Optional[str] = None
    relabel: Optional[dict[str, list[str]]] = None
    source_label_names: Optional[list[str]] = None
    twin_of: Optional[str] = None  # the task this one is a label-swapped copy of: never in different hold-out folds

    def __post_init__(self):
        require(bool(self.name), "task: every task needs a name")
        where = f"task {self.name}"
        require(bool(self.description and self.description.strip()), f"{where}: description is empty")
        require(len(self.text_fields) in (1, 2), f"{where}: text_fields must list 1 or 2 columns")
        require(self.metric in METRICS, f"{where}: metric {self.metric!r} is not one of {list(METRICS)}")
        if self.label_names is None:
            require(self.metric == "pearson", f"{where}: a regression task (no label_names) needs metric pearson")
        else:
            require(len(self.label_names) >= 2, f"{where}: label_names must list at least 2 labels")
            require(self.metric != "pearson", f"{where}: metric pearson needs a regression task (no label_names)")
            if self.metric == "f1":
                require(len(self.label_names) == 2, f"{where}: metric f1 is for 2-label tasks")
        require(bool(self.train and (self.dev or self.test)) or bool(self.hub) or bool(self.packaged),
                f"{where}: give train and dev (or test) files, or hub")
        if self.relabel is not None:
            require(self.label_names is not None and bool(self.source_label_names),
                    f"{where}: relabel needs label_names and the source's label names")
            require(sorted(self.relabel) == sorted(self.label_names),
                    f"{where}: relabel must map exactly the labels {self.label_names}, got {list(self.relabel)}")
            mapped = [s for n in self.label_names for s in self.relabel[n]]
            require(all(s in self.source_label_names for s in mapped),
                    f"{where}: relabel names a label outside the source's {self.source_label_names}")
            require(len(set(mapped)) == len(mapped) and all(self.relabel[n] for n in self.label_names),
                    f"{where}: relabel must map every label to one or more source labels, each used once")

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None


@dataclass
class Split:
    texts: list[tuple[str, ...]]  # one tuple of 1 or 2 strings per row
    labels: np.ndarray  # (N,) int64 class ids, or float32 scores for regression

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx) -> "Split":
        return Split([self.texts[i] for i in idx], self.labels[np.asarray(idx, dtype=np.int64)])


@dataclass
class TaskData:
    spec: TaskSpec
    train: Split  # fine-tuning rows only: the train file minus the val rows carved from it
    val: Split  # every selection reads these
    test: Split  # reports only
    splits: dict  # where each split's rows come from: {"train"|"val"|"test": {"file", "rows"}} (rows: indices)

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


_PAIR = ["sentence1", "sentence2"]
_ENT = ["entailment", "not_entailment"]
_GLUE: dict[str, dict] = {
    "SST-2": dict(description="Classify the sentiment of a movie review sentence as negative or positive.",
                  text_fields=["sentence"], label_field="label", metric="accuracy",
                  label_names=["negative", "positive"], hub="nyu-mll/glue:sst2", family="sentiment"),
    "CoLA": dict(description="Decide whether an English sentence is grammatically acceptable.",
                 text_fields=["sentence"], label_field="label", metric="mcc",
                 label_names=["unacceptable", "acceptable"], columns=["source", "label", "mark", "sentence"],
                 hub="nyu-mll/glue:cola", family="grammar"),
    "MRPC": dict(description="Decide whether two news sentences are paraphrases of each other.",
                 text_fields=["#1 String", "#2 String"], label_field="Quality", metric="f1", family="paraphrase",
                 label_names=["not_equivalent", "equivalent"], hub="nyu-mll/glue:mrpc", hub_text_fields=_PAIR),
    "STS-B": dict(description="Rate how similar in meaning two sentences are, from 0 (unrelated) to 5 (equivalent).",
                  text_fields=_PAIR, label_field="score", metric="pearson", label_names=None,
                  hub="nyu-mll/glue:stsb", hub_text_fields=_PAIR, family="similarity"),
    "RTE": dict(description="Decide whether the first passage entails the second sentence.",
                text_fields=_PAIR, label_field="label", metric="accuracy", label_names=_ENT,
                hub="nyu-mll/glue:rte", family="nli"),
    "QNLI": dict(description="Decide whether a sentence contains the answer to a question.",
                 text_fields=["question", "sentence"], label_field="label", metric="accuracy",
                 label_names=_ENT, hub="nyu-mll/glue:qnli", family="nli"),
    "WNLI": dict(description="Decide whether a sentence with a pronoun replaced is entailed by the original.",
                 text_fields=_PAIR, label_field="label", metric="accuracy",
                 label_names=["not_entailment", "entailment"], hub="nyu-mll/glue:wnli", family="nli"),
}
_EXTRA: dict[str, dict] = {
    "SUBJ": dict(description="Classify a movie review sentence as objective or subjective.",
                 text_fields=["sentence"], label_field="label", metric="accuracy",
                 label_names=["objective", "subjective"], family="subjectivity"),
    "CR": dict(description="Classify the sentiment of a customer product review as negative or positive.",
               text_fields=["sentence"], label_field="label", metric="accuracy",
               label_names=["negative", "positive"], family="sentiment"),
    "MPQA": dict(description="Classify the polarity of a short opinion phrase as negative or positive.",
                 text_fields=["sentence"], label_field="label", metric="accuracy",
                 label_names=["negative", "positive"], family="sentiment"),
    "TREC": dict(description="Classify the type of answer a question asks for.",
                 text_fields=["sentence"], label_field="label", metric="accuracy", family="question type",
                 label_names=["abbreviation", "description", "entity", "human", "location", "numeric"]),
    "SICK-E": dict(description="Decide whether the first sentence contradicts, is neutral to, or entails the second.",
                   text_fields=_PAIR, label_field="label", metric="accuracy",
                   label_names=["contradiction", "neutral", "entailment"], family="nli"),
    "AGNews": dict(description="Classify the topic of a news article.",
                   text_fields=["sentence"], label_field="label", metric="accuracy",
                   label_names=["world", "sports", "business", "science/technology"], family="topic"),
}
# Real labelled text shipped inside packages (raypdiff.packaged: where each lies, how it is read and split).
_TEXT = dict(text_fields=["text"], label_field="label")
_PACKAGED: dict[str, dict] = {
    "SMS-spam": dict(description="Decide whether an SMS text message is spam.", metric="f1",
                     label_names=["ham", "spam"], packaged="sms_spam", family="spam", **_TEXT),
    "Health-tweets": dict(description="Tell which news outlet posted a health news tweet.", metric="accuracy",
                          label_names=["bbchealth", "cnnhealth", "foxnewshealth", "nytimeshealth"],
                          packaged="health_tweets", family="authorship", **_TEXT),
    "Convention-party": dict(description="Tell which party's national convention a speech paragraph is from.",
                             metric="accuracy", label_names=["democrat", "republican"], packaged="convention_party",
                             family="politics", **_TEXT),
    "Seinfeld-humor": dict(description="Decide whether a line of a sitcom's dialogue got a laugh.", metric="f1",
                           label_names=["not_funny", "funny"], packaged="seinfeld_humor", family="humor", **_TEXT),
    "Seinfeld-speaker": dict(description="Tell which of four sitcom characters says a line of dialogue.",
                             metric="accuracy", label_names=["jerry", "george", "elaine", "kramer"],
                             packaged="seinfeld_speaker", family="authorship", **_TEXT),
    "Fortune-language": dict(description="Identify the language of a short saying or joke.", metric="accuracy",
                             label_names=["en", "de", "es", "it", "ru", "pl"], packaged="fortune_language",
                             family="language id", **_TEXT),
}
BUILTIN = sorted(_GLUE) + sorted(_EXTRA) + sorted(_PACKAGED)


def builtin_spec(name: str, data_root: Optional[str]) -> TaskSpec:
    """The built-in task `name`, read from `<data_root>/{glue,extra}/<name>/` or, for GLUE, the hub."""
    if name in _PACKAGED:
        return TaskSpec(name=name, **_PACKAGED[name])
    if name in _GLUE:
        group, d = "glue", dict(_GLUE[name])
    elif name in _EXTRA:
        group, d = "extra", dict(_EXTRA[name])
    else:
        raise ConfigError(f"unknown task {name!r}; built-in tasks: {', '.join(BUILTIN)} (or define one in YAML)")
    if data_root is not None:
        folder = Path(data_root).expanduser().resolve() / group / name
        d.update(train=str(folder / "train.tsv"), dev=str(folder / "dev.tsv"))
        d.pop("hub", None)
    elif group == "extra":
        raise ConfigError(f"task {name}: set data.root (or RAYPDIFF_DATA_DIR) to a folder holding extra/{name}/")
    return TaskSpec(name=name, **d)


def resolve_specs(entries: list, data_root: Optional[str]) -> list[TaskSpec]:
    specs: dict[str, TaskSpec] = {}
    for entry in entries:
        if isinstance(entry, str):
            spec = builtin_spec(entry, data_root)
        elif isinstance(entry, dict):
            try:
                spec = TaskSpec(**(_derive(entry, specs, data_root) if entry.get("source") else entry))
            except TypeError as e:
                raise ConfigError(f"task {entry.get('name', '?')}: {e}".replace("TaskSpec.__init__() ", "")) from None
        else:
            raise ConfigError(f"tasks: each entry is a task name or a mapping, got {entry!r}")
        specs[spec.name] = spec
    check_twins(list(specs.values()))
    return list(specs.values())


def _derive(entry: dict, earlier: dict[str, TaskSpec], data_root: Optional[str]) -> dict:
    """A derived task's full spec: its source's fields, overridden by the entry's, with `relabel` composed down
    to the root task's labels (a twin of a derived task reads the root's files)."""
    where = f"task {entry.get('name', '?')}"
    name = entry["source"]
    base = earlier[name] if name in earlier else builtin_spec(name, data_root)
    require(not base.is_regression, f"{where}: source {name} is a regression task; only class labels relabel")
    require(bool(entry.get("description")), f"{where}: a derived task needs its own description")
    names = entry.get("label_names")
    require(isinstance(names, list) and len(names) >= 2, f"{where}: a derived task needs label_names")
    relabel = entry.get("relabel") or {n: [n] for n in names}
    require(isinstance(relabel, dict), f"{where}: relabel must map label names to lists of {name}'s labels")
    composed = {}
    for new, olds in relabel.items():
        olds = [olds] if isinstance(olds, str) else list(olds)
        bad = [o for o in olds if o not in base.label_names]
        if bad:
            raise ConfigError(f"{where}: relabel {new}: {bad[0]!r} is not a label of {name} {base.label_names}")
        composed[new] = [s for o in olds for s in (base.relabel[o] if base.relabel else [o])]
    d = {**asdict(base), "twin_of": None, **entry}
    d.update(relabel=composed, source_label_names=base.source_label_names or base.label_names)
    return d


def _label_map(spec: TaskSpec) -> dict[str, list[str]]:
    return spec.relabel or {n: [n] for n in spec.label_names}


def check_twins(specs: list[TaskSpec]) -> None:
    """A label-swapped twin reads the same rows as its task, with the same label sets in reverse order."""
    by_name = {s.name: s for s in specs}
    for a in specs:
        if a.twin_of is None:
            continue
        where = f"task {a.name}: twin_of {a.twin_of}"
        require(a.twin_of in by_name and a.twin_of != a.name, f"{where}: no such other task in the list")
        b = by_name[a.twin_of]
        differ = [f for f in ("train", "dev", "val", "test", "hub", "text_fields", "label_field")
                  if getattr(a, f) != getattr(b, f)]
        if differ:
            raise ConfigError(f"{where}: the twins must read the same rows, but their {differ[0]} differs")
        require(not a.is_regression and a.label_names == list(reversed(b.label_names or [])),
                f"{where}: label_names must be {b.name}'s in reverse order")
        require(_label_map(a) == _label_map(b), f"{where}: each label must cover the same source labels in both")
        require(a.family == b.family, f"{where}: twins must share a family (hold-out folds keep them together)")


def spec_to_dict(spec: TaskSpec) -> dict:
    return asdict(spec)


def _read_table(path: str, columns: Optional[list[str]], task: str):
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        hint = " (is data.root / RAYPDIFF_DATA_DIR right?)" if not p.parent.exists() else ""
        raise ConfigError(f"task {task}: data file not found: {p}{hint}")
    suffix = p.suffix.lower()
    try:
        if suffix in (".tsv", ".csv"):
            sep = "\t" if suffix == ".tsv" else ","
            quoting = csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL
            header = None if columns else "infer"
            df = pd.read_csv(p, sep=sep, quoting=quoting, keep_default_na=False, dtype=str,
                             header=header, names=columns, encoding="utf-8-sig")
        elif suffix in (".jsonl", ".json"):
            df = pd.read_json(p, lines=suffix == ".jsonl")
        elif suffix == ".parquet":
            df = pd.read_parquet(p)
        else:
            raise ConfigError(f"task {task}: {p}: unsupported file type {suffix!r} (use .tsv, .csv, .jsonl, .parquet)")
    except (ValueError, OSError, UnicodeDecodeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"task {task}: cannot read {p}: {e}") from None
    return df


def _labels(raw, names: Optional[list[str]], where: str) -> np.ndarray:
    """Class ids of `names` (by name or index), or floats when names is None (regression)."""
    if names is None:
        try:
            return np.asarray([float(v) for v in raw], dtype=np.float32)
        except (TypeError, ValueError):
            bad = next(v for v in raw if not _is_float(v))
            raise ConfigError(f"{where}: label {bad!r} is not a number (regression task)") from None
    out = np.empty(len(raw), dtype=np.int64)
    for i, v in enumerate(raw):
        s = str(v).strip()
        if s in names:
            out[i] = names.index(s)
        elif s.lstrip("-").isdigit() and 0 <= int(s) < len(names):
            out[i] = int(s)
        else:
            raise ConfigError(f"{where}: row {i}: label {v!r} is outside the label set {names} "
                              f"(or indices 0..{len(names) - 1})")
    return out


def _is_float(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _split_from_frame(df, spec: TaskSpec, text_fields: list[str], where: str) -> Split:
    missing = [c for c in [*text_fields, spec.label_field] if c not in df.columns]
    if missing:
        raise ConfigError(f"{where}: missing column {missing[0]!r} (columns: {', '.join(map(str, df.columns))})")
    if len(df) == 0:
        raise ConfigError(f"{where}: the split is empty")
    texts = list(zip(*[df[c].astype(str).tolist() for c in text_fields]))
    labels = _labels(df[spec.label_field].tolist(), spec.source_label_names or spec.label_names, where)
    if spec.relabel is None:
        return Split(texts, labels)
    to_new = np.full(len(spec.source_label_names), -1, dtype=np.int64)  # source id → this task's id (-1: dropped)
    for i, n in enumerate(spec.label_names):
        to_new[[spec.source_label_names.index(s) for s in spec.relabel[n]]] = i
    keep = np.flatnonzero(to_new[labels] >= 0)
    require(len(keep) > 0, f"{where}: no row has a label that relabel maps to {spec.label_names}")
    return Split([texts[i] for i in keep], to_new[labels[keep]])


def _load_hub(spec: TaskSpec, split: str):
    try:
        import datasets  # optional: only for hub-hosted tasks
    except ImportError:
        raise ConfigError(f"task {spec.name}: reading from the hub needs `pip install datasets`, "
                          f"or set data.root to a local copy") from None
    name, _, config = spec.hub.partition(":")
    try:
        return datasets.load_dataset(name, config or None, split=spec.hub_splits[split]).to_pandas()
    except Exception as e:  # network/hub errors come in many types
        raise ConfigError(f"task {spec.name}: cannot load {spec.hub} from the hub: {e}") from None


SplitName = Literal["train", "dev", "val", "test"]


def _split_file(spec: TaskSpec, split: SplitName) -> Optional[str]:
    return {"train": spec.train, "dev": spec.dev, "val": spec.val, "test": spec.test or spec.dev}[split]


def load_split(spec: TaskSpec, split: SplitName) -> Split:
    """All rows of one of the task's files: train, dev, its own val file, or its test file (test, else dev)."""
    where = f"task {spec.name} ({split})"
    if spec.packaged:
        require(split != "val", f"{where}: packaged tasks have no val file (val rows are carved from train)")
        import pandas as pd

        from raypdiff import packaged

        part = packaged.rows(spec.packaged, tuple(spec.source_label_names or spec.label_names))[
            "train" if split == "train" else "dev"]
        df = pd.DataFrame(part, columns=[spec.text_fields[0], spec.label_field])
        return _split_from_frame(df, spec, spec.text_fields, f"{where} packaged {spec.packaged}")
    if spec.hub and not (spec.train and spec.dev):
        require(split != "val", f"{where}: hub tasks have no val file (val rows are carved from train)")
        df = _load_hub(spec, "train" if split == "train" else "dev")
        return _split_from_frame(df, spec, spec.hub_text_fields or spec.text_fields, where)
    path = _split_file(spec, split)
    require(path is not None, f"{where}: the task names no {split} file")
    df = _read_table(path, spec.columns, spec.name)
    return _split_from_frame(df, spec, spec.text_fields, f"{where} {path}")


def subset_indices(n: int, max_examples: int, seed: int) -> list[int]:
    """A fixed sample of rows: all of them, or a seeded sample of max_examples kept in file order."""
    if n <= max_examples:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n, size=max_examples, replace=False).tolist())


def load_task(spec: TaskSpec, val_examples: int, test_examples: int, seed: int) -> TaskData:
    """The three disjoint splits. val: a sample of the task's val file, else at most val_examples (and at most a
    fifth) of the train file's rows, which fine-tuning then never sees; test: a sample of the test file."""
    train_full = load_split(spec, "train")
    test_full = load_split(spec, "test")
    test_rows = subset_indices(len(test_full), test_examples, seed)
    if spec.val:
        val_full = load_split(spec, "val")
        val_rows = subset_indices(len(val_full), val_examples, seed)
        val, train_rows, val_file = val_full.take(val_rows), list(range(len(train_full))), "val"
    else:
        require(len(train_full) >= 2, f"task {spec.name}: the train file needs at least 2 rows to carve val from")
        val_rows = subset_indices(len(train_full), min(val_examples, max(1, len(train_full) // 5)), seed + 1)
        held = set(val_rows)
        train_rows = [i for i in range(len(train_full)) if i not in held]
        val, val_file = train_full.take(val_rows), "train"
    splits = {"train": {"file": "train", "rows": len(train_rows)},
              "val": {"file": val_file, "rows": val_rows},
              "test": {"file": "test" if spec.test else "dev", "rows": test_rows}}
    return TaskData(spec, train_full.take(train_rows), val, test_full.take(test_rows), splits)


# ---- metrics (values are fractions: accuracy 0.86, not 86) ----

def score(metric: Metric, preds: np.ndarray, labels: np.ndarray) -> float:
    """preds: (N,) class ids, or float scores for pearson."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    if metric == "accuracy":
        return float((preds == labels).mean())
    if metric == "f1":
        tp = float(((preds == 1) & (labels == 1)).sum())
        fp = float(((preds == 1) & (labels == 0)).sum())
        fn = float(((preds == 0) & (labels == 1)).sum())
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    if metric == "mcc":
        tp = float(((preds == 1) & (labels == 1)).sum())
        tn = float(((preds == 0) & (labels == 0)).sum())
        fp = float(((preds == 1) & (labels == 0)).sum())
        fn = float(((preds == 0) & (labels == 1)).sum())
        denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return 0.0 if denom == 0 else float((tp * tn - fp * fn) / denom)
    if metric == "pearson":
        p, y = preds.astype(np.float64), labels.astype(np.float64)
        if p.std() == 0 or y.std() == 0:
            return 0.0
        return float(np.corrcoef(p, y)[0, 1])
    if metric == "macro_f1":
        return float(metric_rows(metric, preds, labels))
    raise ConfigError(f"unknown metric {metric!r}")


def majority_class(train_labels: np.ndarray):
    """The most frequent train label (chosen on train, so a baseline scored on test picks nothing there)."""
    values, counts = np.unique(train_labels, return_counts=True)
    return values[counts.argmax()]


def majority_baseline(metric: Metric, labels: np.ndarray, train_labels: Optional[np.ndarray] = None) -> float:
    """The score on `labels` of always predicting the most frequent train label (of `labels` when no train
    labels are given); 0 for mcc and pearson by definition."""
    if metric in ("mcc", "pearson"):
        return 0.0
    return score(metric, np.full_like(labels, majority_class(labels if train_labels is None else train_labels)), labels)


def summarize(specs: list[TaskSpec], val_examples: int, test_examples: int, seed: int) -> list[dict]:
    """Load every task's three splits (a broken definition fails here, not in a Ray worker) and describe them."""
    rows = []
    for s in specs:
        d = load_task(s, val_examples, test_examples, seed)
        rows.append({"task": s.name, "family": s.family, "source": s.source, "twin_of": s.twin_of,
                     "metric": s.metric, "labels": s.label_names, "train": len(d.train), "val": len(d.val),
                     "test": len(d.test), "majority_test": majority_baseline(s.metric, d.test.labels, d.train.labels)})
    return rows
