"""What an AVI's index says that decoding it does not: how many of its video frames are drop
frames.

Some encoders keep a constant frame rate by writing zero-size video chunks ("drop frames": the
frame before is shown again); the container's frame count counts them, and decoding yields
none. In the middle of a clip, the frames still run to its end, which
`flowstore.extraction.video` tells; a clip that ends on them (a still ending) decoded short of
its count and its duration both, and was refused as cut short. The legacy index (`idx1`, at the
end of the file) lists every chunk with its size, so the drop frames are counted there: a file
cut short has lost its index, and tells none.

Layout: the AVI RIFF form (Microsoft, "AVI RIFF File Reference"): top-level chunks `LIST hdrl`,
`LIST movi`, then `idx1`, entries of 16 bytes (chunk id, flags, offset, size), a video chunk's
id being its stream number and `dc` (compressed) or `db` (uncompressed). An OpenDML file (past
1 GB) continues in `RIFF AVIX` forms its legacy index does not cover: taken as telling none.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

#: An `idx1` entry.
_ENTRY = np.dtype([("id", "S4"), ("flags", "<u4"), ("offset", "<u4"), ("size", "<u4")])
#: An index larger than this (hours of chunks) is not read: the file then tells no drop frame.
MAX_INDEX_BYTES = 64 * 1024 * 1024


def avi_drop_frames(path: Path) -> int:
    """The number of zero-size video chunks the AVI file at `path` indexes (0: none, or no
    readable legacy index)."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
                return 0
            length = file.seek(0, 2)
            end = min(8 + struct.unpack_from("<I", head, 4)[0], length)
            if length > end + 8:
                file.seek(end)
                if file.read(4) == b"RIFF":  # (an OpenDML continuation)
                    return 0
            offset = 12
            while end - offset >= 8:
                file.seek(offset)
                kind, size = struct.unpack("<4sI", file.read(8))
                if kind == b"idx1":
                    if size > MAX_INDEX_BYTES or offset + 8 + size > end:
                        return 0
                    entries = np.frombuffer(file.read(size - size % _ENTRY.itemsize), _ENTRY)
                    video = np.char.endswith(entries["id"], b"dc") | \
                        np.char.endswith(entries["id"], b"db")
                    return int(np.count_nonzero(video & (entries["size"] == 0)))
                offset += 8 + size + (size & 1)
    except OSError:
        return 0
    return 0
