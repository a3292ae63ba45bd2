"""TV Human Interactions (Patron-Perez et al., BMVC 2010): 4 interaction classes in TV clips.

Source layout, as the dataset ships: ``{class}_{id:04d}.avi`` for the four classes (ids 1..50)
and ``negative_{id:04d}.avi`` (ids 1..100) in one folder, with ``readme.txt`` naming the two
official sets. Split: test = set 1; set 2 gives train and val (10%, stratified,
fixed seed). Negatives are left out. When a source has no readme.txt, the official sets built
into flowstore (copied from the dataset's readme) are used.
"""

from __future__ import annotations

import re
from pathlib import Path

from flowstore.datasets.base import SourceSizes, VideoDataset
from flowstore.errors import SourceLayoutError
from flowstore.manifest import Manifest, build_manifest

CLASSES = ("handShake", "highFive", "hug", "kiss")
README = "readme.txt"

_SET1 = {
    "handShake": "2,14,15,16,18,19,20,21,24,25,26,27,28,32,40,41,42,43,44,45,46,47,48,49,50",
    "highFive": "1,6,7,8,9,10,11,12,13,23,24,25,27,28,29,30,31,32,33,34,35,44,45,47,48",
    "hug": "2,3,4,11,12,15,16,17,18,20,21,27,29,30,31,32,33,34,35,36,42,44,46,49,50",
    "kiss": "1,7,8,9,10,11,12,13,14,16,17,18,22,23,24,26,29,31,35,36,38,39,40,41,42",
}
_SET2 = {
    "handShake": "1,3,4,5,6,7,8,9,10,11,12,13,17,22,23,29,30,31,33,34,35,36,37,38,39",
    "highFive": "2,3,4,5,14,15,16,17,18,19,20,21,22,26,36,37,38,39,40,41,42,43,46,49,50",
    "hug": "1,5,6,7,8,9,10,13,14,19,22,23,24,25,26,28,37,38,39,40,41,43,45,47,48",
    "kiss": "2,3,4,5,6,15,19,20,21,25,27,28,30,32,33,34,37,43,44,45,46,47,48,49,50",
}
#: The official sets: {set number: {class: sorted clip numbers}}.
OFFICIAL_SETS: dict[int, dict[str, list[int]]] = {
    1: {c: [int(i) for i in ids.split(",")] for c, ids in _SET1.items()},
    2: {c: [int(i) for i in ids.split(",")] for c, ids in _SET2.items()},
}

# readme.txt spells the classes in words: "Hand shake", "High five", "Hug", "Kiss" (read
# without spaces, hyphens and case, so "High-five" is the same class).
_README_NAMES = {"handshake": "handShake", "highfive": "highFive", "hug": "hug", "kiss": "kiss"}
_README_WORDS = {"handShake": "Hand shake", "highFive": "High five", "hug": "Hug", "kiss": "Kiss"}
_SET_LINE = re.compile(r"^\s*SET\s+(\d+)\s*:", re.IGNORECASE)
_CLASS_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z _-]*?)\s*->\s*\{([\d,\s]*)\}")


def sample_id(class_name: str, number: int) -> str:
    return f"{class_name}_{number:04d}"


def parse_readme(text: str, where: str = repr(README)) -> dict[int, dict[str, list[int]]]:
    """The class sets that the dataset's readme.txt lists under "SET 1:" and "SET 2:".

    Raises:
        SourceLayoutError: a class line's braces hold something other than clip numbers
            separated by commas (`{2 14,15}`, a comma lost in an edit), or a set's header is
            there twice (the second block's lines replaced the first's, unsaid), named by
            its line.
    """
    sets: dict[int, dict[str, list[int]]] = {}
    current: int | None = None
    for line_number, line in enumerate(text.splitlines(), start=1):
        if match := _SET_LINE.match(line):
            current = int(match.group(1))
            if current in sets:
                raise SourceLayoutError(f"{where} line {line_number}: a second 'SET {current}:' "
                                        f"(each set is listed once)")
            sets[current] = {}
        elif current is not None and (match := _CLASS_LINE.match(line)):
            name = _README_NAMES.get(re.sub(r"[ _-]", "", match.group(1)).lower())
            if name:  # (a class listed twice in a set: both lines, for `check_sets` to see)
                pieces = [piece.strip() for piece in match.group(2).split(",") if piece.strip()]
                if bad := next((piece for piece in pieces if not piece.isdecimal()), None):
                    raise SourceLayoutError(
                        f"{where} line {line_number}: {bad!r} is not a clip number (the "
                        f"numbers in braces are separated by commas)")
                numbers = sets[current].setdefault(name, [])
                numbers += map(int, pieces)
                numbers.sort()
    return sets


