"""Generator training: the autoencoder, then the conditional latent denoiser, as one plain PyTorch loop
(`fit`) that Ray Train runs on 1..N DDP workers (`train_generator`), checkpointing and resuming.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from raypdiff import checkpoint, raytrain
from raypdiff.autoencoder import ae_loss
from raypdiff.checkpoint import GeneratorCheckpoint, build_networks
from raypdiff.conditions import quality_ranks, with_quality
from raypdiff.config import Config, ConfigError, derive
from raypdiff.diffusion import EMA, make_scheduler, training_loss
from raypdiff.episodes import Episodes
from raypdiff.generate import Generator
from raypdiff.normalize import Normalizer
from raypdiff.storage import Location, local_copy
from raypdiff.tasks import TaskSpec
from raypdiff.zoo.derive import select_tasks

@dataclass
class TrainData:
    x: torch.Tensor  # (N, P) normalized vectors, zero-padded to the largest layout
    mask: torch.Tensor  # (N, P) 1 on real coordinates
    task_idx: torch.Tensor  # (N,) index into task_names
    task_names: list[str]
    bank: torch.Tensor  # (T, S, C) condition embeddings: S example draws per task
    quality: Optional[torch.Tensor] = None  # (N,) metric rank within the task, when conditioning on quality

    def to(self, device: torch.device) -> "TrainData":
        q = None if self.quality is None else self.quality.to(device)
        return TrainData(self.x.to(device), self.mask.to(device), self.task_idx.to(device), self.task_names,
                         self.bank.to(device), q)


def rows_to_data(tasks: list[str], vectors: list[np.ndarray], normalizer: Normalizer, task_names: list[str],
                 num_params: int, bank: dict[str, np.ndarray], quality: Optional[np.ndarray] = None) -> TrainData:
    n = len(vectors)
    x, mask = np.zeros((n, num_params), np.float32), np.zeros((n, num_params), np.float32)
    for i, (t, v) in enumerate(zip(tasks, vectors)):
        x[i, :len(v)] = normalizer.apply(t, np.asarray(v, np.float32)[None])[0]
        mask[i, :len(v)] = 1
    idx = torch.as_tensor([task_names.index(t) for t in tasks])
    return TrainData(torch.from_numpy(x), torch.from_numpy(mask), idx, task_names,
                     torch.from_numpy(np.stack([bank[t] for t in task_names])),
                     None if quality is None else torch.as_tensor(quality, dtype=torch.float32))


def _unwrap(m: torch.nn.Module) -> torch.nn.Module:
    return m.module if hasattr(m, "module") else m


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over DDP workers (identity without torch.distributed). NCCL (Ray Train's backend on GPUs) reduces CUDA
    tensors only."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        nccl = torch.distributed.get_backend() == "nccl"
        t = t.to(torch.device("cuda", torch.cuda.current_device())) if nccl else t.clone()
        torch.distributed.all_reduce(t)
    return t


class Shards:
    """This worker's place among the DDP workers: its share of each global batch, and the weight that makes DDP's
    gradient average (equal per worker) the average over the zoo's rows when shards differ in size."""

    def __init__(self, n_local: int):
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = torch.distributed.get_rank() if dist else 0
        self.world = torch.distributed.get_world_size() if dist else 1
        self.total = int(_all_sum(torch.tensor(float(n_local), dtype=torch.float64)).item())
        self.weight = self.world * n_local / self.total  # Σ_workers weight·grad / world = Σ (n_i / N)·grad_i

    def batch(self, size: int) -> int:
        """Rows this worker draws of a global batch of `size` (the shares add up to `size`)."""
        return size // self.world + int(self.rank < size % self.world)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """(n_local, D) → (D,): the mean over every worker's rows."""
        return _all_sum(x.sum(0, dtype=torch.float64)).float() / self.total


