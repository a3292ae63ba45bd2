"""Errors the trainers raise on purpose, inside flowstore's one hierarchy.

Deriving from `flowstore.errors.FlowstoreError` lets the trainers CLI treat a bad model name, a
store of the wrong dataset and a bad store path alike: one line on stderr, exit code 2. Each class
also derives from the builtin it resembles so that plain `except ValueError` keeps working.
"""

from __future__ import annotations

from flowstore.errors import FlowstoreError


class TrainerError(FlowstoreError):
    """Base class of every error the trainers raise on purpose."""


class UnknownModelError(TrainerError, KeyError):
    """A model name that is not one of the four of the report."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class ModelConfigError(TrainerError, ValueError):
    """A model factory, recipe or run option got a value it cannot use."""


class WrongDatasetError(TrainerError, ValueError):
    """A store holds another dataset (or other features) than the model trains on."""


class NoSamplesError(TrainerError, ValueError):
    """A split the run needs has no finished (`done`) sample in the store."""


class RunNotFoundError(TrainerError, FileNotFoundError):
    """A runs directory, or a run that a model builds on, is missing or incomplete."""
