"""What each model reads from a store, and which runs it builds on.

This is the light half of the model catalogue (no TensorFlow import): the run checks a store
against it before paying for TensorFlow's start-up, so a wrong `--store` fails in a blink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from trainers.recipes import check_model_name


@dataclass(frozen=True)
class Task:
    """The data side of one model.

    Attributes:
        dataset: the store's `dataset` attribute the model trains on.
        inputs: model input name -> store array that feeds it, in the model's input order.
        requires: models whose runs this one builds on (weights it starts from or freezes).
    """

    dataset: str
    inputs: Mapping[str, str]
    requires: tuple[str, ...] = field(default=())

    @property
    def arrays(self) -> tuple[str, ...]:
        """Store arrays the model reads per sample."""
        return tuple(self.inputs.values())


TASKS: Mapping[str, Task] = MappingProxyType({
    "stanford40": Task(dataset="stanford40", inputs=MappingProxyType({"image": "image"})),
    "tvhi_frames": Task(
        dataset="tvhi",
        inputs=MappingProxyType({"frame": "middle_frame"}),
        # Optional: without a Stanford-40 run the frames model trains its conv part from scratch.
        requires=("stanford40",),
    ),
    "tvhi_flow": Task(dataset="tvhi", inputs=MappingProxyType({"flow": "flow"})),
    "two_stream": Task(
        dataset="tvhi",
        inputs=MappingProxyType({"frame": "middle_frame", "flow": "flow"}),
        requires=("tvhi_frames", "tvhi_flow"),
    ),
})


def get_task(model: str) -> Task:
    """The task of a model name; an unknown name raises an error listing the known ones."""
    return TASKS[check_model_name(model)]