def _average_grads(module: torch.nn.Module) -> None:
    """DDP's gradient average, for a step whose forward passes ran outside DDP (a sampling loop calls the
    denoiser several times before one backward)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        for p in module.parameters():
            if p.grad is not None:
                p.grad.copy_(_all_sum(p.grad).to(p.grad.device) / world)


def _optimize(opt, loss: torch.Tensor, weight: float, phase: str, step: int, total: int, history: list,
              after, sync: Optional[torch.nn.Module] = None, parts: Optional[dict] = None) -> None:
    """One optimizer step on weight·loss (sync: a module whose gradients are averaged over the workers first); every
    50th step (and the last) goes into the loss history (unweighted, with the loss's named `parts`)."""
    opt.zero_grad(set_to_none=True)
    (loss * weight).backward()
    if sync is not None:
        _average_grads(sync)
    opt.step()
    m = {"phase": phase, "step": step, f"{phase}_loss": loss.item(), **(parts or {})}
    if step % 50 == 0 or step == total:
        history.append(m)
    after(m)


PHASES = ("ae", "diffusion", "task", "done")


def last_step(cfg: Config) -> tuple[str, int]:
    """The phase and step at which `fit` ends."""
    return ("task", cfg.taskloss.steps) if cfg.taskloss.steps else ("diffusion", cfg.diffusion.steps)


def checkpoints_at(cfg: Config, phase: str, step: int) -> bool:
    """Whether the Ray Train loop reports and checkpoints after this step: every trainer.checkpoint_every steps of
    the autoencoder and denoising phases, every taskloss.checkpoint_every episodes, and the last step."""
    every = cfg.taskloss.checkpoint_every if phase == "task" else cfg.trainer.checkpoint_every
    return step % every == 0 or (phase, step) == last_step(cfg)


def fit(cfg: Config, data: TrainData, ae: torch.nn.Module, den: torch.nn.Module, state: Optional[dict] = None,
        on_step: Optional[Callable[[dict, Callable[[], dict]], None]] = None, seed: int = 0,
        episodes: Optional[Episodes] = None) -> dict:
    """Train the AE, then the denoiser on standardized latents, then (taskloss.steps > 0) the denoiser through the
    task loss of `episodes` (a raypdiff.episodes.Episodes) beside its denoising loss, keeping the sampling weights
    that score best on its validation episodes. `state` resumes a checkpoint; on_step gets (metrics, snapshot_fn)
    after every step and decides whether to checkpoint. Returns the final state."""
    if cfg.taskloss.steps and episodes is None:
        raise ConfigError("taskloss.steps: the task-loss stage needs episodes")
    gen = torch.Generator().manual_seed(seed)
    ae_opt = torch.optim.AdamW(ae.parameters(), lr=cfg.autoencoder.lr, weight_decay=0.0)
    den_opt = torch.optim.AdamW(den.parameters(), lr=cfg.diffusion.lr, weight_decay=0.0)
    task_opt = torch.optim.AdamW(_unwrap(den).parameters(), lr=cfg.taskloss.lr, weight_decay=0.0)
    scheduler = make_scheduler(cfg.diffusion, "ddpm")
    history: list = []
    phase, step, latent_stats, best = "ae", 0, None, None  # best: the task stage's pick so far (validate)
    checks: list = []  # the task stage's validation episodes
    if state:
        _unwrap(ae).load_state_dict(state["ae"])
        _unwrap(den).load_state_dict(state["denoiser"])
        phase, step, history, latent_stats = state["phase"], state["step"], state["history"], state["latent_stats"]
        best = state.get("best")
        gen.manual_seed(seed + 7919 * step + PHASES.index(phase))
    ema = EMA(_unwrap(den), cfg.diffusion.ema_decay)
    for part, key in ((ae_opt, "ae_opt"), (den_opt, "den_opt"), (task_opt, "task_opt"), (ema, "ema")):
        if state and key in state:  # a start from a finished generator (start_state) holds its weights alone
            part.load_state_dict(state[key])

    def snapshot() -> dict:
        return {"phase": phase, "step": step, "history": history, "latent_stats": latent_stats,
                "ae": _unwrap(ae).state_dict(), "denoiser": _unwrap(den).state_dict(),
                "ae_opt": ae_opt.state_dict(), "den_opt": den_opt.state_dict(), "task_opt": task_opt.state_dict(),
                "ema": ema.state_dict(), "best": best}

    def validate(at: int) -> None:
        """The stage's length is picked on the training tasks' val rows: score the sampling (EMA) weights on the
        validation episodes; keep them when they are the best so far."""
        nonlocal best
        probe = copy.deepcopy(_unwrap(den))
        probe.load_state_dict(ema.state_dict())
        loss = episodes.val_loss(probe.eval(), _unwrap(ae), latent_stats, checks)
        history.append({"phase": "task", "step": at, "val_episode_loss": loss})
        if best is None or loss < best["loss"]:
            best = {"step": at, "loss": loss, "ema": copy.deepcopy(ema.state_dict())}

    def after(m: dict) -> None:
        if m["phase"] in ("diffusion", "task"):  # EMA updates count on over both phases
            ema.update(_unwrap(den), m["step"] + (cfg.diffusion.steps if m["phase"] == "task" else 0))
        if m["phase"] == "task" and checks and checkpoints_at(cfg, "task", m["step"]):
            validate(m["step"])
            if m["step"] == cfg.taskloss.steps:  # the last check, before the last checkpoint: keep the best weights
                ema.load_state_dict(best["ema"])
                history.append({"phase": "task", "step": m["step"], "picked_step": best["step"]})
        if on_step:
            on_step(m, snapshot)

    n, shards = data.x.shape[0], Shards(data.x.shape[0])
    if phase == "ae":
        ae.train()
        while step < cfg.autoencoder.steps:
            idx = torch.randint(0, n, (shards.batch(cfg.autoencoder.batch_size),), generator=gen)
            step += 1
            _optimize(ae_opt, ae_loss(ae, data.x[idx], data.mask[idx]), shards.weight, "ae", step,
                      cfg.autoencoder.steps, history, after)
        phase, step = "diffusion", 0
    ae.eval()
    with torch.no_grad():
        z = _unwrap(ae).encode(data.x)  # (N, Z)
    if latent_stats is None:
        mean = shards.mean(z)
        std = shards.mean((z - mean) ** 2).sqrt() + 1e-6
        latent_stats = {"mean": mean, "std": std}
    latent_stats = {k: v.to(z.device) for k, v in latent_stats.items()}  # a start's are on the CPU
    z = (z - latent_stats["mean"]) / latent_stats["std"]

    def denoising(net: torch.nn.Module) -> torch.Tensor:
        idx = torch.randint(0, n, (shards.batch(cfg.diffusion.batch_size),), generator=gen)
        draw = torch.randint(0, data.bank.shape[1], (len(idx),), generator=gen)
        cond = data.bank[data.task_idx[idx], draw]  # (B, C): a different example set per sample
        if data.quality is not None:
            cond = with_quality(cond, data.quality[idx])  # (B, C + 1)
        return training_loss(net, z[idx], cond, scheduler, cfg.diffusion.cond_drop, gen)

    den.train()
    if phase == "diffusion":
        while step < cfg.diffusion.steps:
            step += 1
            _optimize(den_opt, denoising(den), shards.weight, "diffusion", step, cfg.diffusion.steps, history, after)
        phase, step = ("task", 0) if cfg.taskloss.steps else ("done", step)
    if phase == "task":
        # Episodes sample through the denoiser several times before one backward, which DDP's hooks do not allow:
        # the plain module runs them, and its gradients are averaged over the workers by hand.
        net, dec = _unwrap(den), _unwrap(ae)
        dec.requires_grad_(False)
        checks = episodes.validation(cfg.trainer.seed) if cfg.taskloss.val_episodes else []  # alike on every worker
        if checks and best is None:
            validate(0)  # the start's weights are a candidate too: the stage may add nothing
        recent: list[float] = []  # one episode's loss is noisy: the history also keeps the mean of the last 50
        while step < cfg.taskloss.steps:
            step += 1
            episode = episodes.loss(net, dec, latent_stats, np.random.default_rng([seed, step]), gen)
            denoise = denoising(net)
            loss = episode + cfg.taskloss.denoise_weight * denoise
            recent = recent[-49:] + [episode.item()]
            _optimize(task_opt, loss, 1.0, "task", step, cfg.taskloss.steps, history, after, sync=net,
                      parts={"episode_loss": recent[-1], "episode_loss_mean50": float(np.mean(recent)),
                             "denoise_loss": denoise.item()})
        phase = "done"
    return snapshot()


def start_state(cfg: Config, start: GeneratorCheckpoint) -> dict:
    """A finished denoise-only generator as the state `fit` resumes at its task-loss stage: the denoiser trains on
    from its sampling (EMA) weights instead of training the autoencoder and the denoiser again."""
    if not cfg.taskloss.steps:
        raise ConfigError("a start generator is trained on by the task-loss stage alone: set taskloss.steps > 0")
    theirs, ours = start.config, cfg.to_dict()
    for section in ("normalize", "condition", "autoencoder", "diffusion"):
        for key, value in ours[section].items():
            if theirs[section].get(key) != value:
                raise ConfigError(f"{section}.{key}: the start generator was trained with "
                                  f"{theirs[section].get(key)!r}, this config says {value!r}")
    if theirs.get("taskloss", {}).get("steps"):
        raise ConfigError("the start generator has a task-loss stage already: start from a denoise-only one")
    return {"phase": "diffusion", "step": cfg.diffusion.steps, "history": list(start.history),
            "latent_stats": start.latent_stats, "ae": start.ae, "denoiser": start.denoiser}


# ---- the driver's preparation ----

def prepare(cfg: Config, zoo_dir: str) -> dict:
    """Driver-side: read the zoo, fit the normalizer, embed conditions. Small enough to ship to workers."""
    from raypdiff.domains import domain_for
    from raypdiff.zoo.store import check, task_arrays

    meta = check(zoo_dir)
    names = list(meta.tasks)
    if cfg.taskloss.steps and all(TaskSpec(**meta.tasks[t].spec).is_regression for t in names):
        raise ConfigError("taskloss.steps: the zoo has no classification task to draw episodes from")
    arrays = task_arrays(zoo_dir)
    vectors = {t: a["vector"] for t, a in arrays.items()}
    normalizer = Normalizer.fit(vectors, cfg.normalize.mode)
    cond = domain_for(meta.domain).conditions(cfg, meta)
    return {"domain": meta.domain, "normalizer": normalizer.state_dict(), "bank": cond["bank"],
            "task_names": names,
            "num_params": max(v.shape[1] for v in vectors.values()), "tasks": meta.to_dict()["tasks"],
            "zoo": str(Location.of(zoo_dir)), "base_model": meta.base_model, "lora": meta.lora,
            "examples": cond["examples"], "num_rows": sum(len(v) for v in vectors.values()),
            "base_fingerprint": cond["base_fingerprint"], "task_values": {t: a["value"] for t, a in arrays.items()}}


# ---- Ray Train ----

def run_name(cfg: Config, zoo_dir: str, started: bool = False) -> str:
    """Ray Train resumes any run it finds under its storage path and name. Naming the run after the training
    settings, the zoo's contents and whether it starts from a finished generator makes a re-run of the same command
    resume (or, when finished, reuse) it, and anything else start fresh."""
    from raypdiff.zoo.store import fingerprint

    c = cfg.to_dict()
    settings = {k: c[k] for k in ("normalize", "condition", "autoencoder", "diffusion", "taskloss")}
    if not cfg.taskloss.steps:  # only the task-loss stage samples while training
        settings["diffusion"] = {k: v for k, v in settings["diffusion"].items() if k != "temperature"}
    settings["trainer"] = {k: v for k, v in c["trainer"].items()
                           if k not in ("output_dir", "register_model", "model_name")}
    key = json.dumps(settings, sort_keys=True) + fingerprint(zoo_dir) + ("started" if started else "")
    return "generator-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def train_loop_per_worker(loop_cfg: dict) -> None:
    """Runs on each Ray Train worker: DDP over the zoo's Ray Dataset shard, checkpoints, resume."""
    import ray.train
    import ray.train.torch

    cfg = Config.from_dict(loop_cfg["cfg"])
    prep = loop_cfg["prep"]
    torch.set_num_threads(max(1, int(cfg.trainer.cpus_per_worker)))
    ctx = ray.train.get_context()
    # Ray Data may stream blocks in any order; a fixed row order makes a run depend on the zoo's contents alone.
    rows = sorted(ray.train.get_dataset_shard("zoo").iter_rows(), key=lambda r: (r["task"], r["seed"], r["step"]))
    tasks = [r["task"] for r in rows]
    quality = (quality_ranks(tasks, np.array([r["value"] for r in rows]), prep["task_values"])
               if cfg.condition.quality else None)
    data = rows_to_data(tasks, [r["vector"] for r in rows], Normalizer.from_state(prep["normalizer"]),
                        prep["task_names"], prep["num_params"], prep["bank"], quality)
    device = ray.train.torch.get_device()  # a GPU with trainer.use_gpu: the rows go where prepare_model puts the nets
    data = data.to(device)
    ae, den = build_networks(cfg, prep["num_params"], data.bank.shape[-1])
    ae = ray.train.torch.prepare_model(ae, parallel_strategy_kwargs={"find_unused_parameters": True})
    den = ray.train.torch.prepare_model(den, parallel_strategy_kwargs={"find_unused_parameters": True})
    resumed = raytrain.resumed_state(device)
    state = resumed or loop_cfg.get("start")
    episodes = Episodes(cfg, prep) if cfg.taskloss.steps else None

    def on_step(m: dict, snapshot) -> None:
        if not checkpoints_at(cfg, m["phase"], m["step"]):
            return
        snap = snapshot()
        raytrain.report({**m, "loss": m[f"{m['phase']}_loss"], "resumed": resumed is not None},
                        snap if ctx.get_world_rank() == 0 else None)

    fit(cfg, data, ae, den, state, on_step, seed=cfg.trainer.seed + ctx.get_world_rank(), episodes=episodes)


def train_generator(cfg: Config, zoo_dir: str, progress: bool = True, callbacks: Optional[list] = None,
                    start: Optional[GeneratorCheckpoint] = None) -> dict:
    """Train on Ray Train; writes <trainer.output_dir>/generator.safetensors; logs to MLflow. Returns a summary.
    callbacks: Ray Train callbacks (a sweep trial passes Tune's TuneReportCallback); start: a denoise-only generator
    of the same settings and zoo that the task-loss stage trains on (start_state)."""
    from raypdiff import tracking
    from raypdiff.cluster import connect
    from raypdiff.zoo.store import dataset

    out = Location.of(cfg.trainer.output_dir, "trainer.output_dir")
    why = out.unwritable()
    if why:
        raise ConfigError(f"trainer.output_dir: {out} is not writable ({why})")
    if cfg.tracking.enabled:
        tracking.tracking_uri(cfg)  # a missing store fails now, not after the training
    t0 = time.time()
    prep = prepare(cfg, zoo_dir)
    if start is not None and start.task_names != prep["task_names"]:
        raise ConfigError(f"the start generator was trained on other tasks than {zoo_dir} holds")
    first = start_state(cfg, start) if start is not None else None
    connect(cfg.collect.ray_address, progress)
    if not progress:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
    # the zoo is read before the workers start: with every CPU held by a Train worker no read task could run (2
    # workers on 2 CPUs never got their shards)
    zoo = dataset(zoo_dir).select_columns(["task", "seed", "step", "value", "vector"]).materialize()
    state, final = raytrain.run(train_loop_per_worker, {"cfg": cfg.to_dict(), "prep": prep, "start": first}, cfg,
                                out, run_name(cfg, zoo_dir, first is not None), "generator training",
                                cfg.trainer.num_workers, callbacks, {"zoo": zoo})
    path = checkpoint.save(out / checkpoint.GENERATOR_FILE, checkpoint.from_training(cfg, state, prep))
    summary = {"generator": str(path), "train_seconds": time.time() - t0, "final": final,
               "num_rows": prep["num_rows"], "num_params": prep["num_params"]}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    if cfg.tracking.enabled:
        with local_copy(path) as local:
            summary["mlflow_run_id"] = tracking.log_training(cfg, local, state["history"], summary)
    return summary


def fold_generator(cfg: Config, zoo_dir: str, tasks: list[str], out: Location, setting: str,
                   progress: bool = True, prefix: str = "", start: Optional[Generator] = None) -> Generator:
    """The generator of a fold: trained on the zoo's `tasks` alone (a zoo derived into out/<prefix>zoo), so that the
    others can be scored as tasks it never saw. Trained once into out/<prefix>generator (tracked, never registered
    as the model that `serve` and `models:/` users load); a re-run reuses it, and one trained on other tasks is
    refused (setting: the output setting to change then). start: the fold's denoise-only generator, trained on by
    the task-loss stage."""
    gen_dir = out / f"{prefix}generator"
    if not (gen_dir / checkpoint.GENERATOR_FILE).is_file():
        fold_cfg = derive(cfg, {"trainer.output_dir": str(gen_dir), "trainer.register_model": False})
        train_generator(fold_cfg, str(select_tasks(zoo_dir, tasks, out / f"{prefix}zoo")), progress,
                        start=start.ckpt if start is not None else None)
    gen = Generator(gen_dir)
    if gen.task_names != list(tasks):
        more = ", ..." if len(gen.task_names) > 4 else ""
        raise ConfigError(f"{gen_dir} holds a generator trained on other tasks ({len(gen.task_names)}: "
                          f"{', '.join(gen.task_names[:4])}{more}); use a new {setting}")
    return gen
