"""flowstore/extraction/mp4.py on the box layouts real MP4s have and OpenCV's writer does not
(64-bit and size-0 boxes, version-1 edit lists, several tracks): each rewritten from one OpenCV
file's boxes (its moov last, so that rewriting it moves no chunk). (From a mutation review:
the one file of `test_flowstore_extraction.py` left each of these unchecked.)"""
import copy
import struct

import numpy as np
import pytest

from flowstore.errors import SampleError
from flowstore.extraction._cv import cv2
from flowstore.extraction.mp4 import Mp4Structure, mp4_structure
from flowstore.extraction.video import _check_not_cut_short, extract_video
from flowstore.params import VideoParams

_CONTAINERS = {b"moov", b"trak", b"edts", b"mdia"}


def _parse(data):
    boxes, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        body = data[offset + 8:offset + size]
        boxes.append([kind, _parse(body) if kind in _CONTAINERS else body])
        offset += size
    return boxes


def _write(boxes, wide=(), size_0_last=False):
    data = b""
    for position, (kind, body) in enumerate(boxes):
        payload = _write(body, wide) if isinstance(body, list) else body
        if size_0_last and position == len(boxes) - 1:
            data += struct.pack(">I4s", 0, kind) + payload
        elif kind in wide:
            data += struct.pack(">I4sQ", 1, kind, len(payload) + 16) + payload
        else:
            data += struct.pack(">I4s", len(payload) + 8, kind) + payload
    return data


def _find(boxes, kind):
    for box in boxes:
        if box[0] == kind:
            yield box
        if isinstance(box[1], list):
            yield from _find(box[1], kind)


def _elst(entries, version=0):
    body = struct.pack(">B3xI", version, len(entries))
    for duration, time in entries:
        body += struct.pack(">Qq" if version == 1 else ">Ii", duration, time) + b"\0\1\0\0"
    return body


@pytest.fixture(scope="module")
def opencv_mp4(tmp_path_factory):
    """(bytes, media time scale, elst duration) of a 30-frame 10 fps OpenCV MP4: ftyp, free,
    mdat, moov (the moov last, so that rewriting it moves no chunk)."""
    path = tmp_path_factory.mktemp("mp4") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for index in range(30):
        frame = np.full((48, 64, 3), index * 8, np.uint8)
        frame[10:20, index:index + 10] = 255
        writer.write(frame)
    writer.release()
    data = path.read_bytes()
    boxes = _parse(data)
    assert [box[0] for box in boxes] == [b"ftyp", b"free", b"mdat", b"moov"]
    (scale,) = struct.unpack_from(">I", next(_find(boxes, b"mdhd"))[1], 12)
    (duration,) = struct.unpack_from(">I", next(_find(boxes, b"elst"))[1], 8)
    return data, scale, duration


def _version_1(header):
    """An `mvhd` or `mdhd` body (version 0) as version 1 writes it: 64-bit times and duration,
    so the time scale sits 8 bytes further in (long media, and some tools, write these)."""
    assert header[0] == 0
    created, modified, scale, duration = struct.unpack_from(">IIII", header, 4)
    return b"\1" + header[1:4] + struct.pack(">QQIQ", created, modified, scale, duration) + \
        header[20:]


def _variant(opencv_mp4, tmp_path, name, *, entries=None, version=0, wide=(), size_0_last=False,
             mdat_64=False, tail=b"", sound_entries=None, headers_64=False):
    data, _, _ = opencv_mp4
    boxes = _parse(data)
    if headers_64:
        for kind in (b"mvhd", b"mdhd"):
            for box in _find(boxes, kind):
                box[1] = _version_1(box[1])
    if sound_entries is not None:  # a second track, of sound, with an edit list of its own
        moov = next(_find(boxes, b"moov"))[1]
        sound = copy.deepcopy(next(_find(moov, b"trak")))
        hdlr = next(_find([sound], b"hdlr"))
        hdlr[1] = hdlr[1][:8] + b"soun" + hdlr[1][12:]
        next(_find([sound], b"elst"))[1] = _elst(sound_entries)
        moov.append(sound)
    if entries is not None:
        next(_find(boxes, b"elst"))[1] = _elst(entries, version)
    if mdat_64:  # the free box before mdat becomes mdat's 64-bit size (as ffmpeg does past 4 GB)
        boxes = [boxes[0], *boxes[2:]]
        wide = (*wide, b"mdat")
    path = tmp_path / name
    path.write_bytes(_write(boxes, wide, size_0_last) + tail)
    return path


