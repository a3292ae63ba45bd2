"""The `flowstore` CLI: inspect, synth, datasets, and the synthetic source's design."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import flowstore
from flowstore.extraction._cv import cv2
from flowstore.extraction.video import extract_video
from flowstore.params import VideoParams
from flowstore.store import open_store
from flowstore.synth import synthetic_source
from flowstore.synth.tvhi import SynthTVHIConfig, render_clip
from tests.conftest import REPO, TINY_BUILD, assert_one_line_error, chunk_file, flowstore_cli


@pytest.fixture(scope="module")
def built_store(tiny_tvhi_source, tmp_path_factory):
    store = tmp_path_factory.mktemp("built") / "tvhi.zarr"
    result = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                           *TINY_BUILD, "-q")
    assert result.returncode == 0, result.stderr
    return store


def test_the_tests_forked_command_answers_as_a_new_interpreter(built_store, tmp_path,
                                                               monkeypatch):
    """`flowstore_cli` forks its commands from a server with the imports done
    (`tests.forked_cli`): each answers with the exit code, stdout and stderr that `python -m
    flowstore` in a new interpreter gives, in the caller's folder, and the server is used
    (not a silent fall-back to new interpreters, which would only cost time)."""
    from tests import conftest, forked_cli

    monkeypatch.chdir(built_store.parent)
    for args in (["--version"], ["--help"], ["build", "--help"], ["inspect", built_store.name],
                 ["inspect", "--json", str(built_store)], ["verify", built_store.name],
                 ["inspect", str(tmp_path / "missing.zarr")], ["no-such-command"],
                 ["build", "tvhi", "--store", "x.zarr"]):
        forked = flowstore_cli(*args)
        fresh = subprocess.run([sys.executable, "-m", "flowstore", *args], capture_output=True,
                               text=True, timeout=120)
        assert (forked.returncode, forked.stdout, forked.stderr) == \
            (fresh.returncode, fresh.stdout, fresh.stderr), args
    if os.environ.get(forked_cli.NEW_INTERPRETER, "") in ("", "0"):  # (not asked otherwise)
        server = conftest._FORKED_CLI
        assert server._server is not None and server._server.poll() is None \
            and not server._broken


def test_inspect_shows_everything_a_user_needs(built_store):
    out = flowstore_cli("inspect", built_store, "--bytes")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for expected in ("dataset      tvhi", "fingerprint  ", '"steps": 4', '"winsize": 5',
                     "16 done, 0 failed, 0 pending", "handShake", "flow", "(16, 4, 32, 32, 2)",
                     "float16", "(1, 4, 32, 32, 2)", "ratio", "on disk"):
        assert expected in text, expected


def test_inspect_counts_bytes_on_disk_only_when_asked(built_store):
    """Counting bytes on disk lists every chunk (900,000 files for Kinetics): `--bytes` only,
    and its help says so."""
    text = flowstore_cli("inspect", built_store).stdout
    assert "bytes on disk: --bytes (lists every chunk)" in text and "on disk " not in text
    summary = json.loads(flowstore_cli("inspect", built_store, "--json").stdout)
    assert summary["bytes_stored"] is None and summary["arrays"][0]["bytes_stored"] is None
    shown = flowstore_cli("inspect", "--help").stdout
    assert "This lists every chunk" in " ".join(shown.replace("│", " ").split())


def test_inspect_json_is_complete_and_consistent(built_store):
    summary = json.loads(flowstore_cli("inspect", built_store, "--json", "--bytes").stdout)
    assert summary["dataset"] == "tvhi" and summary["format"] == 2
    assert len(summary["fingerprint"]) == 64
    assert summary["params"]["farneback"]["poly_sigma"] == 1.2
    assert summary["counts"]["test"] == {"handShake": 2, "highFive": 2, "hug": 2, "kiss": 2}
    assert sum(summary["counts"]["val"].values()) + sum(summary["counts"]["train"].values()) == 8
    arrays = {a["name"]: a for a in summary["arrays"]}
    assert arrays["flow"]["shape"] == [16, 4, 32, 32, 2] and arrays["flow"]["bytes_stored"] > 0
    assert arrays["frames"]["ratio"] > 0
    assert summary["bytes_stored"] == sum(a["bytes_stored"] for a in summary["arrays"])


def test_inspect_json_names_every_split_in_done_per_split(tmp_path):
    """A split with no done sample was left out of `done_per_split` (while `counts` and
    `done_counts` list it): a script reading its ["val"] met a KeyError on some stores."""
    from trainers.testing import make_tiny_store

    store = make_tiny_store(tmp_path / "t.zarr", per_class=(1, 0, 0))
    summary = json.loads(flowstore_cli("inspect", store, "--json").stdout)
    assert summary["done_per_split"] == {"train": 4, "val": 0, "test": 0}
    assert list(summary["done_per_split"]) == list(summary["counts"]) == ["train", "val", "test"]


def test_inspect_of_a_partly_built_store_counts_done_per_class(tiny_tvhi_source, tmp_path):
    """The table is headed "done/all": every row says both, not only the total; text arrays,
    whose logical size is unknown, show no compression ratio rather than 0.00x."""
    store = tmp_path / "part.zarr"
    built = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                          *TINY_BUILD, "--max-per-split", "1", "-q")
    assert built.returncode == 0, built.stderr
    summary = json.loads(flowstore_cli("inspect", store, "--json", "--bytes").stdout)
    done = summary["done_counts"]
    assert {split: sum(per_class.values()) for split, per_class in done.items()} == \
        {"train": 1, "val": 1, "test": 1}
    text = flowstore_cli("inspect", store, "--bytes").stdout
    for name in summary["classes"]:
        row = next(line.split() for line in text.splitlines() if line.startswith(f"  {name} "))
        assert row[1:] == [f"{done[split][name]}/{summary['counts'][split][name]}"
                           for split in ("train", "val", "test")], row
    arrays = {a["name"]: a for a in summary["arrays"]}
    assert arrays["id"]["ratio"] is None and arrays["flow"]["ratio"] > 0
    assert re.search(r"^  id .* -$", text, re.M), text
    # the ratio is of the samples written (3 of 16 done), not of the whole array's size
    flow = arrays["flow"]
    assert flow["ratio"] == round(flow["bytes"] * 3 // 16 / flow["bytes_stored"], 3), flow


@pytest.mark.parametrize("target", ["missing.zarr", "folder.zarr", "notes.h5", "fifo.h5"])
def test_inspect_of_a_non_store_is_one_line(tmp_path, target):
    if target == "folder.zarr":
        (tmp_path / target).mkdir()
    elif target == "notes.h5":
        (tmp_path / target).write_text("not hdf5")
    elif target == "fifo.h5":  # (libhdf5 waited on it for a writer, for ever)
        os.mkfifo(tmp_path / target)
    result = flowstore_cli("inspect", tmp_path / target, timeout=60)
    assert str(tmp_path / target) in assert_one_line_error(result)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_store_path_the_system_refuses_to_look_at_is_one_line(tiny_tvhi_source, tmp_path,
                                                                suffix):
    """A name longer than the system takes (or a folder that cannot be searched: root passes
    that check here) was a traceback and "internal error", exit 3, from inspect, show and
    trainers' run and predict: `Path.exists` raises for it, answering False only for a
    missing path."""
    from typer.testing import CliRunner

    from trainers.cli import app

    store = tmp_path / ("a" * 300 + suffix)
    said = f"error: cannot access store {str(store)!r}: File name too long"
    for args in (("inspect", store), ("show", store, "--out", tmp_path / "pictures")):
        assert assert_one_line_error(flowstore_cli(*args)) == said
    build = ("build", "tvhi", "--source", tiny_tvhi_source, "--store", store, *TINY_BUILD)
    assert assert_one_line_error(flowstore_cli(*build)) == said
    assert list(tmp_path.iterdir()) == []  # (a lock file, named by a digest, was left)
    result = CliRunner().invoke(app, ["run", "flow", "--store", str(store), "--runs-dir",
                                      str(tmp_path / "runs")])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [said]


@pytest.mark.parametrize(("suffix", "length"), [(".zarr", 245), (".h5", 245), (".zarr", 255)])
def test_a_store_name_near_the_systems_limit_is_made_and_overwritten(tiny_tvhi_source, tmp_path,
                                                                   suffix, length):
    """Names of 245 and 255 bytes are names the system takes. The hidden name a store is made
    under (and moved aside to by --overwrite) did not fit from 238 bytes, its lock file
    (`.NAME.lock`) from 250: "cannot create store ...: File name too long" (found by review).
    Where the lock's name would not fit, it holds a digest of the store's."""
    store = tmp_path / ("c" * (length - len(suffix)) + suffix)
    args = ("build", "tvhi", "--source", tiny_tvhi_source, "--store", store, *TINY_BUILD, "-q")
    made = flowstore_cli(*args, "--max-per-split", "1")
    assert made.returncode == 0 and "3 computed" in made.stdout, made.stderr
    again = flowstore_cli(*args, "--overwrite")
    assert again.returncode == 0 and "16 computed" in again.stdout, again.stderr
    lock = (f".{store.name}.lock" if length < 250
            else f".{hashlib.sha256(store.name.encode()).hexdigest()[:32]}.lock")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([lock, store.name])


def test_a_file_url_store_is_refused_for_its_path(tiny_tvhi_source, tmp_path):
    """`--store file:///.../x.zarr` was taken for a remote store: built with no writer lock
    (two builds wrote one store at once), no nested-store or free-space check; and a store not
    yet there could not be made at all. The path itself is asked for, in one line."""
    store = tmp_path / "x.zarr"
    said = (f"error: a file:// URL names a local path: give the path itself ({str(store)!r}), "
            f"got {'file://' + str(store)!r}")
    result = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store",
                           f"file://{store}", *TINY_BUILD)
    assert assert_one_line_error(result) == said and not store.exists()
    from flowstore.errors import StoreError

    with pytest.raises(StoreError, match="a file:// URL names a local path"):
        flowstore.open(f"file://{store}")


def test_a_url_without_a_bucket_is_refused_in_one_line():
    """`s3:///x.zarr` (one slash too many): refused before any request, naming the form a
    store URL takes, by every command (`flowstore.open` and a build meet the same check)."""
    from flowstore.errors import StoreError

    with pytest.raises(StoreError, match=r"^a store URL names no bucket "
                                         r"\(s3://BUCKET/NAME.zarr\), got 's3:///x.zarr'$"):
        flowstore.open("s3:///x.zarr")
    result = flowstore_cli("inspect", "s3:///x.zarr")
    assert assert_one_line_error(result).startswith("error: a store URL names no bucket")


def test_a_closed_pipe_on_standard_output_ends_every_command_alike(tiny_tvhi_source, tmp_path):
    """`flowstore verify S | head -1`: verify said "error: [Errno 32] Broken pipe", exit 2 (its
    own handler took it for bad input), where inspect ended quietly, exit 1 (found by review)."""
    store = tmp_path / "s.zarr"
    built = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                          *TINY_BUILD, "-q", "--max-per-split", "1")
    assert built.returncode == 0, built.stderr
    for command in ("inspect", "verify"):
        with subprocess.Popen([sys.executable, "-m", "flowstore", command, str(store)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as process:
            process.stdout.close()  # (before its first line: the reader of `| head -0`)
            said = process.stderr.read()
            code = process.wait(timeout=120)
        assert (code, said) == (1, ""), (command, said)


@pytest.mark.parametrize("command", [("flowstore", "datasets"), ("trainers", "summary", "image")])
def test_a_closed_standard_output_is_refused_in_one_line(command):
    """`flowstore inspect S >&-`: Python starts with no sys.stdout, Click's echo drops every
    line, and the command printed nothing and ended 0 (found by review)."""
    program, *args = command
    result = subprocess.run(["bash", "-c", '"$0" -m "$@" >&-', sys.executable, program, *args],
                            stderr=subprocess.PIPE, text=True, timeout=120)
    assert (result.returncode, result.stderr.splitlines()) == (
        2, [f"error: standard output is closed; redirect it to /dev/null to discard what "
            f"{program} prints"])


def test_a_closed_standard_error_is_discarded_and_standard_output_kept_clean(tmp_path):
    """`trainers summary image 2>&-` (or `predict RUN > p.csv 2>&-`): Python starts with no
    sys.stderr, trainers crashed on it (exit 3) and the traceback went to standard output,
    into the file the user was writing (found by review). Closed standard error is discarded;
    the command does its work, and what it prints on standard output is only its own."""
    script = '"$0" -m "$@" 2>&-'
    result = subprocess.run(["bash", "-c", script, sys.executable, "trainers", "summary", "flow",
                             "--size", "32"], stdout=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stdout, result.stdout
    assert "Total params" in result.stdout or "params" in result.stdout.lower(), result.stdout
    refused = subprocess.run(["bash", "-c", script, sys.executable, "flowstore", "inspect",
                              str(tmp_path / "none.zarr")], stdout=subprocess.PIPE, text=True,
                             timeout=120)
    assert (refused.returncode, refused.stdout) == (2, "")


def test_names_an_encoding_cannot_hold_are_written_escaped_not_a_crash(tmp_path,
                                                                     tiny_tvhi_source):
    """A latin-1 standard output (`PYTHONIOENCODING=latin-1`, a latin-1 locale) and a store in
    a folder named in Chinese: the build wrote the whole store, then exited 3 as "a bug"
    printing its path; inspect did too (found by review). Written with backslash escapes."""
    store = tmp_path / "店" / "s.zarr"
    store.parent.mkdir()
    latin1 = {"PYTHONIOENCODING": "latin-1"}
    built = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                          *TINY_BUILD, "--max-per-split", "1", env=latin1)
    assert built.returncode == 0 and "\\u5e97" in built.stdout, built.stderr
    shown = flowstore_cli("inspect", store, env=latin1)
    assert shown.returncode == 0 and shown.stdout.startswith(
        f"store        {tmp_path}/\\u5e97/s.zarr"), shown.stderr


@pytest.mark.parametrize("args", [("show", "{store}", "--out", "pictures"),
                                  ("build", "tvhi", "--source", "{source}", "--store", "new.zarr",
                                   "--size", "32", "--steps", "2")], ids=["show", "build"])
def test_a_current_folder_deleted_is_said_as_such(tmp_path, tiny_tvhi_source, args):
    """Run in a folder deleted since, with a relative path: `show` was an internal error and a
    build said `error: [Errno 2] No such file or directory`, naming nothing (found by review)."""
    store = tmp_path / "s.zarr"
    built = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                          *TINY_BUILD, "-q", "--max-per-split", "1")
    assert built.returncode == 0, built.stderr
    gone = tmp_path / "gone"
    gone.mkdir()
    args = [a.format(store=store, source=tiny_tvhi_source) for a in args]
    result = subprocess.run(["bash", "-c", 'cd "$1" && rmdir "$1" && shift && exec "$@"', "-",
                             str(gone), sys.executable, "-m", "flowstore", *args],
                            capture_output=True, text=True, timeout=120)
    assert assert_one_line_error(result) == (
        "error: the current folder no longer exists (deleted while the shell was in it): cd to "
        "one that does, or give absolute paths")


def test_a_url_of_no_bucket_is_not_said_to_lack_one():
    """An http URL's root is its host: `inspect http://localhost:1/x.zarr` said "whose bucket
    'http:' does not exist" (found by review)."""
    result = flowstore_cli("inspect", "http://localhost:1/x.zarr")
    assert assert_one_line_error(result) == "error: no store at 'http://localhost:1/x.zarr'"


