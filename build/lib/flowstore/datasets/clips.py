"""A folder of clips of no class, to predict with a trained run: SOURCE/<clip>, in any
sub-folders.

A trained model scores new clips from a store of them built with the run's extraction
parameters (`trainers predict RUN --store new.zarr`, whose default split, test, holds them all).
Every file whose suffix is a container OpenCV's FFmpeg backend decodes (as `videofolder`: .avi
.mp4 .mkv .mov ..., any letter case) is a sample, and nothing else is (README.txt,
.DS_Store); hidden files and folders are skipped, links to folders followed (each folder
once). A sample's id is its path under SOURCE
without the suffix (`cam2/0001`). The store has no classes: every sample's label is -1
(`flowstore.manifest.NO_CLASS`) and its split `test`, so `trainers run` refuses it (there is
nothing to learn from) and `trainers predict` reports predictions without an accuracy. Each
sample is the TV-HI extraction (middle frame, frames, flow).
"""

from __future__ import annotations

from pathlib import Path

from flowstore.datasets._classfolders import Unlabelled
from flowstore.datasets.base import VideoDataset
from flowstore.datasets.videofolder import SYNTH_SUFFIXES, VIDEO_SUFFIXES
from flowstore.synth.clips import SynthClipsConfig


class Clips(Unlabelled, VideoDataset):
    name = "clips"
    suffixes = VIDEO_SUFFIXES
    what = "video"
    synth_config_type = SynthClipsConfig

    def write_synthetic(self, folder: Path, config: SynthClipsConfig) -> Path:
        """SOURCE/clip_NNN.<container> and SOURCE/more/clip_NNN.<container>: `clips_per_class`
        clips of each of `classes` synthetic classes (their cues as in `videofolder`, their
        names saying nothing of them), and a README.txt that is not a sample."""
        from flowstore.synth.clips import write_clip, write_unlabelled

        return write_unlabelled(folder, config, write_clip, SYNTH_SUFFIXES, "clip")
