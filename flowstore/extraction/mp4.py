"""What an MP4-family file's box structure says that decoding it does not.

Two facts, read from the boxes' headers and the `moov` box alone (a few kilobytes; never the
media): whether the file ends inside its media (a download cut short: decoding then stops
early, or never starts), and how much of the video track's media an edit list drops at its
start. A cut made without re-encoding (`ffmpeg -ss 12 -i in.mp4 -t 10 -c copy out.mp4`) keeps
the frames back to the keyframe before the cut and an edit list that tells decoders to drop
them: the container's frame count still counts them, so a whole file decodes, say, 252 of the
300 frames it declares, which `flowstore.extraction.video` took for a file cut short.

Box layout: ISO/IEC 14496-12 (ISO base media file format), sections 4.2 (box header), 8.4.2
(`mdhd`), 8.4.3 (`hdlr`), 8.6.5 and 8.6.6 (`edts`, `elst`).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

#: The boxes a track's handler, time scale and edit list lie in.
_CONTAINERS = {b"moov", b"trak", b"edts", b"mdia"}
#: A `moov` larger than this (it indexes hours of media) is not read: the file is then taken
#: as one whose boxes tell no edit.
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
        video_dropped_s: seconds of the video track's media that its edit list skips before
            the first frame shown (0.0: none; another track's edits, such as an AAC track's
            priming samples, are not the video's).
    """

    cut_short: str | None
    video_dropped_s: float


def mp4_structure(path: Path) -> Mp4Structure:
    """The structure of the MP4-family file at `path` (an unreadable one tells nothing)."""
    moov = None
    try:
        with open(path, "rb") as file:
            end = file.seek(0, 2)
            for kind, payload, box_end in _boxes(file, 0, end):
                if box_end > end:
                    return Mp4Structure(cut_short=_MEDIA_BOXES.get(kind), video_dropped_s=0.0)
                if kind == b"moov" and box_end - payload <= MAX_MOOV_BYTES:
                    file.seek(payload)
                    moov = file.read(box_end - payload)
    except OSError:
        return Mp4Structure(cut_short=None, video_dropped_s=0.0)
    dropped = 0.0
    for trak in _children(moov or b"", b"trak"):
        track = _leaves(trak)
        handler, scale, edits = track.get(b"hdlr"), _time_scale(track.get(b"mdhd")), \
            track.get(b"elst")
        if handler is None or handler[8:12] != b"vide" or not scale or edits is None:
            continue
        # the first edit that shows media (-1: an empty edit, a delay before it)
        start = next((time for time in _elst_media_times(edits) if time >= 0), 0)
        dropped = max(dropped, start / scale)
    return Mp4Structure(cut_short=None, video_dropped_s=dropped)


def _children(payload: bytes, kind: bytes) -> Iterator[bytes]:
    """The bodies of the boxes of type `kind` directly in `payload`."""
    for found, body in _parsed(payload):
        if found == kind:
            yield body


def _leaves(trak: bytes) -> dict[bytes, bytes]:
    """The bodies of a track's boxes below its containers (`_CONTAINERS`) by type, the first
    of each type."""
    leaves: dict[bytes, bytes] = {}
    for kind, body in _parsed(trak):
        if kind in _CONTAINERS:
            for inner, inner_body in _leaves(body).items():
                leaves.setdefault(inner, inner_body)
        else:
            leaves.setdefault(kind, body)
    return leaves


def _time_scale(mdhd: bytes | None) -> int:
    """A media header's time scale (units a second), 0 where there is none."""
    if mdhd is None or len(mdhd) < 24:
        return 0
    return struct.unpack_from(">I", mdhd, 20 if mdhd[0] == 1 else 12)[0]


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


def _parsed(payload: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each box in `payload`, a box's body in memory (a `moov`'s); a box that
    runs past `payload` ends the walk."""
    for kind, start, end in _boxes(io.BytesIO(payload), 0, len(payload)):
        if end > len(payload):
            return
        yield kind, payload[start:end]


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
