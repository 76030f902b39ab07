"""A multi-task body: one LoRA fine-tuned on many tasks at once, each with its own linear head on the mean-pooled,
L2-normalized features a built head reads. It says whether reading a task's condition adds anything over one body
shared by every training task."""
from __future__ import annotations

import numpy as np
import torch

from raypdiff import heads, lora
from raypdiff.newtask import Builder
from raypdiff.tasks import Split, TaskSpec

SCALE = 10.0  # unit-norm features: logits need a temperature to reach confident probabilities


def train_body(builder: Builder, tasks: dict[str, tuple[TaskSpec, Split]], steps: int, batch_size: int, lr: float,
               seed: int, progress=None) -> np.ndarray:
    """steps of AdamW, one task per step in a shuffled round, a batch of its train rows: cross-entropy (MSE for
    regression) through that task's head → the trained LoRA body in the builder's body layout."""
    probe = TaskSpec(name="body", description="-", text_fields=["text"], label_field="label", metric="accuracy",
                     label_names=["a", "b"], train="-", dev="-")
    torch.manual_seed(seed)
    model = lora.build(builder.model_cfg, builder.lora_settings, probe, seed)
    body = [p for n, p in model.named_parameters() if "lora_" in n]
    size = model.get_base_model().base_model.config.hidden_size
    names = list(tasks)
    task_heads = torch.nn.ModuleDict({str(i): torch.nn.Linear(size, tasks[t][0].num_labels) for i, t in
                                      enumerate(names)})
    opt = torch.optim.AdamW([{"params": body}, {"params": task_heads.parameters()}], lr=lr)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    model.train()
    for step in range(steps):
        if not order:
            order = list(rng.permutation(len(names)))
        i = order.pop()
        spec, train = tasks[names[i]]
        idx = rng.choice(len(train), min(batch_size, len(train)), replace=False)
        rows = lora.encode(builder.tokenizer, Split([train.texts[j] for j in idx], train.labels[idx]),
                           builder.model_cfg.max_length)
        batch = lora.collate(builder.tokenizer, rows)
        out = task_heads[str(i)](heads.encode(model, batch, builder.model_cfg.dtype) * SCALE)
        y = torch.as_tensor(train.labels[idx])
        loss = (torch.nn.functional.mse_loss(out[:, 0], y.float()) if spec.is_regression
                else torch.nn.functional.cross_entropy(out, y.long()))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if progress is not None:
            progress(step + 1, loss.item())
    model.eval()
    state = lora.adapter_state(model)
    return torch.cat([state[n].detach().float().reshape(-1) for n in builder.body_layout.names]).numpy()
