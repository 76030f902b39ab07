"""The vision base model's training as a Ray Train job (checkpoints, resume, restarts), like the generator's; then
the pipeline folder, a class classifier trained on real images, and the share of samples it recognizes."""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import torch

from raypdiff import raytrain
from raypdiff.config import Config, ConfigError
from raypdiff.storage import Location, local_folder, writable

# vision settings that do not change the base's training (how it is sampled and judged, the style LoRAs' model and
# data), left out of its training run's name
NOT_TRAINING = ("guidance_scale", "guidance_choices", "sample_steps", "judge_steps", "style_images", "pipeline")


def base_loop(loop_cfg: dict) -> None:
    """Runs on the Ray Train worker: the plain `fit` loop, reporting a checkpoint every trainer.checkpoint_every."""
    from raypdiff.vision import fashion
    from raypdiff.vision.base import new_pipeline
    from raypdiff.vision.t2i import fit

    cfg = Config.from_dict(loop_cfg["cfg"])
    v = cfg.vision
    torch.set_num_threads(max(1, int(cfg.trainer.cpus_per_worker)))
    x, y = fashion.load("train", v.data_dir)
    pipe, state = new_pipeline(v), raytrain.resumed_state()

    def on_step(step: int, loss: float, snapshot) -> None:
        if step % cfg.trainer.checkpoint_every and step != v.base_steps:
            return
        raytrain.report({"step": step, "loss": loss, "resumed": state is not None}, snapshot())

    fit(pipe, v, x, y, v.base_steps, state, on_step)


def train_base(cfg: Config, progress: bool = True) -> dict:
    """`raypdiff vision-base`: train on Ray Train (the run is named after the vision settings, so Ray Train resumes
    an interrupted one), write
    <vision.base_dir>/pipeline (a diffusers folder) and base.json: class accuracy of 10 samples per class, judged by
    a CNN trained on real Fashion-MNIST, and the training time."""
    from raypdiff.cluster import connect
    from raypdiff.vision import classify, fashion
    from raypdiff.vision.base import new_pipeline, prompts_for

    v = cfg.vision
    fashion.load("test", v.data_dir)  # a missing dataset is one line here, not a worker's traceback
    out = writable(v.base_dir, "vision.base_dir")
    t0 = time.time()
    connect(cfg.collect.ray_address, progress)
    trained = {k: x for k, x in cfg.to_dict()["vision"].items() if k not in NOT_TRAINING}
    name = "vision-base-" + hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:12]
    # checkpoints go to base_dir's own storage (a bucket or a disk), where a re-run finds them
    state, _ = raytrain.run(base_loop, {"cfg": cfg.to_dict()}, cfg, out, name, "vision base training")
    pipe = new_pipeline(v)
    pipe.unet.load_state_dict(state["unet"])
    pipe.unet.eval()
    train_s = time.time() - t0
    (xtr, ytr), (xte, yte) = fashion.load("train", v.data_dir), fashion.load("test", v.data_dir)
    judge = classify.train(xtr, ytr, len(fashion.CLASSES), steps=v.judge_steps, seed=v.seed)
    labels = np.repeat(np.arange(len(fashion.CLASSES)), 10)

    def class_acc(scale: float, noise_seed: int) -> tuple[float, np.ndarray]:
        samples = pipe(prompts_for(v, labels), v.sample_steps, torch.Generator().manual_seed(noise_seed), scale)
        return float((classify.predict(judge, samples) == labels).mean()), samples

    # the scale is picked on one noise draw and reported on another (select on one set of rows, report on another)
    by_scale = {str(float(g)): class_acc(float(g), v.seed + 1)[0] for g in v.guidance_choices}
    chosen = v.guidance_scale or float(max(by_scale, key=lambda g: (by_scale[g], -float(g))))
    acc, samples = class_acc(chosen, v.seed)
    summary = {"class_acc": acc, "guidance_scale": chosen, "class_acc_by_guidance": by_scale,
               "judge_test_acc": float((classify.predict(judge, xte) == yte).mean()),
               "train_seconds": train_s, "steps": v.base_steps, "final_loss": float(np.mean(state["losses"][-50:])),
               "pipeline": str(out / "pipeline")}
    with local_folder(out, last=("base.json",)) as local:  # base.json: a whole pipeline is there
        pipe.save_pretrained(local / "pipeline")
        torch.save(judge.state_dict(), local / "class_cnn.pt")
        np.save(local / "samples.npy", samples)
        (local / "base.json").write_text(json.dumps(summary, indent=1))
    return summary


def guidance(cfg: Config) -> float:
    """The guidance scale samples use: vision.guidance_scale, else the one vision-base chose, else none (1); a named
    pipeline has no base.json: its scale must be given."""
    if cfg.vision.guidance_scale is not None:
        return cfg.vision.guidance_scale
    if cfg.vision.pipeline:
        raise ConfigError(f"vision.guidance_scale: set it for vision.pipeline={cfg.vision.pipeline} (7.5 is usual for "
                          f"Stable Diffusion, 4.5 for PixArt-α)")
    made = Location.of(cfg.vision.base_dir, "vision.base_dir") / "base.json"
    return float(json.loads(made.read_text()).get("guidance_scale", 1.0)) if made.is_file() else 1.0
