"""Request / response models of the HTTP API, with the stated maxima (every field bounded; unknown fields refused)."""
from __future__ import annotations

from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from raypdiff.serve.store import ID_PATTERN

MAX_DESCRIPTION = 2000  # characters
MAX_LABELS = 20
MAX_LABEL_CHARS = 64
MAX_EXAMPLES = 32
MAX_TEXT_CHARS = 1000  # per text; one example or one text to predict
MAX_NUM = 16  # adapters per request
MAX_TUNE_STEPS = 100  # ~40 s of a replica's time at k = 8 per label on a 2-core CPU
MAX_TEXTS = 64  # texts per predict request
MAX_SEED = 2**31 - 1

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
TextPair = Annotated[list[Text], Field(min_length=2, max_length=2)]
TextOrPair = Union[Text, TextPair]
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_CHARS)]
AdapterId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Request(BaseModel):
    """No coercion either: "3" or true is not a number."""
    model_config = ConfigDict(extra="forbid", strict=True)


class Error(_Strict):
    error: str = Field(description="one line saying what was wrong")


class Example(_Request):
    text: TextOrPair = Field(description="a text, or a [first, second] pair for pair tasks")
    label: Union[LabelName, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        description="a label name (classification) or a number (regression)")


class TaskInfo(_Strict):
    name: str
    description: str
    label_names: Optional[list[str]] = Field(description="null for a regression task")
    num_labels: int
    regression: bool
    text_fields: list[str] = Field(description="one field: single texts; two: text pairs")
    metric: str
    examples: list[Example] = Field(description="a few labeled training rows (prefill for the page)")


class Tasks(_Strict):
    base_model: str = Field(description="the base model every adapter is for (its hub id)")
    tasks: list[TaskInfo]


class AdapterRequest(_Request):
    """Either a zoo task, or a new task: description, label names (omit for regression) and labeled examples."""
    task: Optional[Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_CHARS)]] = None
    description: Optional[Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION)]] = None
    label_names: Optional[Annotated[list[LabelName], Field(min_length=2, max_length=MAX_LABELS)]] = None
    examples: Annotated[list[Example], Field(max_length=MAX_EXAMPLES)] = []
    num: int = Field(1, ge=1, le=MAX_NUM, description="adapters to generate")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="the same request and seed give the same adapters")
    guidance: Optional[float] = Field(None, ge=0, le=20, allow_inf_nan=False,
                                      description="classifier-free guidance scale (default: the generator's)")
    quality: Optional[float] = Field(None, ge=0, le=1, allow_inf_nan=False,
                                     description="metric rank within the task to ask for, 0..1 (quality-conditioned "
                                                 "generators; default: the generator's target)")
    tune_steps: int = Field(0, ge=0, le=MAX_TUNE_STEPS,
                            description="with description: fine-tune the built adapter's body and head on the examples "
                                        "for this many steps (0: none; 20: ~8 s, +3.5 macro-F1 points measured)")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.task is None) == (self.description is None):
            raise ValueError("give either task (a zoo task) or description (+ label_names and examples)")
        if self.description is not None and not self.description.strip():
            raise ValueError("description: must not be empty")
        if self.task is not None and (self.label_names is not None or self.examples or self.tune_steps):
            raise ValueError("label_names, examples and tune_steps go with description, not with task")
        if self.label_names is not None and len(set(self.label_names)) != len(self.label_names):
            raise ValueError("label_names: duplicates")
        return self


class Novelty(_Strict):
    nearest_task: str = Field(description="the zoo task whose condition is closest (it lends head layout and "
                                          "statistics to a new description)")
    condition_cosine: float = Field(description="cosine between this condition and that task's conditions")


class Built(_Strict):
    body: str = Field(description="where the body (the LoRA matrices) came from: base, or generated:<i>")
    head: str = Field(description="the head built from the examples: prototype, logistic or ridge")
    features: str = Field(description="what the head reads")
    leave_one_out: dict[str, dict[str, float]] = Field(
        description="body candidate → head kind → its leave-one-out score over the examples (what chose them)")
    tune_steps: int = Field(description="steps the body and head were then fine-tuned on the examples (0: none)")
    build_seconds: float


class AdapterInfo(_Strict):
    id: str = Field(description="sha256 of the adapter's values and layout")
    download: str = Field(description="GET this path for the PEFT folder as a zip")
    task: Optional[str] = Field(description="the zoo task asked for; null for a new description")
    layout_task: str
    label_names: Optional[list[str]]
    regression: bool
    text_fields: list[str]
    seed: int
    index: int = Field(description="position among the request's num adapters")
    novelty: Optional[Novelty] = None
    built: Optional[Built] = Field(None, description="a new description's adapter: how it was built")


class Adapters(_Strict):
    adapters: list[AdapterInfo]
    sample_seconds: float


class PredictRequest(_Request):
    """An adapter id, or an adapter request (one adapter, generated on the fly), and the texts to label."""
    adapter_id: Optional[AdapterId] = None
    adapter: Optional[AdapterRequest] = None
    texts: Annotated[list[TextOrPair], Field(min_length=1, max_length=MAX_TEXTS)]

    @model_validator(mode="after")
    def _one_adapter(self):
        if (self.adapter_id is None) == (self.adapter is None):
            raise ValueError("give either adapter_id or adapter")
        return self


class Prediction(_Strict):
    label: Optional[str] = Field(description="the predicted label (null for regression)")
    probabilities: Optional[dict[str, float]] = Field(description="label → probability (null for regression)")
    score: Optional[float] = Field(description="the regression output (null for classification)")


class Predictions(_Strict):
    adapter_id: str
    predictions: list[Prediction]


class Health(_Strict):
    status: str
    generator_tasks: int
