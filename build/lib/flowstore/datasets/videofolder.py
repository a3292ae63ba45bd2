"""A folder of your own clips sorted by class: SOURCE/<class>/<clip>, as Hugging Face's
`videofolder` and torchvision's folder datasets read them.

The containers OpenCV's FFmpeg backend decodes: .avi .mp4 .m4v .mkv .webm .mov .mpg .mpeg .mts
.m2ts .3gp .wmv .flv, in any letter case (a file of any other suffix is not a sample). Splits,
first match (`flowstore.datasets._classfolders`): a ``--split-file`` CSV with the columns
``path,label,split`` (paths relative to SOURCE, suffix included; split train, val or test,
or training, validation, valid, testing, in any letter case); ``train/ val/ test/`` folders of class folders (no ``val/``: val drawn from train); otherwise
stratified ``--test-fraction`` and ``--val-fraction`` with ``--seed``, which move as clips are
added (a split file keeps a test set fixed). A sample's id is its path under SOURCE without the
suffix (``jumping/clip_01``), so two classes may hold files of the same name. Each sample is
the TV-HI extraction (middle frame, frames, flow)."""

from __future__ import annotations

from pathlib import Path

from flowstore.datasets._classfolders import ClassFolders
from flowstore.datasets.base import VideoDataset
from flowstore.errors import ParameterError
from flowstore.synth.clips import SynthClipsConfig

VIDEO_SUFFIXES = (".avi", ".mp4", ".m4v", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".mts",
                  ".m2ts", ".3gp", ".wmv", ".flv")
#: Class names of the synthetic source: a space, an apostrophe, a non-ASCII letter.
SYNTH_CLASSES = ("jumping jacks", "rock'n'roll", "vélo", "waving", "clapping", "sitting")
#: Containers the synthetic clips cycle through, letter case included.
SYNTH_SUFFIXES = (".avi", ".MP4", ".mkv", ".mov")


class VideoFolder(ClassFolders, VideoDataset):
    name = "videofolder"
    suffixes = VIDEO_SUFFIXES
    what = "video"
    synth_config_type = SynthClipsConfig

    def write_synthetic(self, folder: Path, config: SynthClipsConfig) -> Path:
        """SOURCE/<class>/clip_NN.<container>, the same clip names in every class, plus the
        files a real folder collects (README.txt, .DS_Store, Thumbs.db) that are not samples."""
        from flowstore.synth.clips import write_clip, write_source

        names = synth_class_names(config.classes)

        def fill(root: Path) -> None:
            (root / "README.txt").write_text("my clips\n")
            for k, name in enumerate(names):
                folder = root / name
                folder.mkdir()
                (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
                (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
                for number in range(1, config.clips_per_class + 1):
                    suffix = SYNTH_SUFFIXES[number % len(SYNTH_SUFFIXES)]
                    write_clip(folder / f"clip_{number:02d}{suffix}", k, config)

        return write_source(folder, fill)


def synth_class_names(count: int) -> list[str]:
    """The first `count` synthetic class names (more than the list: class_NN). Fewer than two
    is refused: a class-folder source of one class is refused by the build (a --source one
    level too high), so `synth` would write a source nothing can build."""
    if count < 2:
        raise ParameterError(f"--classes must be at least 2 for a class-folder source (a build "
                             f"refuses one class), got {count}")
    return [SYNTH_CLASSES[k] if k < len(SYNTH_CLASSES) else f"class_{k:02d}" for k in range(count)]
