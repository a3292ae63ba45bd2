"""Extraction: the contract's positions, an independent re-computation, and flow direction."""

from __future__ import annotations

import numpy as np
import pytest

from flowstore.errors import SampleError
from flowstore.extraction._cv import cv2
from flowstore.extraction.video import (CUT_SHORT_FRAMES, CUT_SHORT_SHARE, _check_not_cut_short,
                                        extract_video, flow_positions, frames_needed,
                                        store_flow)
from flowstore.params import VideoParams
from flowstore.synth.tvhi import write_avi
from tests.reference import reference_tvhi

#: The first bytes of an AVI (a container that counts its frames) and of a Matroska file.
AVI_HEAD = b"RIFF\x00\x10\x00\x00AVI LIST"
MATROSKA_HEAD = b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81"


def test_flow_positions_follow_the_contract():
    assert flow_positions(79, 16).tolist() == np.round(np.linspace(0, 77, 16)).astype(int).tolist()
    assert flow_positions(2, 16).tolist() == [0] * 16  # shortest clip: the one pair, repeated
    assert flow_positions(22, 16)[-1] == 20  # last pair is (n-2, n-1)
    with pytest.raises(ValueError):
        flow_positions(1, 16)
    assert frames_needed(10, VideoParams(steps=2)) == {0, 1, 8, 9, 5}


@pytest.mark.parametrize("clip", ["handShake_0001", "kiss_0002", "hug_0003"])
def test_extraction_equals_an_independent_computation(tiny_tvhi_source, clip):
    path = tiny_tvhi_source / f"{clip}.avi"
    got = extract_video(path, VideoParams(size=40, steps=5))
    want = reference_tvhi(path, size=40, steps=5)
    np.testing.assert_array_equal(got.middle_frame, want["middle_frame"])
    np.testing.assert_array_equal(got.frames, want["frames"])
    assert got.flow.dtype == np.float16
    # bit for bit what numpy's cast of the reference's float32 flow gives
    np.testing.assert_array_equal(got.flow.view(np.uint16),
                                  want["flow"].astype(np.float16).view(np.uint16))


def test_float16_flow_conversion_is_numpys_cast_bit_for_bit():
    """OpenCV converts (fast); numpy defines the result: ties to even, signed zeros,
    subnormals, overflow to infinity, NaN."""
    rng = np.random.default_rng(3)
    flow = (rng.standard_normal((24, 24, 2)) * np.exp(rng.uniform(-25, 12, (24, 24, 2))))
    flow = flow.astype(np.float32)
    special = [0.0, -0.0, 65504, 65519, 65520, 1e30, -1e30, 2.98e-8, 2.99e-8, -6e-5, 2049,
               2051, np.inf, -np.inf, np.nan, 0.1]
    flow.flat[:len(special)] = special
    out = np.full((2, 24, 24, 2), 7, np.float16)
    store_flow(flow, out[1], VideoParams())
    with np.errstate(over="ignore"):
        want = flow.astype(np.float16)
    np.testing.assert_array_equal(out[1].view(np.uint16), want.view(np.uint16))
    assert (out[0] == 7).all()  # written in place, nothing else touched


def _translating_clip(path, dx: int, dy: int, n_frames=12, size=128) -> None:
    """A smooth random texture seen through a window that slides by (-dx, -dy) per frame,
    so the content moves by (+dx, +dy) pixels per frame. Lossless FFV1, so flow sees no codec noise."""
    rng = np.random.default_rng(7)
    big = cv2.resize(rng.uniform(0, 255, (60, 60)).astype(np.float32), (size * 3, size * 3),
                     interpolation=cv2.INTER_CUBIC)
    big = np.clip(big, 0, 255).astype(np.uint8)
    frames = []
    for t in range(n_frames):
        y0, x0 = size - dy * t, size - dx * t
        gray = big[y0:y0 + size, x0:x0 + size]
        frames.append(np.repeat(gray[..., None], 3, axis=2))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25, (size, size))
    for frame in frames:
        writer.write(frame)
    writer.release()


@pytest.mark.parametrize("dx,dy", [(2, 0), (-3, 0), (0, 2), (2, -1)])
def test_flow_of_a_known_translation_has_the_right_axis_sign_and_size(tmp_path, dx, dy):
    path = tmp_path / "moving.avi"
    _translating_clip(path, dx, dy)
    flow = extract_video(path, VideoParams(size=128, steps=4, flow_dtype="float32")).flow
    mean = flow[:, 24:-24, 24:-24].mean(axis=(0, 1, 2))  # away from borders
    np.testing.assert_allclose(mean, [dx, dy], atol=0.25)
    # Resizing to half the side halves the motion in pixels of the resized frame.
    half = extract_video(path, VideoParams(size=64, steps=4, flow_dtype="float32")).flow
    np.testing.assert_allclose(half[:, 12:-12, 12:-12].mean(axis=(0, 1, 2)), [dx / 2, dy / 2],
                               atol=0.25)