def test_a_memory_url_store_is_refused_by_every_command(tiny_tvhi_source, tmp_path):
    """`--store memory://x.zarr` was built to its end, "6 computed", exit 0, and the store was
    gone with the process: `inspect` then said "no store". A store that cannot outlive its
    process is refused in one line, before anything is computed, by every command."""
    from typer.testing import CliRunner

    from flowstore.errors import StoreError
    from trainers.cli import app

    url = "memory://x.zarr"
    said = (f"error: a memory:// store lives only as long as the process that writes it (a "
            f"build's store was lost when it ended): give a local path or an object store's "
            f"URL, got {url!r}")
    build = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", url,
                          *TINY_BUILD)
    assert assert_one_line_error(build) == said and "computed" not in build.stdout
    for args in (("inspect", url), ("verify", url)):
        assert assert_one_line_error(flowstore_cli(*args)) == said
    result = CliRunner().invoke(app, ["run", "flow", "--store", url, "--runs-dir",
                                      str(tmp_path / "runs")])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [said]
    with pytest.raises(StoreError, match="^a memory:// store lives only as long as"):
        flowstore.open(url)


@pytest.mark.parametrize("args, said", [
    (("tvhi", "--videos-per-class", "2", "--resolution", "100000x100000"),
     "resolution must be even and from 16x16 to 4096x4096, got 100000x100000"),
    (("tvhi", "--videos-per-class", "2", "--frames", "2:100000"),
     "frame range must satisfy 2 <= min <= max <= 10000, got 2..100000"),
    (("videofolder", "--classes", "2", "--clips-per-class", "1", "--width", "100000",
      "--height", "100000"),
     "resolution must be even and from 16x16 to 4096x4096, got 100000x100000"),
    # an odd side was written a pixel short (OpenCV's codecs round it down), without a word
    (("ucf101", "--classes", "2", "--clips-per-class", "2", "--width", "33", "--height", "31"),
     "resolution must be even and from 16x16 to 4096x4096, got 33x31"),
    (("tvhi", "--videos-per-class", "2", "--resolution", "64by48"),
     "--resolution must look like WIDTHxHEIGHT, got '64by48'"),
    (("tvhi", "--videos-per-class", "2", "--resolution", "64x48x3"),
     "--resolution must look like WIDTHxHEIGHT, got '64x48x3'"),
    (("videofolder", "--classes", "0"), "classes must be in 1..400, got 0"),
    (("clips", "--classes", "401"), "classes must be in 1..400, got 401"),
    (("ucf101", "--classes", "2", "--clips-per-class", "0"),
     "clips per class must be in 1..10000, got 0")])
