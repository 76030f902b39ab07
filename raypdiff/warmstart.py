"""Warm starts: a built adapter (body + head) fine-tuned for a fixed small budget on the k examples it was built from,
LoRA and head together, through the head's own logits. From peft's initial LoRA and a zero head the same loop is
plain LoRA fine-tuning at that budget."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from raypdiff import heads, lora
from raypdiff.tasks import Split, TaskSpec

# fixed before any held-out task was scored (a user has no val split to pick them on); measured in bench/unseen.py:
# at k = 8 per label, 20 steps take about SetFit's time or less
STEPS = 20
LR = 1e-3  # the zoo's LoRA fine-tuning rate (configs/suite.yaml capture.lr)


def tune(builder, spec: TaskSpec, examples: list, body: np.ndarray, head: Optional[heads.Head],
         steps: int = STEPS, lr: float = LR, seed: int = 0) -> tuple[np.ndarray, heads.Head]:
    """builder: a newtask.Builder (its model, tokenizer and body layout). `steps` full-batch AdamW steps on the
    examples ((texts, label) pairs): cross-entropy through the head's logits
    (MSE for a ridge head) → the tuned body and head. head None: a zero head (logistic; ridge for regression). A zero
    body (the base model) starts from peft's initial LoRA, which computes the same function and has a gradient."""
    split = Split([t for t, _ in examples], np.asarray([y for _, y in examples],
                                                       np.float32 if spec.is_regression else np.int64))
    model = builder.model
    if head is None:
        hidden, labels = model.get_base_model().base_model.config.hidden_size, spec.num_labels
        head = heads.Head("ridge" if spec.is_regression else "logistic", np.zeros((labels, hidden), np.float32),
                          np.zeros(labels, np.float32))
    builder.load_body(body if body.any() else builder.init_body)
    torch.manual_seed(seed)
    weight = torch.nn.Parameter(torch.from_numpy(head.weight.copy()))
    bias = torch.nn.Parameter(torch.from_numpy(head.bias.copy()))
    opt = torch.optim.AdamW([*(p for n, p in model.named_parameters() if "lora_" in n), weight, bias], lr=lr)
    batch = lora.collate(builder.tokenizer, lora.encode(builder.tokenizer, split, builder.model_cfg.max_length))
    y = torch.as_tensor(split.labels)
    model.train()
    for _ in range(steps):
        out = heads.encode(model, batch, builder.model_cfg.dtype) @ weight.T + bias
        loss = (torch.nn.functional.mse_loss(out[:, 0], y) if spec.is_regression
                else torch.nn.functional.cross_entropy(out, y))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    state = lora.adapter_state(model)
    tuned = torch.cat([state[n].detach().float().reshape(-1) for n in builder.body_layout.names]).numpy()
    return tuned, heads.Head(head.kind, weight.detach().numpy().copy(), bias.detach().numpy().copy())