def test_bad_videos_raise_sample_errors_with_reasons(tmp_path):
    (tmp_path / "garbage.avi").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "empty.avi").write_bytes(b"")
    write_avi(tmp_path / "one.avi", np.zeros((1, 32, 32, 3), np.uint8))
    params = VideoParams(size=16, steps=2)
    with pytest.raises(SampleError, match="missing"):
        extract_video(tmp_path / "absent.avi", params)
    with pytest.raises(SampleError, match="empty"):
        extract_video(tmp_path / "empty.avi", params)
    with pytest.raises(SampleError, match="cannot open|decodable"):
        extract_video(tmp_path / "garbage.avi", params)
    with pytest.raises(SampleError, match="1 decodable frame"):
        extract_video(tmp_path / "one.avi", params)


def test_a_clip_cut_short_is_refused_not_stored_as_its_first_part(tmp_path):
    """A truncated download decodes a few frames of the many its container declares; taken as
    the clip it was a good sample holding flows of its first part only. A clip that decodes
    within a few frames of its count (real ones do: -2 to +1 on TV-HI) still extracts."""
    frames = np.random.default_rng(2).integers(0, 255, (40, 48, 48, 3), dtype=np.uint8)
    whole = tmp_path / "whole.avi"
    write_avi(whole, frames)
    data = whole.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[:len(data) // 2])
    params = VideoParams(size=16, steps=4)
    assert extract_video(whole, params).n_frames == 40
    with pytest.raises(SampleError, match=r"cut.avi decodes \d+ of the 40 frames its container "
                                          r"declares, [\d.]+ s of 1.60 s: the file is cut "
                                          r"short or damaged"):
        extract_video(tmp_path / "cut.avi", params)
    (tmp_path / "few.avi").write_bytes(AVI_HEAD)  # (no file: no frame index, no check)
    (tmp_path / "few.mkv").write_bytes(MATROSKA_HEAD)
    _check_not_cut_short(tmp_path / "few.avi", 36, 40, 25.0, 35 * 40.0)  # within the slack
    _check_not_cut_short(tmp_path / "few.mkv", 3, 40, 25.0, 80.0)  # an estimated count
    # The container is told by its bytes, not its name: the same cut AVI named as a 3GP or a
    # Matroska file was stored as its first part.
    for name in ("cut.3gp", "cut.mkv", "cut"):
        (tmp_path / name).write_bytes(data[:len(data) // 2])
        with pytest.raises(SampleError, match="the file is cut short or damaged"):
            extract_video(tmp_path / name, params)


def _mjpg_clip_with_garbled_frames(path, garbled: set[int], n_frames=30):
    """An MJPG AVI (each frame one JPEG chunk of its own, `00dc`) whose frames `garbled` have
    their JPEG data replaced by noise: frames FFmpeg fails to decode, those after them intact."""
    rng = np.random.default_rng(5)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 64))
    for _ in range(n_frames):
        writer.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    position, index, end = data.find(b"movi"), 0, data.rfind(b"idx1")  # (the index: chunks too)
    while 0 <= (chunk := data.find(b"00dc", position, end)):
        size = int.from_bytes(data[chunk + 4:chunk + 8], "little")
        if index in garbled:  # (its first two bytes, the JPEG start marker, kept)
            data[chunk + 10:chunk + 8 + size] = rng.integers(0, 255, size - 2, np.uint8).tobytes()
        index, position = index + 1, chunk + 8 + size
    assert index == n_frames
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("garbled", [26, 0])
def test_a_clip_with_a_frame_that_does_not_decode_is_refused_as_damaged(tmp_path, garbled):
    """FFmpeg fails a frame that does not decode as it fails the end of the file: a clip whose
    frame 26 of 30 was damaged was stored as its first 26 frames (within the cut-short slack),
    a good sample; one whose frame 0 was, refused as "cut short" though 29 frames decode
    (found by review)."""
    params = VideoParams(size=16, steps=4)
    whole = tmp_path / "whole.avi"
    _mjpg_clip_with_garbled_frames(whole, set())
    assert extract_video(whole, params).n_frames == 30
    damaged = tmp_path / "damaged.avi"
    _mjpg_clip_with_garbled_frames(damaged, {garbled})
    with pytest.raises(SampleError, match=rf"^frame {garbled} of damaged.avi does not decode, "
                                          rf"and a later one does: the file is damaged$"):
        extract_video(damaged, params)


@pytest.mark.parametrize("n, declared, refused", [
    # the slack is the larger of CUT_SHORT_FRAMES frames and CUT_SHORT_SHARE of the count:
    (93, 100, False), (89, 100, True),  # a long clip: the share (10 frames) is the larger
    (17, 20, False), (14, 20, True),  # a short one: the frames (5; the share is 2) are
])
def test_a_clip_a_few_percent_short_is_no_clip_cut_short(tmp_path, n, declared, refused):
    """A clip decoding 93 of the 100 frames its AVI declares, to 93 frames' time, extracts (the
    smaller of the two slacks refused it, where the cut-short test above has them agree)."""
    assert (CUT_SHORT_FRAMES, CUT_SHORT_SHARE) == (5, 0.10)  # (the cases are chosen for these)
    (tmp_path / "clip.avi").write_bytes(AVI_HEAD)
    clip = (tmp_path / "clip.avi", n, declared, 25.0, (n - 1) * 40.0)  # (25 fps: 40 ms a frame)
    if refused:
        with pytest.raises(SampleError, match=rf"decodes {n} of the {declared} frames"):
            _check_not_cut_short(*clip)
    else:
        _check_not_cut_short(*clip)


@pytest.mark.parametrize("last_ms, refused", [(3560.0, False), (3520.0, True)])
def test_a_clip_far_short_by_count_but_not_by_time_is_no_clip_cut_short(tmp_path, last_ms,
                                                                        refused):
    """89 of 100 frames is far short by count (the slack is 10); whether the clip is cut short
    is then told by time, through the last frame's duration: decoded to 3.60 s of 4.00 s it is
    within the slack (as an AVI whose index is lost and whose drop frames lie inside the clip),
    to 3.56 s it is not."""
    (tmp_path / "clip.avi").write_bytes(AVI_HEAD)
    clip = (tmp_path / "clip.avi", 89, 100, 25.0, last_ms)
    if refused:
        with pytest.raises(SampleError, match=r"decodes 89 of the 100 frames .* 3\.56 s of 4\.00"):
            _check_not_cut_short(*clip)
    else:
        _check_not_cut_short(*clip)


def _mp4(path, frames: int, fps: float = 10.0) -> np.ndarray:
    """An MP4 (OpenCV's `mp4v` writer) of `frames` frames, each frame's brightness its index;
    returns the frames."""
    clip = np.zeros((frames, 48, 64, 3), np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    for index in range(frames):
        clip[index] = index * 8
        clip[index, 10:20, index:index + 10] = 255
        writer.write(clip[index])
    writer.release()
    return clip


def _drop_leading_frames(path, skip: int, frames: int, fps: float = 10.0) -> None:
    """Start the edit list OpenCV's MP4 writer leaves (one edit, from media time 0) `skip`
    frames into the media, as a cut made without re-encoding (`ffmpeg -ss ... -c copy`) leaves
    its file: decoders drop those frames, which the sample table still counts."""
    import struct

    data = bytearray(path.read_bytes())
    elst = data.index(b"elst") - 4
    assert data[elst + 8] == 0 and struct.unpack_from(">I", data, elst + 12)[0] == 1
    (media_scale,) = struct.unpack_from(">I", data, data.index(b"mdhd") - 4 + 20)
    (duration,) = struct.unpack_from(">I", data, elst + 16)
    struct.pack_into(">Ii", data, elst + 16, duration * (frames - skip) // frames,
                     round(skip * media_scale / fps))
    path.write_bytes(bytes(data))


def test_an_mp4_cut_without_re_encoding_extracts_and_one_cut_short_is_refused(tmp_path):
    """A lossless cut keeps the frames back to the keyframe before it and an edit list telling
    decoders to drop them; the container still counts them. Such a whole file decoding 252 of
    the 300 frames it declares was refused as cut short (from review). Its media box running
    past the end of the file is what tells an MP4 cut short, and bytes appended after its last
    box are not that."""
    import struct

    clip = tmp_path / "cut.mp4"
    frames = _mp4(clip, 30)
    _drop_leading_frames(clip, 10, 30)
    capture = cv2.VideoCapture(str(clip))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 30  # (the count the edit list does not cut)
    capture.release()
    params = VideoParams(size=16, steps=4)
    sample = extract_video(clip, params)
    assert sample.n_frames == 20
    # its middle frame is the edited clip's (frame 10 + 20 // 2 of the media), not the media's
    assert abs(float(sample.middle_frame.mean()) - float(frames[20].mean())) < 4

    appended = tmp_path / "appended.mp4"
    _mp4(appended, 30)
    appended.write_bytes(appended.read_bytes() + bytes(range(7, 200)))  # (a tool's trailer)
    assert extract_video(appended, params).n_frames == 30
    cut = tmp_path / "mdat.mp4"  # a media box that runs past the end: a download cut short
    _mp4(cut, 30)
    cut.write_bytes(cut.read_bytes() + struct.pack(">I4s", 10_000, b"mdat") + bytes(100))
    with pytest.raises(SampleError, match="mdat.mp4 ends inside its mdat box: the file is cut "
                                          "short or damaged"):
        extract_video(cut, params)


@pytest.mark.parametrize("head, indexed", [
    (AVI_HEAD, True), (b"RIFF\x00\x10\x00\x00WAVEfmt ", False),
    (b"\x00\x00\x00\x18ftypmp42", True), (b"\x00\x00\x00\x14ftyp3gp4", True),
    (b"\x00\x00\x00\x08wide\x00\x00", True), (MATROSKA_HEAD, False),
    (b"", False)])
def test_the_containers_that_count_their_frames_are_told_by_their_first_bytes(
        tmp_path, head, indexed):
    from flowstore.extraction.video import indexed_container

    (tmp_path / "clip.mkv").write_bytes(head)
    assert (indexed_container(tmp_path / "clip.mkv") is not None) is indexed
    assert indexed_container(tmp_path / "missing.mp4") is None


def _with_drop_frames(path, dropped_chunk, video_kind: bytes = b"dc") -> int:
    """Make the video chunks of an MJPG AVI for whose number `dropped_chunk` is true zero-size
    "drop frames" (as VirtualDub and mencoder write to keep a constant rate): the header still
    counts them, FFmpeg decodes none, the frames after them keep their times. Returns how many
    were dropped. `video_kind` b"db": every video chunk then says it is uncompressed (`00db`), as
    an uncompressed AVI's are."""
    import struct

    data = bytearray(path.read_bytes())
    movi, index = data.find(b"movi"), data.find(b"idx1")
    position, chunk, dropped = movi + 4, 0, {}
    while position < index - 8:
        kind, size = bytes(data[position:position + 4]), struct.unpack(
            "<I", data[position + 4:position + 8])[0]
        if kind == b"00dc":
            if dropped_chunk(chunk) and size >= 8:
                data[position + 4:position + 16] = (struct.pack("<I", 0) + b"JUNK"
                                                    + struct.pack("<I", size - 8))
                dropped[position - movi] = True
            chunk += 1
        position += 8 + size + (size & 1)
    for entry in range(struct.unpack("<I", data[index + 4:index + 8])[0] // 16):
        at = index + 8 + 16 * entry
        if struct.unpack("<I", data[at + 8:at + 12])[0] in dropped:
            data[at + 12:at + 16] = struct.pack("<I", 0)
    if video_kind != b"dc":  # (in the chunks and in the index: 4-byte aligned ids)
        data = bytearray(data[:movi] + data[movi:].replace(b"00dc", b"00" + video_kind))
    path.write_bytes(bytes(data))
    return len(dropped)


@pytest.mark.parametrize("kind", [b"dc", b"db"], ids=["compressed", "uncompressed"])
@pytest.mark.parametrize("dropped_chunk, dropped", [
    (lambda chunk: chunk % 4 == 3, 15),  # a quarter of them: the frames still run to the end
    (lambda chunk: chunk >= 50, 10),  # the last 10: a still ending (found by review)
], ids=["every-fourth", "at-the-end"])
def test_an_avi_with_drop_frames_is_no_clip_cut_short(tmp_path, dropped_chunk, dropped, kind):
    """An intact AVI declaring frames it does not decode (zero-size chunks its index lists):
    refusing it as cut short, as a count alone did, refused good clips; one that ended on them
    still was, ending short of its declared duration too, until its index was read. Without
    its index, drop frames inside the clip still pass (its frames run to its end); at its end
    they cannot be told from a cut."""
    from flowstore.extraction.avi import avi_drop_frames

    path = tmp_path / "drops.avi"
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"),
                             25, (32, 32))
    for t in range(60):
        writer.write(np.full((32, 32, 3), t * 4, np.uint8))
    writer.release()
    assert avi_drop_frames(path) == 0
    assert _with_drop_frames(path, dropped_chunk, kind) == dropped == avi_drop_frames(path)
    params = VideoParams(size=16, steps=4)
    assert extract_video(path, params).n_frames == 60 - dropped
    path.write_bytes(path.read_bytes()[:path.read_bytes().find(b"idx1")])  # its index lost
    assert avi_drop_frames(path) == 0
    if dropped == 15:
        assert extract_video(path, params).n_frames == 45
    else:
        with pytest.raises(SampleError, match="decodes 50 of the 60 frames"):
            extract_video(path, params)


def test_frame_count_hint_that_lies_still_gives_the_contract(tmp_path, monkeypatch):
    """Real containers misstate their frame count; a wrong hint must only cost a second pass."""
    from flowstore.extraction import video

    path = tmp_path / "clip.avi"
    rng = np.random.default_rng(1)
    write_avi(path, rng.integers(0, 255, (40, 48, 48, 3), dtype=np.uint8))
    monkeypatch.setattr(video, "_candidate_frames", lambda hint, steps: set(range(0, 40, 3)))
    got = extract_video(path, VideoParams(size=24, steps=6))
    want = reference_tvhi(path, size=24, steps=6)
    np.testing.assert_array_equal(got.frames, want["frames"])
    np.testing.assert_array_equal(got.middle_frame, want["middle_frame"])


def test_a_second_pass_that_decodes_another_frame_count_fails_the_clip(tmp_path, monkeypatch):
    """The frames a wrong hint left out are decoded in a second pass: one that counts other
    frames than the first decoded the clip otherwise, and its frames cannot be mixed with the
    first pass's (nor the contract's positions, computed from the first count, trusted)."""
    from flowstore.extraction import video

    path = tmp_path / "clip.avi"
    write_avi(path, np.random.default_rng(2).integers(0, 255, (20, 32, 32, 3), dtype=np.uint8))
    monkeypatch.setattr(video, "_candidate_frames", lambda hint, params: set())  # two passes
    decode, counts = video.decode_resized, []

    def one_frame_more_the_second_time(*args, **kwargs):
        n, frames = decode(*args, **kwargs)
        counts.append(n)
        return n + len(counts) - 1, frames

    monkeypatch.setattr(video, "decode_resized", one_frame_more_the_second_time)
    with pytest.raises(SampleError, match=r"decoding clip\.avi is not repeatable \(20 then 21"):
        extract_video(path, VideoParams(size=16, steps=4))
    assert counts == [20, 20]


def _gradient_clip(path, width: int, height: int, n_frames: int) -> None:
    """A diagonal gradient sliding a pixel a frame, MJPG: quick to write and decode at any size."""
    ramp = np.add.outer(np.arange(height), np.arange(width))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (width, height))
    for t in range(n_frames):
        writer.write(np.repeat(((ramp + t) % 256).astype(np.uint8)[..., None], 3, axis=2))
    writer.release()


@pytest.mark.parametrize("lying_hint", [False, True])
def test_memory_follows_the_output_size_not_the_source_resolution(tmp_path, monkeypatch,
                                                                 lying_hint):
    """Full-resolution frames held at once stay within the budget plus ~1 frame at any
    resolution and length, also on a second decode pass (tracemalloc sees numpy's and OpenCV's
    arrays); the old decoder kept every candidate frame (~45 here) until the last one. The
    smallest clip fits the budget (frames held as decoded), the others do not (resized as
    decoded): both give the contract's bytes."""
    import tracemalloc

    from flowstore.extraction import video

    budget = 1 << 20
    monkeypatch.setattr(video, "FULL_RESOLUTION_BUDGET", budget, raising=False)
    if lying_hint:  # a count that picks the wrong frames: the missing ones come from a 2nd pass
        monkeypatch.setattr(video, "_candidate_frames",
                            lambda hint, steps: set(range(0, hint, 3)))
    params = VideoParams(size=16, steps=16)
    for width, height, n_frames, fits in [(96, 64, 40, True), (320, 240, 60, False),
                                          (960, 544, 30, False)]:
        path = tmp_path / f"{width}x{height}.avi"
        _gradient_clip(path, width, height, n_frames)
        want = reference_tvhi(path, size=16, steps=16)
        tracemalloc.start()
        try:
            got = extract_video(path, params)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(got.frames, want["frames"])
        np.testing.assert_array_equal(got.middle_frame, want["middle_frame"])
        frame_bytes = width * height * 3
        held = budget if fits else 0
        assert peak < held + 2 * frame_bytes + 64 * 1024, (width, height, peak / frame_bytes)