def _cut(opencv_mp4):  # (an edit starting 10 frames into the media)
    _, scale, duration = opencv_mp4
    return [(duration * 2 // 3, scale)]


@pytest.mark.parametrize("layout", [
    {}, {"mdat_64": True}, {"wide": (b"trak",)}, {"wide": (b"edts", b"elst")},
    {"size_0_last": True}, {"version": 1}, {"version": 1, "headers_64": True}])
def test_an_edit_list_dropping_leading_media_is_found_in_any_box_layout(opencv_mp4, tmp_path,
                                                                         layout):
    path = _variant(opencv_mp4, tmp_path, "cut.mp4", entries=_cut(opencv_mp4), **layout)
    assert mp4_structure(path) == Mp4Structure(cut_short=None, video_hidden_s=1.0)
    _check_not_cut_short(path, 20, 30, 10.0, 1900.0)  # (20 of the 30 it counts: all it shows)
    with pytest.raises(SampleError, match="decodes 5 of the 20 frames"):  # (held to those 20)
        _check_not_cut_short(path, 5, 30, 10.0, 400.0)


@pytest.mark.parametrize("entries, version", [
    (None, 0),  # OpenCV's own: one edit from media time 0
    ("zero", 1),  # the same as a version 1 (64-bit) elst
    ("delayed", 0),  # an empty edit (-1: a delay before the media starts), then from time 0
    ("delayed", 1),
])
def test_an_edit_list_that_drops_nothing_leaves_the_frame_count_check_on(opencv_mp4, tmp_path,
                                                                          entries, version):
    _, _, duration = opencv_mp4
    entries = {None: None, "zero": [(duration, 0)],
               "delayed": [(1000, -1), (duration, 0)]}[entries]
    path = _variant(opencv_mp4, tmp_path, "whole.mp4", entries=entries, version=version)
    assert mp4_structure(path) == Mp4Structure(cut_short=None, video_hidden_s=0.0)
    with pytest.raises(SampleError, match="decodes 5 of the 30 frames"):
        _check_not_cut_short(path, 5, 30, 10.0, 400.0)


def test_only_the_video_tracks_edits_count_and_only_as_much_as_they_drop(opencv_mp4, tmp_path):
    """Every edit starting past media time 0, of any track, turned the frame count check off
    (from review): an AAC track's priming samples (an edit 1024 samples in) and a B-frame
    stream's reorder delay (2 frames) are what ffmpeg writes into most MP4s, and a damaged
    stream inside whole boxes then passed as a short clip."""
    _, scale, duration = opencv_mp4
    sound = _variant(opencv_mp4, tmp_path, "sound.mp4", sound_entries=[(duration, 1024)])
    assert mp4_structure(sound).video_hidden_s == 0.0
    delayed = _variant(opencv_mp4, tmp_path, "delay.mp4", entries=[(duration, scale // 5)])
    assert mp4_structure(delayed).video_hidden_s == pytest.approx(0.2)
    for path, counted in ((sound, 30), (delayed, 28)):
        with pytest.raises(SampleError, match=f"decodes 5 of the {counted} frames"):
            _check_not_cut_short(path, 5, 30, 10.0, 400.0)


@pytest.mark.parametrize("edit, hidden, shown", [
    ("end", 1.5, 15),  # a trim of the end without re-encoding: the first half shown
    ("middle", 1.0, 20),  # a part cut out of the middle: two edits
    ("past", 1.0, 20),  # an edit 1 s in, longer than the media left: shown to its end
], ids=["end-trimmed", "middle-cut", "past-the-end"])
def test_media_an_edit_list_hides_after_its_start_is_not_counted(opencv_mp4, tmp_path, edit,
                                                                  hidden, shown):
    """Only what an edit list skipped at the start was taken off the declared count (found by
    review): an intact clip trimmed at its end, or with a part cut out, decodes the frames it
    shows (ffmpeg honours the edits), and was refused as "cut short"."""
    _, scale, duration = opencv_mp4
    entries = {"end": [(duration // 2, 0)],
               "middle": [(duration // 3, 0), (duration // 3, 2 * scale)],
               "past": [(duration * 2, scale)]}[edit]
    path = _variant(opencv_mp4, tmp_path, "trimmed.mp4", entries=entries)
    assert mp4_structure(path).video_hidden_s == pytest.approx(hidden)
    _check_not_cut_short(path, shown, 30, 10.0, (shown - 1) * 100.0)
    with pytest.raises(SampleError, match=f"decodes 5 of the {shown} frames"):
        _check_not_cut_short(path, 5, 30, 10.0, 400.0)
    assert extract_video(path, VideoParams(size=16, steps=4)).n_frames == shown


@pytest.mark.parametrize("tail", [
    struct.pack(">I4sQ", 1, b"mdat", 10_000) + bytes(100),  # a 64-bit size past the end
    struct.pack(">I4s", 1, b"mdat") + b"\0\0",  # its 64-bit size itself cut short
    struct.pack(">I4s", 109, b"mdat") + bytes(100),  # one byte short
])
def test_a_media_box_running_past_the_end_is_cut_short(opencv_mp4, tmp_path, tail):
    path = _variant(opencv_mp4, tmp_path, "short.mp4", tail=tail)
    assert mp4_structure(path).cut_short == "mdat"
    with pytest.raises(SampleError, match="ends inside its mdat box"):
        _check_not_cut_short(path, 30, 30, 10.0, 2900.0)