def test_synth_refuses_sizes_it_cannot_write_in_one_line(tmp_path, args, said):
    """A huge resolution was OpenCV's "Insufficient memory" (or numpy's MemoryError)
    traceback, "a bug in flowstore", exit 3; a resolution not WIDTHxHEIGHT and counts out of
    range are one line too, nothing written."""
    kind, *options = args
    result = flowstore_cli("synth", kind, tmp_path / "source", *options)
    assert assert_one_line_error(result) == f"error: {said}"
    assert not (tmp_path / "source").exists()


def test_synth_refuses_one_tvhi_video_a_class_which_build_would_refuse(tmp_path):
    """Odd clips go to set 1, even ones to set 2: one clip a class wrote a readme whose SET 2
    lines are empty, exit 0, and `build` then refused the source."""
    result = flowstore_cli("synth", "tvhi", tmp_path / "source", "--videos-per-class", "1")
    assert assert_one_line_error(result) == "error: videos per class must be in 2..9999, got 1"
    assert not (tmp_path / "source").exists()


@pytest.mark.parametrize("command", [
    ("flowstore", "build", "videofolder", "--source", "", "--store", "s.zarr"),
    ("flowstore", "estimate", "videofolder", "--source", ""),
    ("flowstore", "synth", "tvhi", ""),
    ("flowstore", "show", "s.zarr", "--out", ""),
    ("trainers", "run", "flow", "--store", "s.zarr", "--runs-dir", ""),
    ("trainers", "report", "runs", "--out", ""),
    ("trainers", "report", ""),
    ("trainers", "predict", "", "--store", "s.zarr"),
    ("flowstore", "inspect", ""),
    ("flowstore", "verify", ""),
    ("flowstore", "show", "", "--out", "x"),
    ("flowstore", "build", "tvhi", "--synthetic", "--store", ""),
    ("flowstore", "build", "tvhi", "--synthetic", "--store", "s.zarr", "--reuse-from", ""),
    ("trainers", "run", "flow", "--store", ""),
], ids=lambda command: "-".join(part or "EMPTY" for part in command[:2] + command[-2:]))
def test_an_empty_path_is_refused_not_read_as_the_current_folder(command, tmp_path):
    """`Path("")` is `Path(".")`: `--runs-dir ""` (an unset shell variable) trained and wrote a
    run into the current folder, `--out ""` wrote figures there, `synth tvhi ""` filled it."""
    program, *args = command
    result = subprocess.run([sys.executable, "-m", program, *args], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    line = assert_one_line_error(result)
    assert line.endswith("an empty path (an unset shell variable?)"), line
    assert list(tmp_path.iterdir()) == []


def test_datasets_lists_the_registered_ones():
    assert "tvhi" in flowstore_cli("datasets").stdout.split()


def test_synth_is_deterministic_per_seed(tmp_path):
    args = ["--videos-per-class", "2", "--negatives", "1", "--frames", "22:24", "--resolution", "64x48"]
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert flowstore_cli("synth", "tvhi", tmp_path / name, *args, "--seed", seed).returncode == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == [f"{c}_{n:04d}.avi" for c in ("handShake", "highFive", "hug", "kiss")
                     for n in (1, 2)] + ["negative_0001.avi", "readme.txt"]
    same = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files]
    assert all(same)
    assert (tmp_path / "a" / "hug_0001.avi").read_bytes() != (tmp_path / "c" / "hug_0001.avi").read_bytes()
    # as the real readme: the odd clips are set 1 (test), the even ones set 2
    from flowstore.datasets.tvhi import parse_readme

    assert parse_readme((tmp_path / "a" / "readme.txt").read_text()) == {
        1: {c: [1] for c in ("handShake", "highFive", "hug", "kiss")},
        2: {c: [2] for c in ("handShake", "highFive", "hug", "kiss")}}
    line = assert_one_line_error(flowstore_cli("synth", "tvhi", tmp_path / "a", *args))
    assert "not empty" in line
    assert "--frames" in assert_one_line_error(flowstore_cli("synth", "tvhi", tmp_path / "d", "--frames", "x"))


