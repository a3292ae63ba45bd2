"""The model catalogue: every model the trainers know, each one entry, and nothing else dispatches.

An entry says everything about a model that is not its layers: how to build it (the factory),
how to train it (the recipe), which store arrays feed which input, which runs it builds on, the
names it answers to and how the report's tables label it. `trainers run`, `summary` and
`report` look a name up here and never branch on it, so a new model is one `register(...)`.

Models are named by what they are, not by the report's datasets: they train on any store that
holds the arrays they read, with the store's classes. The report's names stay as aliases, so
`trainers run stanford40` and run directories recorded as `tvhi_flow` keep working.

This module imports no TensorFlow (factories import it when called), so a bad model name or
store fails before TensorFlow's start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from trainers.errors import ModelConfigError, UnknownModelError
from trainers.recipes import RECIPE_SETS, TUNED_RECIPES, Recipe

if TYPE_CHECKING:
    import keras

#: shapes (input name -> per-sample shape), class count, base models (name -> model, or None
#: when no run was found), the recipe it trains with (for the parts of a model a recipe
#: switches on, such as `subtract_mean_flow`) -> the model to train.
Factory = Callable[[Mapping[str, tuple], int, Mapping[str, "keras.Model | None"], Recipe],
                   "keras.Model"]


@dataclass(frozen=True)
class ModelEntry:
    """One model.

    Attributes:
        name: the model's name, what it is (`image`, `frames`, ...).
        factory: builds the model for a store's shapes and classes from its base models.
        recipe: how it is trained by default.
        inputs: model input name -> store array that feeds it, in the model's input order.
        transfers_from: models whose latest run with the same input size, on any store, this
            one starts from; optional (without one it trains from scratch, with a warning).
        requires: models whose runs on the same store this one freezes; trained when missing.
        label: row label in the report's tables; `{dataset}` becomes the store's dataset.
        report_classes: class count of the report's dataset (`trainers summary`'s default).
        aliases: other names it answers to (the report's).
    """

    name: str
    factory: Factory
    recipe: Recipe
    inputs: Mapping[str, str]
    label: str
    report_classes: int
    transfers_from: tuple[str, ...] = field(default=())
    requires: tuple[str, ...] = field(default=())
    aliases: tuple[str, ...] = field(default=())

    @property
    def arrays(self) -> tuple[str, ...]:
        """Store arrays the model reads per sample."""
        return tuple(self.inputs.values())

    @property
    def reads_steps(self) -> bool:
        """Whether the model reads a per-step array (`frames`, `flow`: time, height, width,
        channels), which a store built with `--sampling segments` holds segment by segment."""
        shapes = array_shapes(1, 1)
        return any(len(shapes.get(array, ())) == 4 for array in self.arrays)

    @property
    def reads_frame(self) -> bool:
        """Whether the model reads a video's `middle_frame` (what `frame_views` applies to)."""
        return MIDDLE_FRAME in self.arrays

    def inputs_for(self, frame_views: bool) -> Mapping[str, str]:
        """`inputs`, but under `frame_views` every middle-frame input reads the per-step
        `frames` (one of which it is fed at a time)."""
        if not frame_views:
            return self.inputs
        return MappingProxyType({name: FRAMES if array == MIDDLE_FRAME else array
                                 for name, array in self.inputs.items()})

    @property
    def reads_flow(self) -> bool:
        """Whether the model reads the `flow` array (what `subtract_mean_flow` applies to)."""
        return FLOW in self.arrays

    @property
    def bases(self) -> tuple[str, ...]:
        """Every model whose run this one starts from or freezes."""
        return self.transfers_from + self.requires


MIDDLE_FRAME, FRAMES = "middle_frame", "frames"  # a video's single frame, its per-step frames
FLOW = "flow"

_CATALOGUE: dict[str, ModelEntry] = {}
_NAMES: dict[str, str] = {}  # name or alias -> name


def register(entry: ModelEntry) -> ModelEntry:
    """Add a model; a name or alias that is taken, or a base that is unknown, is refused."""
    for name in (entry.name, *entry.aliases):
        if name in _NAMES:
            raise ModelConfigError(f"model name {name!r} is already in the catalogue")
    for base in entry.bases:
        if base not in _CATALOGUE:
            raise ModelConfigError(f"model {entry.name!r} builds on unknown model {base!r}")
    _CATALOGUE[entry.name] = entry
    _NAMES.update({name: entry.name for name in (entry.name, *entry.aliases)})
    return entry


def unregister(name: str) -> None:
    """Remove a model again (for tests that register one)."""
    entry = _CATALOGUE.pop(name)
    for alias in (entry.name, *entry.aliases):
        del _NAMES[alias]


def model_names() -> tuple[str, ...]:
    """Every model's name, in catalogue order (the order they build on each other)."""
    return tuple(_CATALOGUE)


def known_names() -> str:
    """The names and aliases, as error messages and `--help` list them."""
    aliases = [f"{alias} = {entry.name}" for entry in _CATALOGUE.values()
               for alias in entry.aliases]
    return f"{', '.join(_CATALOGUE)} (aliases: {', '.join(aliases)})"


def get_model(name: str) -> ModelEntry:
    """The entry of a model name or alias; an unknown name raises an error listing them."""
    try:
        return _CATALOGUE[_NAMES[name]]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: {known_names()}") from None


def recipe_of(name: str, recipe_set: str = "report") -> Recipe:
    """The recipe model `name` (or an alias) trains with in `recipe_set` (`RECIPE_SETS`):
    `report` is its catalogue entry's, `tuned` its row of `trainers.recipes.TUNED_RECIPES`."""
    entry = get_model(name)
    if recipe_set not in RECIPE_SETS:
        raise ModelConfigError(f"unknown recipe set {recipe_set!r}; known: "
                               f"{', '.join(RECIPE_SETS)}")
    if recipe_set == "report":
        return entry.recipe
    if entry.name not in TUNED_RECIPES:
        raise ModelConfigError(f"model {entry.name!r} has no {recipe_set} recipe")
    return TUNED_RECIPES[entry.name]


def canonical_name(name: str) -> str:
    """The model name behind `name` (an alias, as older runs recorded it); unknown: as is."""
    return _NAMES.get(name, name)


def check_sizes(size: int, steps: int) -> None:
    """Refuse a frame side or a step count that no store can hold, by flowstore's own bounds
    (its `VideoParams` checks them): a model is built for inputs a store can give it, and one
    for 100,000 px frames runs out of memory while it is built, a traceback after a long wait.

    Raises:
        flowstore.errors.ParameterError: `size` or `steps` is out of flowstore's range.
    """
    from flowstore.params import VideoParams

    VideoParams(size=size, steps=steps)


def array_shapes(size: int, steps: int) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of the store arrays models read, for frames of `size` px and `steps`
    flow steps: what `trainers summary` builds for without a store."""
    frame = (size, size, 3)
    return {"image": frame, "middle_frame": frame, "frames": (steps, *frame),
            "flow": (steps, size, size, 2)}


# Factories. Each imports the Keras models when called, not when this module is imported.

def _image(shapes: Mapping[str, tuple], classes: int, bases: Mapping[str, Any],
           recipe: Recipe) -> "keras.Model":
    from trainers.models import build_stanford40

    return build_stanford40(input_shape=shapes["image"], num_classes=classes,
                            dropout=recipe.dropout)


def _frames(shapes: Mapping[str, tuple], classes: int, bases: Mapping[str, Any],
            recipe: Recipe) -> "keras.Model":
    from trainers.models import build_tvhi_frames

    base = bases.get("image")
    # Frozen transfer when image weights exist; without them a frozen random conv part would
    # learn nothing, so it trains too.
    return build_tvhi_frames(input_shape=shapes["frame"], num_classes=classes, base=base,
                             freeze_base=base is not None, dropout=recipe.dropout)


def _flow(shapes: Mapping[str, tuple], classes: int, bases: Mapping[str, Any],
          recipe: Recipe) -> "keras.Model":
    from trainers.models import build_tvhi_flow

    return build_tvhi_flow(input_shape=shapes["flow"], num_classes=classes,
                           subtract_mean=recipe.subtract_mean_flow, dropout=recipe.dropout)


def _two_stream(shapes: Mapping[str, tuple], classes: int, bases: Mapping[str, Any],
                recipe: Recipe) -> "keras.Model":
    from trainers.models import build_two_stream

    # The flow stream is the flow run's model as trained: mean flow subtraction included when
    # its recipe had it (a run's prerequisites are found by recipe, so it matches this one's).
    return build_two_stream(frame_shape=shapes["frame"], flow_shape=shapes["flow"],
                            num_classes=classes, frames_model=bases["frames"],
                            flow_model=bases["flow"], dropout=recipe.dropout)


# The report's four models (sections 5 and 6), in the order they build on each other.
register(ModelEntry(
    name="image", factory=_image, label="{dataset}", report_classes=40, aliases=("stanford40",),
    inputs=MappingProxyType({"image": "image"}),
    # 5.1: Adam, batch 8, 15 epochs, learning rate halved every 4 epochs. The report's 1e-3 is
    # lowered to 1e-4: at 1e-3 every Dense_0 unit dies (ReLU never positive) within about 200
    # steps on the real images and the network outputs one constant (README, "Stanford-40").
    recipe=Recipe(learning_rate=1e-4, batch_size=8, epochs=15, lr_halve_every=4),
))
register(ModelEntry(
    name="frames", factory=_frames, label="{dataset} frame", report_classes=4,
    aliases=("tvhi_frames",), inputs=MappingProxyType({"frame": "middle_frame"}),
    transfers_from=("image",),
    # 5.2: 1e-4 (a tenth of the report's image CNN rate; equal to the image CNN's here, which is
    # lowered to 1e-4), batch 2, 20 epochs.
    recipe=Recipe(learning_rate=1e-4, batch_size=2, epochs=20),
))
register(ModelEntry(
    name="flow", factory=_flow, label="{dataset} flow", report_classes=4,
    aliases=("tvhi_flow",), inputs=MappingProxyType({"flow": "flow"}),
    # 5.3: Adam 1e-3, batch 2, 20 epochs.
    recipe=Recipe(learning_rate=1e-3, batch_size=2, epochs=20),
))
register(ModelEntry(
    name="two_stream", factory=_two_stream, label="{dataset} two-stream", report_classes=4,
    inputs=MappingProxyType({"frame": "middle_frame", "flow": "flow"}),
    requires=("frames", "flow"),
    # 6: Adam 1e-4, batch 1, 20 epochs.
    recipe=Recipe(learning_rate=1e-4, batch_size=1, epochs=20),
))
