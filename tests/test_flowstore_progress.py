"""Progress: a bar on a terminal, none in a pipe or a log (only the command's final line)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from flowstore.build import BuildConfig, build
from flowstore.params import VideoParams
from tests.conftest import TINY_BUILD, chunk_file, flowstore_cli


def assert_no_bar(result: subprocess.CompletedProcess) -> None:
    """No tqdm fragment: no carriage return, no 'NN%|' bar."""
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    assert "\r" not in text and "%|" not in text, text


def test_no_progress_bar_when_stderr_is_not_a_terminal(tiny_tvhi_source, tmp_path):
    store = tmp_path / "s.zarr"
    built = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                          *TINY_BUILD)
    assert_no_bar(built)
    assert built.stderr == "" and len(built.stdout.splitlines()) == 1  # the final line only
    verified = flowstore_cli("verify", store)
    assert_no_bar(verified)
    assert verified.stderr == "" and len(verified.stdout.splitlines()) == 1
    chunk_file(store, "flow", 3).write_bytes(b"damaged")
    repaired = flowstore_cli("verify", store, "--repair", "--source", tiny_tvhi_source)
    assert_no_bar(repaired)
    assert "repaired 1 of 1" in repaired.stdout
    shown = flowstore_cli("show", store, "--out", tmp_path / "show", "--gif")
    assert_no_bar(shown)
    assert shown.stderr == "" and len(shown.stdout.splitlines()) == 1
    assert_no_bar(flowstore_cli("estimate", "tvhi", "--source", tiny_tvhi_source, *TINY_BUILD,
                                "--sample", "3"))


def _on_a_terminal(*args) -> str:
    """Run `flowstore ARGS` with stderr on a pseudo-terminal; what the terminal got."""
    leader, follower = pty.openpty()
    # a real terminal has a size; a fresh pty says 0 columns, in which tqdm draws nothing
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        done = subprocess.run([sys.executable, "-m", "flowstore", *map(str, args)],
                              stdout=subprocess.PIPE, stderr=follower, timeout=300)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert done.returncode == 0
        return b"".join(chunks).decode(errors="replace")
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)


@pytest.fixture(scope="module")
def tiny_store(tiny_tvhi_source, tmp_path_factory) -> Path:
    """One sample per split, for `verify` and `show` to read (neither changes it)."""
    store = tmp_path_factory.mktemp("store") / "s.zarr"
    build(BuildConfig(dataset="tvhi", source=tiny_tvhi_source, store=store,
                      params=VideoParams(size=32, steps=4), max_per_split=1, progress=False,
                      workers=1))
    return store


#: Each command with a bar: its arguments for a source, a store to read and a folder of its own.
BAR_COMMANDS = {
    "estimate": lambda source, store, own: ["estimate", "tvhi", "--source", source, *TINY_BUILD,
                                            "--sample", "3"],
    "build": lambda source, store, own: ["build", "tvhi", "--source", source, "--store",
                                         own / "s.zarr", *TINY_BUILD, "--max-per-split", "1"],
    "verify": lambda source, store, own: ["verify", store],
    "show": lambda source, store, own: ["show", store, "--out", own],
}


@pytest.mark.parametrize("command", BAR_COMMANDS)
def test_a_terminal_shows_the_bar_and_quiet_silences_it(command, tiny_tvhi_source, tiny_store,
                                                        tmp_path):
    """In a pipe no bar shows either way, so only a terminal tells whether -q reaches the bar."""
    args = BAR_COMMANDS[command]
    shown = _on_a_terminal(*args(tiny_tvhi_source, tiny_store, tmp_path / "shown"))
    assert re.search(rf"\r{command}( tvhi)?: 100%\|", shown), shown  # its own, to the end
    quiet = _on_a_terminal(*args(tiny_tvhi_source, tiny_store, tmp_path / "quiet"), "-q")
    assert "%|" not in quiet, quiet


def test_verify_counts_the_samples_it_checks(tiny_store):
    """On a partly built store (3 of 16 done) the bar goes to the 3 it checks, as its summary
    says ("checked 3 sample(s)"), not over every row of the store."""
    shown = _on_a_terminal("verify", tiny_store)
    assert re.search(r"verify: 100%\|[^\r]*\| 3/3 ", shown), shown
