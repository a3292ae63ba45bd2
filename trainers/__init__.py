"""Thin Keras 3 trainers for the four models of the report, streamed from flowstore stores.

`trainers.models` builds the networks, `trainers.recipes` holds their training recipes,
`trainers.samples` and `trainers.data` stream samples from a store (with `tf.data` on
TensorFlow, a Keras `PyDataset` on JAX or PyTorch: `trainers.backend`),
`trainers.run` trains a model into a run directory and `trainers.report` turns run directories
into the report's tables. `trainers.cli` is the `trainers` command.
"""

from trainers.backend import use_onednn_kernels

use_onednn_kernels()
