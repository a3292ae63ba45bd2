"""A folder of your own images sorted by class: SOURCE/<class>/<image>, as Hugging Face's
`imagefolder` and torchvision's `ImageFolder` read them.

Images .jpg .jpeg .png .bmp .webp in any letter case; the same split rules as `videofolder`
(`flowstore datasets videofolder`: a ``--split-file`` CSV ``path,label,split``, split folders,
or stratified fractions). Each sample is the Stanford-40 extraction (`image`), so
the image CNN trains on the store.
"""

from __future__ import annotations

from pathlib import Path

from flowstore.datasets._classfolders import ClassFolders
from flowstore.datasets.base import ImageDataset
from flowstore.datasets.videofolder import synth_class_names
from flowstore.synth.clips import SynthClipsConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: Encodings the synthetic images cycle through, letter case included.
SYNTH_SUFFIXES = (".jpg", ".PNG", ".jpeg", ".bmp")


class ImageFolder(ClassFolders, ImageDataset):
    name = "imagefolder"
    suffixes = IMAGE_SUFFIXES
    what = "image"
    synth_config_type = SynthClipsConfig

    def write_synthetic(self, folder: Path, config: SynthClipsConfig) -> Path:
        """SOURCE/<class>/img_NN.<format>, the same names in every class, plus a README.txt
        and a .DS_Store that are not samples (`clips_per_class` images per class)."""
        from flowstore.synth.clips import write_image, write_source

        names = synth_class_names(config.classes)

        def fill(root: Path) -> None:
            (root / "README.txt").write_text("my images\n")
            for k, name in enumerate(names):
                folder = root / name
                folder.mkdir()
                (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
                for number in range(1, config.clips_per_class + 1):
                    suffix = SYNTH_SUFFIXES[number % len(SYNTH_SUFFIXES)]
                    write_image(folder / f"img_{number:02d}{suffix}", k, config)

        return write_source(folder, fill)
