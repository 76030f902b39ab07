"""float32 vs bfloat16 autocast on CPU for the zoo's two hot loops: one LoRA train step and one scoring batch of
the packaged base model, on one torch thread with synthetic token ids of exactly the stated length: the evidence
for what model.dtype=auto should pick on a CPU. Writes bench/results/precision.{json,md} (--out: another folder).

    python bench/precision.py [--repeats 7] [--train-batch 32 --score-batch 128 --length 128]
"""
import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from raypdiff import lora
from raypdiff.config import LoraSettings, ModelConfig
from raypdiff.tasks import builtin_spec

RESULTS = Path(__file__).parent / "results"
MODEL = ModelConfig(base="all-MiniLM-L6-v2", max_length=128)
LORA = LoraSettings(r=4, target_modules=["query", "value"])
TRAIN_BATCH, SCORE_BATCH = 32, 128
# (name, what runs, batch, length): the zoo's defaults (batch 32, eval.batch_size 128, max_length 128) and a
# shorter train length, since most GLUE sentences pad to well under 128 tokens
def cases(train_batch: int = TRAIN_BATCH, score_batch: int = SCORE_BATCH, length: int = MODEL.max_length) -> list:
    return [(f"train_step_len{length}", "train", train_batch, length),
            (f"train_step_len{length // 2}", "train", train_batch, length // 2),
            (f"score_len{length}", "score", score_batch, length)]


CASES = cases()
DTYPES = ("float32", "bfloat16")


def synthetic_batch(tok, batch: int, length: int, gen: torch.Generator) -> dict:
    """[CLS] random word pieces [SEP], no padding: every row is exactly `length` tokens."""
    ids = torch.randint(1000, tok.vocab_size, (batch, length), generator=gen)
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, 2, (batch,), generator=gen)}


class Runner:
    """A fresh seeded LoRA model and its AdamW (as lora.finetune builds them), stepped under one precision."""

    def __init__(self, dtype: str):
        self.dtype = dtype
        self.model = lora.build(MODEL, LORA, builtin_spec("SST-2", None), seed=0)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-3)

    def train_step(self, batch: dict) -> None:
        self.model.train()
        with lora.autocast(self.model, self.dtype):
            loss = self.model(**batch).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def score(self, batch: dict) -> None:
        self.model.eval()
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with lora.autocast(self.model, self.dtype):
            self.model(**inputs).logits.float().argmax(-1)

    def time(self, kind: str, batch: dict) -> float:
        t0 = time.perf_counter()
        if kind == "train":
            self.train_step(batch)
        else:
            self.score(batch)
        return time.perf_counter() - t0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The ISA extensions bfloat16 speed depends on (AVX512-BF16 dot products, AMX tiles)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags.split()]


def report(result: dict) -> str:
    """The Markdown table of a result (bench/results/precision.md)."""
    ratio = result["ratio"]
    faster = sum(r < 1 for r in ratio.values())
    md = ["# float32 vs bfloat16 autocast on CPU (all-MiniLM-L6-v2, LoRA r=4 on query,value, 1 thread)", "",
          f"CPU: {result['cpu']} ({', '.join(result['cpu_flags']) or 'no bf16 flags'}); torch {result['torch']}; "
          f"median of {result['repeats']} interleaved rounds after a warm-up; synthetic ids, no padding.", "",
          "| case | batch × length | float32 s | bfloat16 s | bfloat16 / float32 |", "|---|---|---|---|---|"]
    md += [f"| {name} | {c['batch']} × {c['length']} | {result['float32'][name]:.3f} | "
           f"{result['bfloat16'][name]:.3f} | {ratio[name]:.2f} |" for name, c in result["cases"].items()]
    before, after = result["loadavg_before_after"]
    md += ["", f"bfloat16 autocast is faster than float32 in {faster} of {len(ratio)} cases here; `model.dtype=auto` "
               f"resolves to **{result['resolved_auto']}** on a CPU. Load average (1 min) {before:.1f} before, "
               f"{after:.1f} after: on a shared machine the ratios carry over, not the absolute times."]
    return "\n".join(md) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7, help="timed rounds after one warm-up round (>= 5)")
    p.add_argument("--train-batch", type=int, default=TRAIN_BATCH, help="rows of a train step")
    p.add_argument("--score-batch", type=int, default=SCORE_BATCH, help="rows of a scoring batch")
    p.add_argument("--length", type=int, default=MODEL.max_length,
                   help="tokens per row (the second train case: half of it; at most the model's 512)")
    p.add_argument("--out", default=str(RESULTS), help="folder for precision.{json,md}")
    args = p.parse_args()
    if args.repeats < 5:
        raise SystemExit("--repeats: at least 5")
    if min(args.train_batch, args.score_batch) < 1 or not 4 <= args.length <= 512:
        raise SystemExit("--train-batch, --score-batch: at least 1; --length: 4..512")
    run_cases = cases(args.train_batch, args.score_batch, args.length)
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tok = lora.load_tokenizer(MODEL)
    gen = torch.Generator().manual_seed(0)
    batches = {name: synthetic_batch(tok, b, n, gen) for name, _, b, n in run_cases}
    runners = {d: Runner(d) for d in DTYPES}
    load_before = os.getloadavg()
    times = {d: {name: [] for name, *_ in run_cases} for d in DTYPES}
    # Interleaved (case by case, precision by precision, every round) so that load on a shared machine hits
    # both precisions alike; round 0 warms up oneDNN kernels and allocator caches and is not kept.
    for round_ in range(args.repeats + 1):
        for name, kind, *_ in run_cases:
            for d in DTYPES:
                t = runners[d].time(kind, batches[name])
                if round_:
                    times[d][name].append(t)
        if round_:
            print(f"round {round_}: " + "  ".join(f"{name} {d} {times[d][name][-1]:.2f}s"
                                                 for name, *_ in run_cases for d in DTYPES), flush=True)
    median = {d: {name: statistics.median(ts) for name, ts in times[d].items()} for d in DTYPES}
    result = {
        **median,
        # > 1: bf16 slower
        "ratio": {name: median["bfloat16"][name] / median["float32"][name] for name, *_ in run_cases},
        "threads": torch.get_num_threads(), "cpu": cpu_name(), "cpu_flags": cpu_flags(),
        "resolved_auto": lora.resolve_dtype("auto", torch.device("cpu")),
        "repeats": args.repeats, "cases": {name: {"kind": k, "batch": b, "length": n} for name, k, b, n in run_cases},
        "torch": torch.__version__, "loadavg_before_after": [load_before[0], os.getloadavg()[0]],
        "times": times,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision.json").write_text(json.dumps(result, indent=1))
    md = report(result)
    (out / "precision.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
