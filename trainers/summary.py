"""`trainers summary`: a model's Keras summary and parameter counts, without a store.

Building at the report's 224 px and 16 steps reproduces its model summaries, so this is also the
quickest check that an architecture still matches the report.
"""

from __future__ import annotations

from trainers.catalogue import check_sizes, get_model
from trainers.errors import ModelConfigError, require_training_extra


def model_summary(model: str, *, size: int = 224, steps: int = 16,
                  num_classes: int | None = None, expand_nested: bool = False) -> str:
    """The Keras summary of a freshly built `model`, then one line of parameter counts.

    Args:
        model: a model's catalogue name or alias.
        size: frame side S.
        steps: flow steps T (flow and two-stream models).
        num_classes: output classes; the report's by default.
        expand_nested: also list the layers of the frozen sub-models.
    """
    entry = get_model(model)  # before TensorFlow's start-up
    model = entry.name
    check_sizes(size, steps)  # so too an input no store holds (`build_default` checks again)
    if num_classes is not None and num_classes < 2:  # (the models' check names num_classes)
        raise ModelConfigError(f"--classes must be at least 2, got {num_classes}")
    require_training_extra()
    from trainers.quiet import start_keras_quietly

    start_keras_quietly()  # its start-up notes kept back, as for `trainers run`
    from trainers.models import build_default, parameter_counts

    built = build_default(model, size=size, steps=steps, num_classes=num_classes)
    captured: list[str] = []
    built.summary(print_fn=lambda text, **_: captured.append(text), expand_nested=expand_nested)
    counts = parameter_counts(built)
    shape = f"size {size}, steps {steps}" if entry.reads_steps else f"size {size}"  # (no steps)
    if num_classes is not None:
        shape += f", {num_classes} classes"
    return (f"{''.join(captured).rstrip()}\n"
            f"{model} at {shape}: total {counts['total']:,}, trainable "
            f"{counts['trainable']:,}, non-trainable {counts['non_trainable']:,}")
