"""The endpoint's work without Ray: `AdapterMaker` turns adapter requests into stored PEFT folders (many requests in
one sampling batch); `AdapterPredictor` labels texts with a stored adapter. The Serve deployments wrap these."""
from __future__ import annotations

import json
import time
from typing import Optional

import numpy as np
import torch

from raypdiff import heads, newtask
from raypdiff.config import Config, ConfigError
from raypdiff.domains import AdapterWriter
from raypdiff.generate import Generator
from raypdiff.lora import public_id
from raypdiff.serve.store import AdapterStore, adapter_id
from raypdiff.storage import Location
from raypdiff.tasks import TaskSpec


def resolve_generator(source: str, tracking_uri: Optional[str]) -> str:
    """A generator folder or file as given (a path or a URI, made absolute), or a registered model
    (models:/name/version) downloaded from MLflow."""
    if source.startswith("models:/"):
        from raypdiff import tracking

        return str(tracking.download_generator(source, tracking_uri))
    return str(Location.of(source, "--generator"))


class AdapterMaker:
    def __init__(self, gen: Generator, store: AdapterStore):
        from raypdiff.domains import require_text

        require_text(gen.domain, "serve", gen.path)
        self.gen, self.store, self.writer, self._builder = gen, store, AdapterWriter(gen), None
        self.base = gen.ckpt.base_model["base"]

    def catalog(self) -> dict:
        """The base model's public id and the generator's tasks, with a few labeled rows each."""
        out = []
        for name in self.gen.task_names:
            spec = self.gen.spec(name)
            out.append({"name": name, "description": spec.description, "label_names": spec.label_names,
                        "num_labels": spec.num_labels, "regression": spec.is_regression,
                        "text_fields": list(spec.text_fields), "metric": spec.metric,
                        "examples": self.gen.examples(name)})
        return {"base_model": public_id(self.base), "tasks": out}

    @property
    def builder(self) -> newtask.Builder:
        """The new-task route's base model, loaded on first use."""
        if self._builder is None:
            self._builder = newtask.builder_for(self.gen)
        return self._builder

    def _plan(self, req: dict) -> dict:
        """One zoo-task request → its conditions (num, C'), starting noise (num, Z), guidance and what the adapters
        are for."""
        gen, num = self.gen, req.get("num", 1)
        spec = gen.spec(req["task"])
        cond, layout_task, novelty = gen.conditions(req["task"], num, req.get("quality")), req["task"], None
        text_fields = list(spec.text_fields)
        guidance = gen.cfg.diffusion.guidance if req.get("guidance") is None else req["guidance"]
        return {"cond": cond, "noise": gen.initial_noise(num, req.get("seed", 0)), "guidance": guidance,
                "layout_task": layout_task, "novelty": novelty,
                "meta": {"task": req.get("task"), "layout_task": layout_task, "label_names": spec.label_names,
                         "num_labels": spec.num_labels, "regression": spec.is_regression, "text_fields": text_fields,
                         "description": spec.description, "seed": req.get("seed", 0),
                         "base_model_name_or_path": public_id(self.base),
                         "base_model": self.gen.ckpt.base_model, "lora": self.gen.ckpt.lora}}

    def make(self, reqs: list[dict]) -> list[dict]:
        """Requests (AdapterRequest dicts) → per request {"adapters": [...], "sample_seconds"} or {"error": msg}.
        All valid requests are sampled in one DDIM batch; each comes out as it would alone (its own noise)."""
        plans: list = []
        for req in reqs:
            try:
                plans.append(self._plan(req) if req.get("task") is not None else self._new_task(req))
            except ConfigError as e:
                plans.append(str(e))
        ok = [p for p in plans if isinstance(p, dict) and "cond" in p]  # zoo tasks: sampled together
        t0 = time.time()
        if ok:
            guidance = torch.cat([torch.full((len(p["cond"]), 1), float(p["guidance"])) for p in ok])  # (B, 1)
            x = self.gen.normalized(torch.cat([p["cond"] for p in ok]), guidance=guidance, sampler="ddim",
                                    noise=torch.cat([p["noise"] for p in ok]))  # (B, P_max)
        sample_s, out, row = time.time() - t0, [], 0
        for p in plans:
            if isinstance(p, str):
                out.append({"error": p})
                continue
            if "adapters" in p:  # a new task's adapter, built already
                out.append(p)
                continue
            vectors = self.gen.denormalize(p["layout_task"], x[row:row + len(p["cond"])])
            row += len(p["cond"])
            out.append({"adapters": [self._store(p, i, v) for i, v in enumerate(vectors)], "sample_seconds": sample_s})
        return out

    def _new_task(self, req: dict) -> dict:
        """A new description → one adapter: the best of the base body and `num` generated bodies, with a head built
        from the examples (raypdiff.newtask; with tune_steps, then fine-tuned on them), stored; {"adapters": [info],
        "sample_seconds"}."""
        b, seed = self.builder, req.get("seed", 0)
        spec, built = newtask.build_for(self.gen, b, req["description"], req.get("label_names"),
                                        req.get("examples") or [], req.get("num", 1), seed,
                                        guidance=req.get("guidance"), quality=req.get("quality"),
                                        tune_steps=req.get("tune_steps", 0))
        h = built.head
        what = json.dumps([h.kind, spec.label_names, spec.description, list(spec.text_fields)])  # same weights, other
        id_ = adapter_id(np.concatenate([built.body, h.weight.ravel(), h.bias]), f"new-task:{what}", self.base)  # names
        meta = {**b.info(built, spec), "kind": "task_head", "task": None, "layout_task": "new-task",
                "num_labels": spec.num_labels, "regression": spec.is_regression, "seed": seed,
                "base_model_name_or_path": public_id(self.base), "base_model": self.gen.ckpt.base_model,
                "lora": self.gen.ckpt.lora}  # the store writes it as the folder's raypdiff.json
        self.store.put(id_, lambda folder: b.write(built, spec, folder), meta)
        info = {"id": id_, "download": f"/v1/adapters/{id_}", "task": None, "layout_task": "new-task",
                "label_names": spec.label_names, "regression": spec.is_regression, "text_fields": meta["text_fields"],
                "seed": seed, "index": 0, "novelty": None, "built": built.describe()}
        return {"adapters": [info], "sample_seconds": built.seconds}

    def _store(self, plan: dict, index: int, vector: np.ndarray) -> dict:
        id_ = adapter_id(vector, plan["layout_task"], self.base)
        self.store.put(id_, lambda folder: self.writer.write(plan["layout_task"], vector, folder), plan["meta"])
        m = plan["meta"]
        return {"id": id_, "download": f"/v1/adapters/{id_}", "task": m["task"], "layout_task": m["layout_task"],
                "label_names": m["label_names"], "regression": m["regression"], "text_fields": m["text_fields"],
                "seed": m["seed"], "index": index, "novelty": plan["novelty"]}


