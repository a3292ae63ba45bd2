"""Matroska files with the same bytes each time they are written.

FFmpeg's Matroska muxer, behind OpenCV's writer, puts random identifiers in every file it
writes (the SegmentUID, each TrackUID and the Tags' TagTrackUID that repeats it, from
`av_get_random_seed`), and OpenCV passes its writer options to the encoder only, so the
muxer's `bitexact` flag, which would fix them, cannot be asked for. A synthetic `.mkv` clip was
then other bytes each time it was written, though the same frames: a source written again (a
cache cleared) no longer matched the content hash a store recorded of it, and `build
--check-source` refused the store (found by review). `fix_identifiers` rewrites those
identifiers with values from the file's own seed and name, and the CRC-32 of each element that
holds them, in place.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

#: Element IDs (with their length marker, as written).
SEGMENT = 0x18538067
CRC32 = 0xBF
#: The elements walked into on the way to the identifiers: Segment, Info, Tracks, TrackEntry,
#: Tags, Tag, Targets (never a Cluster: the frames hold none).
MASTERS = {SEGMENT, 0x1549A966, 0x1654AE6B, 0xAE, 0x1254C367, 0x7373, 0x63C0}
#: Each random identifier, by the key its new value is drawn under: a TagTrackUID names the
#: track by its TrackUID, so the two get one value.
IDENTIFIERS = {0x73A4: b"segment", 0x73C5: b"track", 0x63C5: b"track"}


def fix_identifiers(path: Path, key: bytes) -> None:
    """Rewrite the random identifiers of the Matroska file at `path` with values drawn from
    `key` (what else determines the file: its seed and name), then the CRC-32 of each
    top-level element that holds one. A file without them is left as it is."""
    data = bytearray(path.read_bytes())
    changed = False
    for start, end in _children(data, 0, len(data)):
        if _element_id(data, start)[0] != SEGMENT:
            continue
        body = _body(data, start, end)
        for child, child_end in _children(data, *body):
            if _rewrite(data, child, child_end, key):
                _fix_crc(data, child, child_end)
                changed = True
    if changed:
        path.write_bytes(bytes(data))


def _rewrite(data: bytearray, start: int, end: int, key: bytes) -> bool:
    """Rewrite the identifiers inside the element at data[start:end]; whether there were any."""
    element, _ = _element_id(data, start)
    body_start, body_end = _body(data, start, end)
    if element in IDENTIFIERS:
        size = body_end - body_start
        value = hashlib.blake2b(IDENTIFIERS[element] + b"\0" + key).digest()
        data[body_start:body_end] = value[:size]
        return True
    if element not in MASTERS:
        return False
    found = False
    for child, child_end in _children(data, body_start, body_end):
        found |= _rewrite(data, child, child_end, key)
    return found


def _fix_crc(data: bytearray, start: int, end: int) -> None:
    """Recompute the CRC-32 that an element holds as its first child, if it does: over the
    rest of its body, stored little-endian (EBML's definition)."""
    body_start, body_end = _body(data, start, end)
    children = list(_children(data, body_start, body_end))
    if not children or _element_id(data, children[0][0])[0] != CRC32:
        return
    crc_start, crc_end = _body(data, *children[0])
    data[crc_start:crc_end] = struct.pack("<I", zlib.crc32(data[children[0][1]:body_end]))


def _children(data: bytearray, start: int, end: int):
    """(start, end) of each element in data[start:end], one after the other."""
    while start < end:
        body_start, body_end = _body(data, start, end)
        yield start, body_end
        start = body_end


def _body(data: bytearray, start: int, end: int) -> tuple[int, int]:
    """Where the body of the element at `start` lies, within `end` (an unknown size, as a
    Segment's may be written, runs to `end`)."""
    _, id_length = _element_id(data, start)
    size, size_length = _vint(data, start + id_length)
    body = start + id_length + size_length
    unknown = size == (1 << (7 * size_length)) - 1
    return body, end if unknown else min(body + size, end)


def _element_id(data: bytearray, at: int) -> tuple[int, int]:
    """An element's ID (its length marker kept, as IDs are written) and its length."""
    length = _vint_length(data[at])
    return int.from_bytes(data[at:at + length], "big"), length


def _vint(data: bytearray, at: int) -> tuple[int, int]:
    """An EBML variable-length integer's value (its length marker removed) and its length."""
    length = _vint_length(data[at])
    value = int.from_bytes(data[at:at + length], "big")
    return value & ((1 << (7 * length)) - 1), length


def _vint_length(first: int) -> int:
    if not first:
        raise ValueError("not a Matroska element (a length of more than 8 bytes)")
    return 9 - first.bit_length()
