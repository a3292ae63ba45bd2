"""Progress: a bar on a terminal, none in a pipe or a log (only the command's final line)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

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


def test_a_terminal_shows_the_bar_and_quiet_silences_it(tiny_tvhi_source, tmp_path):
    shown = _on_a_terminal("estimate", "tvhi", "--source", tiny_tvhi_source, *TINY_BUILD,
                           "--sample", "3")
    assert "estimate tvhi" in shown and "%|" in shown
    quiet = _on_a_terminal("estimate", "tvhi", "--source", tiny_tvhi_source, *TINY_BUILD,
                           "--sample", "3", "--quiet")
    assert "%|" not in quiet
