"""What an MP4-family file's box structure says that decoding it does not.

Two facts, read from the boxes' headers and the `moov` box alone (a few kilobytes; never the
media): whether the file ends before its last box does (a download cut short: decoding then
stops early, or never starts), and whether an edit list drops media at the start of a track.
A cut made without re-encoding (`ffmpeg -ss 12 -i in.mp4 -t 10 -c copy out.mp4`) keeps the
frames back to the keyframe before the cut and an edit list that tells decoders to drop them:
the container's frame count still counts them, so a whole file decodes, say, 252 of the 300
frames it declares, which `flowstore.extraction.video` took for a file cut short.

Box layout: ISO/IEC 14496-12 (ISO base media file format), sections 4.2 (box header), 8.6.5
and 8.6.6 (`edts`, `elst`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

#: The boxes on the way from `moov` to an edit list.
_ON_THE_WAY = {b"moov": b"trak", b"trak": b"edts", b"edts": b"elst"}
#: A `moov` larger than this (it indexes hours of media) is not read: the file is then taken
#: as it decodes, as one whose boxes tell nothing.
MAX_MOOV_BYTES = 64 * 1024 * 1024


#: The top-level boxes that hold the media or its index: one of them running past the end of
#: the file is a file cut short. (Bytes after the last box, which some tools append, read as a
#: box of any type and size: never taken for one of these.)
_MEDIA_BOXES = {b"mdat": "mdat", b"moov": "moov", b"moof": "moof"}


@dataclass(frozen=True)
class Mp4Structure:
    """Attributes:
        cut_short: the media box ("mdat", "moov" or "moof") that runs past the end of the
            file, or None.
        drops_leading_media: an edit list starts a track later than its media does, so the
            decoder drops frames the container's frame count includes.
    """

    cut_short: str | None
    drops_leading_media: bool


def mp4_structure(path: Path) -> Mp4Structure:
    """The structure of the MP4-family file at `path` (an unreadable one tells nothing)."""
    moov = None
    try:
        with open(path, "rb") as file:
            end = file.seek(0, 2)
            for kind, payload, box_end in _boxes(file, 0, end):
                if box_end > end:
                    return Mp4Structure(cut_short=_MEDIA_BOXES.get(kind),
                                        drops_leading_media=False)
                if kind == b"moov" and box_end - payload <= MAX_MOOV_BYTES:
                    file.seek(payload)
                    moov = file.read(box_end - payload)
    except OSError:
        return Mp4Structure(cut_short=None, drops_leading_media=False)
    edited = moov is not None and any(time > 0 for time in _edit_starts(moov, b"moov"))
    return Mp4Structure(cut_short=None, drops_leading_media=edited)


def _boxes(file: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, where its payload starts, where it ends) of each box from `start` to `end`; the
    last may end past `end` (cut short), where the walk stops."""
    offset = start
    while end - offset >= 8:
        file.seek(offset)
        size, kind = struct.unpack(">I4s", file.read(8))
        header = 8
        if size == 1:  # a 64-bit size follows
            extended = file.read(8)
            if len(extended) < 8:  # (its header itself cut short)
                yield kind, end, end + 1
                return
            (size,), header = struct.unpack(">Q", extended), 16
        elif size == 0:  # the box runs to the end of the file
            size = end - offset
        if size < header:  # not a box: nothing more can be told
            return
        yield kind, offset + header, offset + size
        offset += size


def _edit_starts(payload: bytes, parent: bytes) -> Iterator[int]:
    """The media time each edit of each edit list below `parent` starts at (-1: an empty edit,
    a delay), in the track's media time scale."""
    offset = 0
    while len(payload) - offset >= 8:
        size, kind = struct.unpack_from(">I4s", payload, offset)
        header = 8
        if size == 1 and len(payload) - offset >= 16:
            (size,), header = struct.unpack_from(">Q", payload, offset + 8), 16
        elif size == 0:
            size = len(payload) - offset
        if size < header or offset + size > len(payload):
            return
        body = payload[offset + header:offset + size]
        if kind == _ON_THE_WAY.get(parent) == b"elst":
            yield from _elst_media_times(body)
        elif kind == _ON_THE_WAY.get(parent):
            yield from _edit_starts(body, kind)
        offset += size


def _elst_media_times(body: bytes) -> Iterator[int]:
    """The `media_time` of each entry of an `elst` box's body (version 0: 32-bit fields,
    version 1: 64-bit duration and time)."""
    if len(body) < 8:
        return
    version = body[0]
    (count,) = struct.unpack_from(">I", body, 4)
    entry, time_format = (20, ">Qq") if version == 1 else (12, ">Ii")
    for index in range(count):
        at = 8 + index * entry
        if at + entry > len(body):
            return
        yield struct.unpack_from(time_format, body, at)[1]
