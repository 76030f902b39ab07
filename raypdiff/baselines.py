"""What a user with a new task would reach for instead: SetFit (contrastive fine-tuning of the same sentence encoder
on the k examples, then a logistic-regression head) with its few-shot defaults, on the packaged base model."""
from __future__ import annotations

import logging
import tempfile
import time
from typing import Optional

import numpy as np
import torch

from raypdiff import lora
from raypdiff.config import ConfigError


def joined(texts: tuple[str, ...]) -> str:
    """SetFit reads one text per row: a pair is joined as the prototype baseline joins it."""
    return " / ".join(texts)


def setfit(base: str, examples: list, test: list, seed: int = 0, batch_size: int = 16,
           deltas: Optional[dict[str, torch.Tensor]] = None) -> tuple[np.ndarray, float]:
    """examples: (texts, label id) pairs; test: texts tuples → (test label ids, seconds to train). SetFit 1.x defaults
    (1 epoch of contrastive pairs, 20 iterations per example, then scikit-learn's LogisticRegression head). deltas:
    a LoRA body merged into the encoder first (newtask.Builder.deltas), so that SetFit's steps start from it."""
    try:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise ConfigError("the SetFit baseline needs `pip install raypdiff[baselines]` (setfit)") from None
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("setfit").setLevel(logging.ERROR)
    t0 = time.time()
    model = SetFitModel.from_pretrained(lora.resolve_base(base))
    if deltas:
        params = dict(model.model_body[0].auto_model.named_parameters())
        missing = sorted(set(deltas) - set(params))
        if missing:
            raise ConfigError(f"the body changes {missing[0]!r}, which SetFit's encoder of {base} does not have")
        with torch.no_grad():
            for name, d in deltas.items():
                params[name].add_(d.to(params[name].dtype))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, batch_size=batch_size, num_epochs=1, seed=seed, save_strategy="no",
                                 report_to="none", show_progress_bar=False)
        data = Dataset.from_dict({"text": [joined(t) for t, _ in examples], "label": [int(y) for _, y in examples]})
        Trainer(model=model, args=args, train_dataset=data).train()
    seconds = time.time() - t0
    return np.asarray(model.predict([joined(t) for t in test], batch_size=64, show_progress_bar=False)), seconds