def test_synth_frames_given_as_one_number_is_that_many_frames(tmp_path):
    """`--frames 24` is `--frames 24:24`: every clip of 24 frames."""
    args = ["--videos-per-class", "2", "--negatives", "0", "--resolution", "64x48"]
    for name, frames in (("one", "24"), ("range", "24:24")):
        out = flowstore_cli("synth", "tvhi", tmp_path / name, *args, "--frames", frames)
        assert out.returncode == 0, out.stderr
    clips = sorted((tmp_path / "one").glob("*.avi"))
    assert len(clips) == 8
    for clip in clips:
        capture = cv2.VideoCapture(str(clip))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 24, clip.name
        capture.release()
        assert clip.read_bytes() == (tmp_path / "range" / clip.name).read_bytes()


@pytest.mark.parametrize("given", [(), ("--synthetic", "--source", "{tmp}")],
                         ids=["neither", "both"])
def test_build_takes_exactly_one_of_source_or_synthetic(tmp_path, given):
    store = tmp_path / "s.zarr"
    out = flowstore_cli("build", "tvhi", "--store", store, *TINY_BUILD,
                        *(str(arg).replace("{tmp}", str(tmp_path)) for arg in given))
    assert assert_one_line_error(out) == "error: give exactly one of --source DIR or --synthetic"
    assert not store.exists()


