"""Training recipes of the report (sections 5 and 6) as frozen, validated data.

A recipe is everything about *how* a model is trained that is not its architecture: optimizer
settings, batch size, epochs, learning-rate schedule. Keeping them as data lets the CLI override
single fields (`--epochs 2`) without touching code and lets a run record exactly what it used.
Every model uses Adam with Keras' default betas (0.9, 0.999) and
`SparseCategoricalCrossentropy(from_logits=True)`, as the report does. Each model's default
recipe is in its catalogue entry (`trainers.catalogue`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trainers.errors import ModelConfigError


@dataclass(frozen=True)
class Recipe:
    """How one model is trained.

    Attributes:
        learning_rate: Adam's initial learning rate.
        batch_size: samples per gradient step.
        epochs: passes over the training split.
        lr_halve_every: halve the learning rate every this many epochs (the Stanford-40
            schedule); `None` keeps it constant.
    """

    learning_rate: float
    batch_size: int
    epochs: int
    lr_halve_every: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise ModelConfigError(f"learning rate must be in (0, 1), got {self.learning_rate!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ModelConfigError(f"batch size must be an integer >= 1, got {self.batch_size!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ModelConfigError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.lr_halve_every is not None and not (
            isinstance(self.lr_halve_every, int) and self.lr_halve_every >= 1
        ):
            raise ModelConfigError(
                f"lr_halve_every must be an integer >= 1 or None, got {self.lr_halve_every!r}"
            )

    def learning_rate_at(self, epoch: int) -> float:
        """Learning rate for a 0-based epoch under this recipe's schedule."""
        if self.lr_halve_every is None:
            return float(self.learning_rate)
        return float(self.learning_rate) * 0.5 ** (epoch // self.lr_halve_every)

    def override(self, **changes: Any) -> "Recipe":
        """A copy with the given fields replaced; `None` values mean "keep the recipe's"."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for `metrics.json`, with the fixed optimizer and loss spelled out."""
        return {
            **dataclasses.asdict(self),
            "optimizer": "adam",
            "loss": "sparse_categorical_crossentropy(from_logits=True)",
        }

