"""A folder of images of no class, to predict with a trained image run: SOURCE/<image>, in any
sub-folders (`clips`'s rules, for images).

Every .jpg .jpeg .png .bmp .webp file (any letter case, as `imagefolder`) is a sample of the
split `test` and the label -1 (`flowstore.manifest.NO_CLASS`) in a store of no classes:
`trainers predict RUN --store new.zarr` predicts each, `trainers run` refuses the store. Each
sample is the Stanford-40 extraction (`image`).
"""

from __future__ import annotations

from pathlib import Path

from flowstore.datasets._classfolders import Unlabelled
from flowstore.datasets.base import ImageDataset
from flowstore.datasets.imagefolder import IMAGE_SUFFIXES, SYNTH_SUFFIXES
from flowstore.synth.clips import SynthClipsConfig


class Images(Unlabelled, ImageDataset):
    name = "images"
    suffixes = IMAGE_SUFFIXES
    what = "image"
    synth_config_type = SynthClipsConfig

    def write_synthetic(self, folder: Path, config: SynthClipsConfig) -> Path:
        """SOURCE/img_NNN.<format> and SOURCE/more/img_NNN.<format>: `clips_per_class` images
        of each of `classes` synthetic classes, named without them, and a README.txt."""
        from flowstore.synth.clips import write_image, write_unlabelled

        return write_unlabelled(folder, config, write_image, SYNTH_SUFFIXES, "img")