def test_synthetic_colours_share_grey_levels_so_flow_cannot_see_them():
    warm = render_clip("warm", "horizontal", np.random.default_rng(1), 3, 80, 64)
    cool = render_clip("cool", "horizontal", np.random.default_rng(1), 3, 80, 64)
    assert np.abs(warm.astype(int) - cool.astype(int)).max() > 50  # colours differ ...
    grey = [np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in c]).astype(int) for c in (warm, cool)]
    assert np.abs(grey[0] - grey[1]).max() <= 3  # ... grey (what flow sees) does not


def test_synthetic_classes_differ_in_colour_and_motion_axis(tiny_tvhi_source):
    params = VideoParams(size=48, steps=6, flow_dtype="float32")
    for clip, warm, horizontal in (("handShake_0002", True, True), ("highFive_0002", True, False),
                                   ("hug_0002", False, True), ("kiss_0002", False, False)):
        features = extract_video(tiny_tvhi_source / f"{clip}.avi", params)
        rgb = features.middle_frame.astype(int)
        assert ((rgb[..., 0] - rgb[..., 2]).max() > (rgb[..., 2] - rgb[..., 0]).max()) == warm, clip
        moving = np.linalg.norm(features.flow, axis=-1) > 0.2
        dx, dy = np.abs(features.flow[moving]).mean(axis=0)
        assert (dx > dy) == horizontal, (clip, dx, dy)


def test_synthetic_source_cache_writes_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSTORE_CACHE", str(tmp_path))
    config = SynthTVHIConfig(videos_per_class=2, negatives=0, min_frames=22, max_frames=22,
                             resolution=(32, 32))
    first = synthetic_source("tvhi", config)
    assert first.parent == tmp_path / "synthetic" and (first / "kiss_0001.avi").is_file()
    stamp = (first / "kiss_0001.avi").stat().st_mtime_ns
    assert synthetic_source("tvhi", config) == first
    assert (first / "kiss_0001.avi").stat().st_mtime_ns == stamp
    other = synthetic_source("tvhi", SynthTVHIConfig(videos_per_class=2, negatives=0, min_frames=22,
                                                     max_frames=22, resolution=(32, 32), seed=9))
    assert other != first
    # a source from an older writer is not served for a newer one (a changed clip naming
    # reached no one with a cache): the writer's code is in the key
    import flowstore.synth as synth
    import flowstore.synth.tvhi

    files = synth._writer_files(flowstore.synth.tvhi.write_synthetic_tvhi)
    assert Path(flowstore.synth.tvhi.__file__) in files
    assert Path(synth.__file__).parent / "clips.py" in files
    # and the dataset module it takes the readme's format and the clip names from
    import flowstore.datasets.tvhi

    assert Path(flowstore.datasets.tvhi.__file__) in files
    changed = tmp_path / "writer.py"
    changed.write_text("# another writer")
    monkeypatch.setattr(synth, "_writer_files", lambda write: [changed])
    second = synthetic_source("tvhi", config)
    assert second != first
    # by its bytes, not its path: flowstore upgraded in place keeps every writer's path
    changed.write_text("# the same writer, changed")
    assert synthetic_source("tvhi", config) not in (first, second)


def _age(path: Path, days: float, *, listed_days: float | None = None) -> None:
    """Set `path`'s mtime (last stamped as used) `days` back, and its atime (last listed)
    `listed_days` back (default: the same), as `prune_unused` reads them."""
    now = time.time()
    listed = days if listed_days is None else listed_days
    os.utime(path, (now - listed * 86400, now - days * 86400), follow_symlinks=False)


def test_a_cached_source_unused_for_30_days_goes_when_another_is_written(tmp_path, monkeypatch):
    """Each release that changes a writer made its sources anew and nothing removed the old ones
    (0.9 GB in a day of sessions): now what no build used for `UNUSED_DAYS` goes when another
    source is written, and only what is ours."""
    import flowstore.synth as synth

    monkeypatch.setenv("FLOWSTORE_CACHE", str(tmp_path / "cache"))
    config = SynthTVHIConfig(videos_per_class=2, negatives=0, min_frames=22, max_frames=22,
                             resolution=(32, 32))
    old = synthetic_source("tvhi", config)
    clip = (old / "kiss_0001.avi").read_bytes()
    cache = old.parent
    recent = cache / "tvhi-aaaaaaaaaaaa"
    listed = cache / "tvhi-cccccccccccc"  # stamped long ago, listed lately (another user's build)
    leftover = cache / ".tvhi-bbbbbbbbbbbb.writing-123"  # a killed writer's staging folder
    theirs = cache / "notes"  # not named as ours
    moved = tmp_path / "moved-source"  # a source moved elsewhere, a link left in its place
    for folder in (recent, listed, leftover, theirs, moved):
        folder.mkdir()
        (folder / "kiss_0001.avi").write_bytes(b"clip")
    link = cache / "tvhi-dddddddddddd"
    link.symlink_to(moved)
    named_file = cache / "tvhi-eeeeeeeeeeee"  # a file, not a folder
    named_file.write_bytes(b"x")
    _age(recent, synth.UNUSED_DAYS - 1)
    _age(listed, synth.UNUSED_DAYS + 1, listed_days=1)
    for path in (old, leftover, theirs, moved, link, named_file):
        _age(path, synth.UNUSED_DAYS + 1)

    other = synthetic_source("tvhi", dataclasses.replace(config, seed=9))
    assert sorted(path.name for path in cache.iterdir()) == sorted(
        [other.name, recent.name, listed.name, theirs.name, link.name, named_file.name])
    assert (link / "kiss_0001.avi").read_bytes() == b"clip"
    # asked for again, it is written again, with the same bytes
    assert synthetic_source("tvhi", config) == old and (old / "kiss_0001.avi").read_bytes() == clip
    # a source a build takes is stamped as used, so it stays
    _age(old, synth.UNUSED_DAYS + 1)
    assert synthetic_source("tvhi", config) == old
    assert synth.prune_unused(cache) == [] and old.is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="gives a folder to another user (needs root)")