class AdapterPredictor:
    """Stored adapters applied to a shared base model per head shape, in float32 (so that the downloaded folder
    under plain transformers + PEFT gives the same probabilities)."""

    def __init__(self, store: AdapterStore):
        self.store = store
        self._models: dict = {}
        self._toks: dict = {}

    def load(self, id_: str) -> dict:
        """The adapter's metadata and tensors; KeyError when it is not stored."""
        from safetensors.torch import load as load_tensors

        meta = self.store.meta(id_)
        state = load_tensors(self.store.read(id_, "adapter_model.safetensors"))
        head = load_tensors(self.store.read(id_, newtask.HEAD_FILE)) if meta.get("kind") == "task_head" else None
        return {"meta": meta, "state": state, "head": head}

    def _encoder(self, meta: dict):
        """The base encoder with LoRA slots (a new-task adapter's body), one per base model and LoRA settings."""
        from peft import LoraConfig, TaskType, get_peft_model
        from transformers import AutoModel

        from raypdiff import lora

        cfg = Config.for_base(meta["base_model"], meta["lora"], dtype="float32")
        key = ("encoder", cfg.model.base, str(meta["lora"]))
        if key not in self._models:
            s = cfg.lora
            self._models[key] = get_peft_model(AutoModel.from_pretrained(lora.resolve_base(cfg.model.base)), LoraConfig(
                task_type=TaskType.FEATURE_EXTRACTION, r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                target_modules=list(s.target_modules))).eval()
            self._toks.setdefault(cfg.model.base, lora.load_tokenizer(cfg.model))
        return self._models[key], self._toks[cfg.model.base], cfg.model.max_length

    def _model(self, meta: dict):
        from raypdiff import lora

        cfg = Config.for_base(meta["base_model"], meta["lora"], dtype="float32")
        key = (cfg.model.base, str(meta["lora"]), meta["num_labels"], meta["regression"])
        if key not in self._models:
            spec = TaskSpec(name=meta["layout_task"], description="-", text_fields=meta["text_fields"],
                            label_field="label", metric="pearson" if meta["regression"] else "accuracy",
                            label_names=meta["label_names"], train="-", dev="-")
            self._models[key] = lora.build(cfg.model, cfg.lora, spec).eval()
            self._toks.setdefault(cfg.model.base, lora.load_tokenizer(cfg.model))
        return self._models[key], self._toks[cfg.model.base], cfg.model.max_length

    @torch.no_grad()
    def predict(self, adapter: dict, texts: list) -> list[dict]:
        """texts: strings, or [first, second] pairs → one {"label", "probabilities", "score"} per text."""
        from peft import set_peft_model_state_dict

        meta = adapter["meta"]
        pairs = [isinstance(t, (list, tuple)) for t in texts]
        if any(pairs) and not all(pairs):
            raise ConfigError("texts: give all single texts or all [first, second] pairs")
        new = meta.get("kind") == "task_head"
        if (meta["task"] is not None or new) and all(pairs) != (len(meta["text_fields"]) == 2):
            kind = "[first, second] pairs" if len(meta["text_fields"]) == 2 else "single texts"
            who = f"task {meta['task']}" if meta["task"] is not None else "this adapter (built from its examples)"
            raise ConfigError(f"texts: {who} reads {kind} ({', '.join(meta['text_fields'])})")
        model, tok, max_length = self._encoder(meta) if new else self._model(meta)
        set_peft_model_state_dict(model, adapter["state"])
        cols = list(zip(*texts)) if all(pairs) else [texts]
        batch = tok(*[list(c) for c in cols], truncation=True, max_length=max_length, padding=True,
                    return_tensors="pt")
        if new:  # mean-pooled, L2-normalized features through the head built from the examples
            f = heads.pool(model(**batch).last_hidden_state, batch["attention_mask"])
            head = adapter["head"]
            logits = f @ head["weight"].T + head["bias"]  # (N, L)
        else:
            logits = model(**batch).logits.float()  # (N, L)
        if meta["regression"]:
            return [{"label": None, "probabilities": None, "score": float(s)} for s in logits[:, 0]]
        probs = logits.softmax(-1)
        names = meta["label_names"]
        return [{"label": names[int(p.argmax())], "probabilities": dict(zip(names, map(float, p))), "score": None}
                for p in probs]