def check_sets(sets: dict[int, dict[str, list[int]]], where: str) -> None:
    """Refuse sets that do not split the clips in two: SET 1 (test) and SET 2 (train and val)
    must each list every class, and no clip may be listed twice, in one set or in both (it
    would be a sample twice, trained on and tested on). `where` names the readme.

    Raises:
        SourceLayoutError: naming the first such line or clip.
    """
    for number in (1, 2):
        if number not in sets:
            raise SourceLayoutError(f"{where} does not list 'SET 1:' and 'SET 2:'")
        for name in CLASSES:
            if name not in sets[number]:
                raise SourceLayoutError(
                    f"{where}: SET {number} has no line '{_README_WORDS[name]} -> {{...}}' "
                    f"(one line per class, its clip numbers in braces)")
            if not sets[number][name]:  # (its split would lack the class, silently)
                raise SourceLayoutError(f"{where}: SET {number} lists no {_README_WORDS[name]} "
                                        f"clip (its line's braces are empty)")
    for name in CLASSES:
        seen: dict[int, int] = {}
        for number in (1, 2):
            for clip in sets[number][name]:
                if clip in seen:
                    also = (f"twice in SET {number}" if seen[clip] == number
                            else "in both SET 1 and SET 2")
                    raise SourceLayoutError(f"{where} lists {_README_WORDS[name]} clip {clip} "
                                            f"({sample_id(name, clip)}) {also}: a clip is in "
                                            f"one set, once")
                seen[clip] = number


def format_readme(sets: dict[int, dict[str, list[int]]]) -> str:
    """A readme.txt naming `sets` in the dataset's own format (what `parse_readme` reads)."""
    lines = ["TV Human Interaction Dataset (synthetic stand-in written by flowstore synth)", ""]
    for number in sorted(sets):
        lines.append(f"SET {number}:")
        lines += [f"\t{_README_WORDS[c]}\t\t-> {{{','.join(map(str, ids))}}}" for c, ids in sets[number].items()]
        lines.append("")
    return "\n".join(lines)


def manifest_from_sets(sets: dict[int, dict[str, list[int]]]) -> Manifest:
    """Test = set 1; set 2 split into train and val (10%, stratified by class, fixed seed)."""
    as_ids = {n: {c: [sample_id(c, i) for i in sets.get(n, {}).get(c, [])] for c in CLASSES}
              for n in (1, 2)}
    return build_manifest(CLASSES, train_pool=as_ids[2], test=as_ids[1])


class TVHI(VideoDataset):
    name = "tvhi"

    def manifest(self, source: Path) -> Manifest:
        self.check_source_folder(source)
        readme = source / README
        try:
            text = readme.read_bytes() if readme.is_file() else None
        except OSError as exc:
            raise SourceLayoutError(f"cannot read {str(readme)!r}: {exc.strerror}") from None
        # (UTF-8 whatever the locale, a BOM dropped: a `SET 1:` first line is still one)
        sets = (OFFICIAL_SETS if text is None
                else parse_readme(text.decode("utf-8-sig", errors="replace"), repr(str(readme))))
        check_sets(sets, repr(str(readme)))
        return manifest_from_sets(sets)

    def source_file(self, source: Path, sample_id: str) -> Path:
        return source / f"{sample_id}.avi"

    def source_files(self, source: Path, manifest: Manifest) -> SourceSizes:
        sizes = super().source_files(source, manifest)
        readme = source / README
        if readme.is_file():
            sizes[README] = readme.stat().st_size
        return sizes