def test_another_users_cached_source_is_left_alone(tmp_path):
    """In a cache shared by several users, one user's pruning hid another's source (renamed
    aside, then not deletable): it is not this user's to prune."""
    import flowstore.synth as synth

    source = tmp_path / "tvhi-0123456789ab"
    source.mkdir()
    os.chown(source, 65534, 65534)
    _age(source, synth.UNUSED_DAYS + 1)
    assert synth.prune_unused(tmp_path) == []
    assert [path.name for path in tmp_path.iterdir()] == [source.name]


def test_a_build_asking_for_a_source_while_a_prune_decides_gets_it_whole(tmp_path, monkeypatch):
    """A source served (and stamped) just after a prune found it unused, and deleted just after
    it was served, left the build a folder that was gone: serving waits for the prune's lock,
    then writes the source again."""
    import threading

    import flowstore.synth as synth

    monkeypatch.setenv("FLOWSTORE_CACHE", str(tmp_path))
    config = SynthTVHIConfig(videos_per_class=2, negatives=0, min_frames=22, max_frames=22,
                             resolution=(32, 32))
    source = synthetic_source("tvhi", config)
    served = []
    with synth._cache_lock(source.parent, exclusive=True):  # a prune deciding
        build = threading.Thread(target=lambda: served.append(synthetic_source("tvhi", config)))
        build.start()
        build.join(0.5)
        assert not served  # waiting
        shutil.rmtree(source)  # the prune deletes it
    build.join(60)
    assert served == [source] and (source / "kiss_0001.avi").is_file()


def test_a_cache_without_flock_or_stamps_still_serves_its_sources(tmp_path, monkeypatch):
    """On a file system without `flock` (Lustre mounted noflock: ENOSYS) every `build
    --synthetic` failed ("error: [Errno 38] Function not implemented"): the cache is used
    unlocked there. A source the user cannot stamp (another user's) is listed instead, which
    moves its access time, the use `prune_unused` reads."""
    import errno

    import flowstore.synth as synth

    monkeypatch.setenv("FLOWSTORE_CACHE", str(tmp_path))
    config = SynthTVHIConfig(videos_per_class=2, negatives=0, min_frames=22, max_frames=22,
                             resolution=(32, 32))

    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(synth.fcntl, "flock", no_flock)
    source = synthetic_source("tvhi", config)
    assert (source / "kiss_0001.avi").is_file()
    assert synthetic_source("tvhi", config) == source

    def not_yours(path, *args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(path))

    listed = []
    listdir = os.listdir
    monkeypatch.setattr(synth.os, "utime", not_yours)
    monkeypatch.setattr(synth.os, "listdir", lambda path: listed.append(Path(path))
                        or listdir(path))
    assert synthetic_source("tvhi", config) == source and listed == [source]


