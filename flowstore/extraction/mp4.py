"""What an MP4-family file's box structure says that decoding it does not.

Two facts, read from the boxes' headers and the `moov` box alone (a few kilobytes; never the
media): whether the file ends inside its media (a download cut short: decoding then stops
early, or never starts), and how much of the video track's media its edit list does not show.
A cut made without re-encoding (`ffmpeg -ss 12 -i in.mp4 -t 10 -c copy out.mp4`) keeps the
frames back to the keyframe before the cut and an edit list that tells decoders to drop them;
a trim of the end, or a part cut out of the middle, keeps the media whole and edits it out the
same way: the container's frame count still counts those frames, so a whole file decodes, say,
252 of the 300 frames it declares, which `flowstore.extraction.video` took for a file cut short.

Box layout: ISO/IEC 14496-12 (ISO base media file format), sections 4.2 (box header), 8.2.2
(`mvhd`), 8.4.2 (`mdhd`), 8.4.3 (`hdlr`), 8.6.5 and 8.6.6 (`edts`, `elst`).
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
        video_hidden_s: seconds of the video track's media that its edit list does not
            show: before the first frame shown, between its edits, after the last (0.0:
            none; another track's edits, such as an AAC track's priming samples, are not the
            video's).
    """

    cut_short: str | None
    video_hidden_s: float


def mp4_structure(path: Path) -> Mp4Structure:
    """The structure of the MP4-family file at `path` (an unreadable one tells nothing)."""
    moov = None
    try:
        with open(path, "rb") as file:
            end = file.seek(0, 2)
            for kind, payload, box_end in _boxes(file, 0, end):
                if box_end > end:
                    return Mp4Structure(cut_short=_MEDIA_BOXES.get(kind), video_hidden_s=0.0)
                if kind == b"moov" and box_end - payload <= MAX_MOOV_BYTES:
                    file.seek(payload)
                    moov = file.read(box_end - payload)
    except OSError:
        return Mp4Structure(cut_short=None, video_hidden_s=0.0)
    movie_scale, _ = _scale_and_duration(next(_children(moov or b"", b"mvhd"), None))
    hidden = 0.0
    for trak in _children(moov or b"", b"trak"):
        track = _leaves(trak)
        handler, edits = track.get(b"hdlr"), track.get(b"elst")
        scale, duration = _scale_and_duration(track.get(b"mdhd"))
        if handler is None or handler[8:12] != b"vide" or not scale or edits is None:
            continue
        hidden = max(hidden, _hidden_s(list(_elst_entries(edits)), scale, duration, movie_scale))
    return Mp4Structure(cut_short=None, video_hidden_s=hidden)


def _hidden_s(edits: list[tuple[int, int]], scale: int, duration: int,
              movie_scale: int) -> float:
    """Seconds of a track's media (`duration` units of `scale` a second) that its edits
    ((segment duration in the movie's `movie_scale`, media time; -1: an empty edit, a delay)
    do not show. Without the media's or the movie's time base, only what the first shown edit
    skips at the start is told."""
    shown = [(length, start) for length, start in edits if start >= 0]
    if not shown:
        return 0.0
    if not duration or not movie_scale:  # (a fragmented file's media length is in its moofs)
        return shown[0][1] / scale
    media_s = duration / scale
    # (a segment past the end of the media shows it to its end; ffmpeg shows none of a
    # segment of duration 0)
    seen = sum(max(0.0, min(length / movie_scale, media_s - start / scale))
               for length, start in shown)
    return max(0.0, media_s - seen)


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


def _scale_and_duration(header: bytes | None) -> tuple[int, int]:
    """A movie's or a media header's (`mvhd`, `mdhd`: the same layout to there) time scale
    (units a second) and duration in those units, (0, 0) where there is none."""
    if header is None or len(header) < (32 if header[:1] == b"\x01" else 20):
        return 0, 0
    return struct.unpack_from(">IQ" if header[0] == 1 else ">II", header,
                              20 if header[0] == 1 else 12)


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


def _elst_entries(body: bytes) -> Iterator[tuple[int, int]]:
    """The (`segment_duration`, `media_time`) of each entry of an `elst` box's body (version
    0: 32-bit fields, version 1: 64-bit)."""
    if len(body) < 8:
        return
    version = body[0]
    (count,) = struct.unpack_from(">I", body, 4)
    entry, time_format = (20, ">Qq") if version == 1 else (12, ">Ii")
    for index in range(count):
        at = 8 + index * entry
        if at + entry > len(body):
            return
        yield struct.unpack_from(time_format, body, at)