def test_synth_into_the_current_folder_fills_it_in_place(tmp_path):
    """`flowstore synth tvhi .` was a traceback ('.' has no name for the staging folder); the
    empty folder is kept (a shell standing in it would otherwise stand in a deleted one)."""
    here = tmp_path / "new"
    here.mkdir()
    inode = here.stat().st_ino
    out = subprocess.run([sys.executable, "-m", "flowstore", "synth", "tvhi", ".",
                          "--videos-per-class", "2", "--negatives", "0", "--frames", "22:22",
                          "--resolution", "32x32"], capture_output=True, text=True, cwd=here,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert here.stat().st_ino == inode and (here / "kiss_0001.avi").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["new"]  # no staging left


@pytest.mark.parametrize("other", ["wrote first", "is moving in"])
def test_two_synth_into_one_empty_folder_leave_one_source_not_a_mix(tmp_path, other):
    """Both found the folder empty before their fill, then each moved its files in over the
    other's, exit 0 for both: one readme, clips of two seeds and sizes (found by review). The
    one that comes second to the folder is refused, as on a new folder, and what the first
    wrote stays as it wrote it."""
    from flowstore.errors import FlowstoreError
    from flowstore.synth.clips import CLAIM, write_source

    folder = tmp_path / "src"
    folder.mkdir()
    theirs = folder / ("kiss_0001.avi" if other == "wrote first" else CLAIM)

    def fill(staging):
        (staging / "kiss_0001.avi").write_bytes(b"mine")
        (staging / "readme.txt").write_bytes(b"mine")
        theirs.write_bytes(b"theirs")  # (the other process, while this one filled)

    with pytest.raises(FlowstoreError, match=f"cannot write the synthetic source "
                                             f"{re.escape(repr(str(folder)))}: Directory not empty"):
        write_source(folder, fill)
    assert [(p.name, p.read_bytes()) for p in folder.iterdir()] == [(theirs.name, b"theirs")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no staging left
    theirs.unlink()
    write_source(folder, lambda staging: (staging / "a.avi").write_bytes(b"mine"))
    assert sorted(p.name for p in folder.iterdir()) == ["a.avi"]  # (its claim gone)


def test_two_writers_of_one_synthetic_source_both_get_it(tmp_path, monkeypatch):
    """Two `build --synthetic` on an empty cache both write the source; the second to rename
    its copy found the first's there and the build stopped ('Directory not empty')."""
    import flowstore.synth.clips as clips

    monkeypatch.setenv("FLOWSTORE_CACHE", str(tmp_path))
    config = SynthTVHIConfig(videos_per_class=2, negatives=0, min_frames=22, max_frames=22,
                             resolution=(32, 32))
    rename = os.replace

    def another_writer_first(source, target):
        if Path(source).name.startswith(".tvhi-"):  # the staged source, about to be renamed
            Path(target).mkdir()
            (Path(target) / "kiss_0001.avi").write_bytes(Path(source, "kiss_0001.avi")
                                                          .read_bytes())
        rename(source, target)

    monkeypatch.setattr(clips.os, "replace", another_writer_first)
    folder = synthetic_source("tvhi", config)
    assert [path.name for path in folder.iterdir()] == ["kiss_0001.avi"]  # the other's copy
    assert [path.name for path in folder.parent.iterdir()] == [folder.name]  # no staging left


@pytest.mark.slow
def test_build_synthetic_end_to_end(tmp_path):
    """The demo's first step: `--synthetic` writes the default source once, then builds."""
    store = tmp_path / "demo.zarr"
    env = {"FLOWSTORE_CACHE": str(tmp_path / "cache")}
    out = flowstore_cli("build", "tvhi", "--synthetic", "--store", store, *TINY_BUILD, "-q", env=env,
                        timeout=900)
    assert out.returncode == 0, out.stderr
    assert "200 computed" in out.stdout


@pytest.mark.parametrize("args", [(), ("synth",)], ids=["flowstore", "flowstore synth"])
def test_a_group_called_alone_shows_its_help_as_it_reads(args):
    """What a new user types first: the help, one item a line, not crammed into an error."""
    result = flowstore_cli(*args)
    assert result.returncode == 2, result  # as Click itself exits when shown no command
    lines = result.stderr.splitlines()
    assert lines[0] == f"Usage: flowstore {' '.join((*args, ''))}[OPTIONS] COMMAND [ARGS]..."
    assert "Commands:" in lines and "error:" not in result.stderr
    listed = {line.split()[0] for line in lines[lines.index("Commands:") + 1:] if line.strip()}
    assert ({"build", "inspect", "datasets", "synth"} if not args else {"tvhi", "stanford40"}) <= listed


def test_version_is_written_once_and_the_installed_distribution_says_it():
    """`flowstore.__version__` is the one place the version is written (pyproject.toml took a
    second copy of it that could drift from what stores record)."""
    import tomllib
    from importlib.metadata import version

    import flowstore

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "flowstore.__version__"}
    result = flowstore_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"flowstore {flowstore.__version__}\n" == f"flowstore {version('flowstore')}\n"


def test_the_package_ships_its_type_marker_and_license():
    """pyproject.toml declared `flowstore/py.typed` and the MIT licence with neither file in the
    tree: type checkers ignored flowstore's annotations and the wheel carried no licence text."""
    from importlib.metadata import distribution
    from importlib.resources import files

    assert files("flowstore").joinpath("py.typed").is_file()
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert distribution("flowstore").metadata["License-Expression"] == "MIT"


def test_version_from_a_source_tree_that_is_not_installed_is_its_own(monkeypatch):
    """Without the distribution's metadata (the package run from a copied source tree),
    `--version` was an internal error (PackageNotFoundError): it says the version the code
    itself records in every store it builds."""
    import importlib.metadata

    from typer.testing import CliRunner

    import flowstore
    from flowstore.cli import app

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    result = CliRunner().invoke(app, ["--version"])
    assert (result.exit_code, result.output) == (0, f"flowstore {flowstore.__version__}\n")


def test_a_large_group_of_duplicates_is_one_short_line_that_shows_its_splits():
    """200 copies of one placeholder download (Kinetics mirrors hold such) made one warning of
    5,752 characters naming every copy; the line names a few, one of each split first (the
    test copy after a hundred training ones was past any cut), and how many there are."""
    from flowstore.build import duplicate_line

    group = [{"id": f"placeholder_{i:03}", "split": "train"} for i in range(100)]
    group += [{"id": f"placeholder_{i:03}", "split": "test"} for i in range(100, 200)]
    line = duplicate_line(group)
    assert line == ("placeholder_000 (train) = placeholder_100 (test) = placeholder_001 (train) "
                    "= placeholder_002 (train) = ... (200 in all)")
    assert duplicate_line(group[:2]) == "placeholder_000 (train) = placeholder_001 (train)"


def test_inspect_lists_ten_groups_of_duplicates_and_counts_the_rest():
    """A source of many copied clips (a mirror's placeholders) would list a line a group; past
    ten, `inspect` says how many more, and `--json` lists them all."""
    from flowstore.inspect import SHOWN_DUPLICATES, _duplicate_lines

    groups = [[{"id": f"a_{i}", "split": "train"}, {"id": f"b_{i}", "split": "test"}]
              for i in range(SHOWN_DUPLICATES + 3)]
    lines = _duplicate_lines(groups)
    assert lines[1] == "byte-identical source files (13 groups, 13 across splits)"
    assert lines[2:-1] == [f"  a_{i} (train) = b_{i} (test)" for i in range(SHOWN_DUPLICATES)]
    assert lines[-1] == "  ... and 3 more groups (--json lists all)"
    assert _duplicate_lines(groups[:SHOWN_DUPLICATES])[-1] == "  a_9 (train) = b_9 (test)"


def test_byte_identical_sources_are_told_by_build_and_listed_by_inspect(tvhi_source, suffix,
                                                                       tmp_path):
    """A test clip that is a copy of a training clip (a clip downloaded twice under two names)
    scores the model on what it trained on: the build warns (exit 0: the data is the user's to
    mend), `inspect` lists every group, those across splits first; the stored hashes tell."""
    clean = tmp_path / f"clean{suffix}"
    built = flowstore_cli("build", "tvhi", "--source", tvhi_source, "--store", clean, *TINY_BUILD,
                          "-q")
    assert built.returncode == 0 and "byte-identical" not in built.stderr, built.stderr
    assert json.loads(flowstore_cli("inspect", clean, "--json").stdout)["duplicates"] == []
    assert "byte-identical" not in flowstore_cli("inspect", clean).stdout

    with flowstore.open(clean) as opened:
        ids = {name: [str(i) for i in opened.split(name).ids] for name in ("train", "test")}
    (train, *others), test = ids["train"], ids["test"][0]
    shutil.copyfile(tvhi_source / f"{train}.avi", tvhi_source / f"{test}.avi")
    shutil.copyfile(tvhi_source / f"{others[0]}.avi", tvhi_source / f"{others[1]}.avi")
    store = tmp_path / f"copies{suffix}"
    built = flowstore_cli("build", "tvhi", "--source", tvhi_source, "--store", store, *TINY_BUILD,
                          "-q")
    assert built.returncode == 0, built.stderr
    assert "warning: 1 group(s) of samples in different splits have byte-identical source " \
           "files" in built.stderr and f"{train} (train)" in built.stderr, built.stderr
    groups = json.loads(flowstore_cli("inspect", store, "--json").stdout)["duplicates"]
    assert [{(m["id"], m["split"]) for m in group} for group in groups] == \
        [{(train, "train"), (test, "test")}, {(others[0], "train"), (others[1], "train")}]
    text = flowstore_cli("inspect", store).stdout
    assert "byte-identical source files (2 groups, 1 across splits)" in text, text
    assert f"{test} (test)" in text and f"{others[1]} (train)" in text
    if suffix == ".zarr":  # a split chunk lost: its samples' split was shown as "\x00unreadable"
        chunk_file(store, "split", 0).write_bytes(b"")
        text = flowstore_cli("inspect", store).stdout
        assert "\x00" not in text and f"{test} (unreadable)" in text, text


def test_every_control_character_is_printed_escaped_delete_and_c1_too():
    """DEL and the C1 controls (U+0080..U+009F; U+009B is an 8-bit CSI, which terminals obey
    as ESC [) are control characters as much as C0's."""
    from flowstore.console import one_line

    assert one_line("a\nb\x1bc\x7fd\x9be\x9ff\xa0g") == "a\\nb\\x1bc\\x7fd\\x9be\\x9ff\xa0g"


def test_a_file_named_with_a_newline_or_an_escape_is_one_printed_line(tmp_path):
    """A file name may hold any character but `/`: a failed clip named with a newline split its
    failure's line in two (build summary and `inspect`), and one named with an ESC sequence
    coloured the terminal. Each control character is printed escaped, as Python writes it;
    the store keeps the id as it is."""
    source = tmp_path / "src"
    assert flowstore_cli("synth", "videofolder", source, "--classes", "2",
                         "--clips-per-class", "3").returncode == 0
    first, second = sorted(p for p in source.iterdir() if p.is_dir())
    first = first.rename(first.with_name("jumping\njacks"))  # a class folder so named too
    shown_class = "jumping\\njacks"
    (first / "bad\nclip.mp4").write_bytes(b"not a video")
    (second / "red\x1b[31m.mp4").write_bytes(b"not a video")
    clip = next(p for p in sorted(first.iterdir()) if p.name.startswith("clip_"))
    shutil.copyfile(clip, first / f"copy\n{clip.name}")
    store = tmp_path / "s.zarr"
    built = flowstore_cli("build", "videofolder", "--source", source, "--store", store,
                          "--size", "32", "--steps", "2")
    assert built.returncode == 1, built.stderr  # some samples failed
    shown = flowstore_cli("inspect", store).stdout
    for text in (built.stderr, shown):
        assert "\x1b" not in text, text
        lines = text.splitlines()
        assert f"  {shown_class}/bad\\nclip: cannot open video (not a video, or an unsupported " \
               f"codec): bad\\nclip.mp4" in lines, text
        assert any(line.startswith(f"  {second.name}/red\\x1b[31m: ") for line in lines), text
    assert any(line.startswith("  ") and f"copy\\n{clip.stem} (" in line
               for line in shown.splitlines()), shown
    assert [len(line.split()) for line in shown.splitlines()
            if line.split()[:1] == [shown_class]] == [4], shown  # its counts: one table row
    copy = f"{first.name}/copy\n{clip.stem}"
    with flowstore.open(store) as opened:
        assert copy in {str(i) for name in ("train", "test") for i in opened.split(name).ids}
    with open_store(store) as opened:  # its flow damaged: `verify` names it, one line
        index = opened.read("id").tolist().index(copy)
    chunk_file(store, "flow", index).write_bytes(b"damaged")
    checked = flowstore_cli("verify", store)
    assert checked.returncode == 1, checked.stderr
    assert any(line.startswith(f"  {shown_class}/copy\\n{clip.stem}: ")
               for line in checked.stderr.splitlines()), checked.stderr
    # a store and a source named with a newline: the summary lines of build, verify and synth
    # were printed as they were, over two lines (found by review)
    odd = tmp_path / "new\nline.zarr"
    built = flowstore_cli("build", "videofolder", "--source", source, "--store", odd, "--size",
                          "32", "--steps", "2", "--max-per-split", "1", "-q")
    checked = flowstore_cli("verify", odd)
    made = flowstore_cli("synth", "videofolder", tmp_path / "more\nclips")
    for result in (built, checked, made):
        summary = [line for line in result.stdout.splitlines() if line]
        assert len(summary) == 1 and "\\n" in summary[0], result.stdout


def test_a_list_a_message_names_is_cut_to_three_and_a_count():
    """`trainers predict` named every class the run did not know on its one summary line:
    300 of a Kinetics-700 store, some 10 KB (found by review). Every such list is cut alike."""
    from flowstore.console import some_named

    assert some_named(["a", "b"]) == "'a', 'b'"
    assert some_named(["a", "b", "c"]) == "'a', 'b', 'c'"
    assert some_named([f"class_{k}" for k in range(300)]) == \
        "'class_0', 'class_1', 'class_2' and 297 more"
