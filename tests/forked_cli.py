"""`python -m flowstore ARGS` for the tests, without paying its imports on every call.

About 500 of the default run's tests run the real `flowstore` command in a process of its own,
to see its exit code and output as a user does. Each such process spent about 0.7 s of its
~1 s importing zarr, numpy, Typer, OpenCV and the dataset catalogue before it did anything,
over five minutes of CPU a run. Here one server process per pytest worker imports them once
and forks a child for each command: the child runs `flowstore/__main__.py` as `python -m`
does (`runpy`), with the test's working folder, stdout and stderr in files, and ends as any
Python process ends (atexit handlers, threads joined, `SystemExit` codes, an uncaught
exception's traceback), so the exit code and output are the command's own.

What a fork shares that a new interpreter would not: modules imported before the command ran
(flowstore's own import errors then show when the server starts, which is then not used), and
the hash seed. A call whose environment differs from the one the server started with (a
module may read it at import) runs in a new interpreter, as does every call where the server
cannot start or was not single-threaded when it would fork, and every call where
`FLOWSTORE_TESTS_NEW_INTERPRETER=1` is set. Measured on 2 cores, the seven test files that
run the command most, back to back: 326 s in new interpreters, 223 s forked.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: What the server imports before it forks: what any `flowstore` command imports (Typer's
#: argument coercion imports pydantic as it parses).
PRELOAD = ("flowstore.console", "flowstore.cli", "flowstore.build", "flowstore.datasets",
           "flowstore.inspect", "flowstore.verify", "flowstore.synth", "zarr", "h5py", "cv2",
           "numpy", "dask", "typer._adapters", "runpy")


def serve(requests: int, replies: int) -> None:
    """The server: one JSON request per line on fd `requests` (args, cwd, out and err
    paths); forks the command, writes `{"pid": ...}` then `{"returncode": ...}` on `replies`."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    sys.stdout.flush()
    sys.stderr.flush()
    reader, writer = os.fdopen(requests, "r"), os.fdopen(replies, "w")
    ready = threading.active_count() == 1  # (a fork of a threaded process can deadlock)
    writer.write(json.dumps({"ready": ready}) + "\n")
    writer.flush()
    if not ready:
        return
    for line in reader:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            reader.close()
            writer.close()
            _run_command(request)  # (raises SystemExit or the command's exception: never returns)
        writer.write(json.dumps({"pid": pid}) + "\n")
        writer.flush()
        _, status = os.waitpid(pid, 0)
        writer.write(json.dumps({"returncode": _returncode(status)}) + "\n")
        writer.flush()


def _run_command(request: dict) -> None:
    import runpy

    os.chdir(request["cwd"])
    sys.path[:2] = [request["cwd"]]  # (the server's `-c` put the checkout before it)
    if request["per_test"] is not None:
        os.environ[_PER_TEST] = request["per_test"]
    with open(os.devnull, "rb") as stdin, open(request["out"], "wb") as out, \
            open(request["err"], "wb") as err:
        os.dup2(stdin.fileno(), 0)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
    sys.argv = ["flowstore", *request["args"]]
    # As `python -m flowstore`: __main__ runs the command; what it raises ends this process.
    runpy.run_module("flowstore", run_name="__main__", alter_sys=True)
    raise SystemExit(0)


def _returncode(status: int) -> int:
    """As `subprocess` says it: the exit code, or minus the signal that ended the process."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


#: Set (to anything but 0) to run every command in a new interpreter, as before the server.
NEW_INTERPRETER = "FLOWSTORE_TESTS_NEW_INTERPRETER"

#: Set by pytest for each test, so never the same twice; flowstore does not read it.
_PER_TEST = "PYTEST_CURRENT_TEST"


class ForkedCli:
    """A test worker's client of the server; `run` answers as `subprocess.run` would, or
    None where the call must run in a new interpreter."""

    def __init__(self) -> None:
        self._server: subprocess.Popen | None = None
        self._env: dict[str, str] = {}
        self._broken = False
        self._pending = b""
        self._busy = threading.Lock()

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess | None:
        """`flowstore ARGS` in this process's environment, or None where the server cannot
        run it (see the module's docstring)."""
        if os.environ.get(NEW_INTERPRETER, "") not in ("", "0"):
            return None
        if not self._busy.acquire(blocking=False):  # (a test's threads run commands at once)
            return None
        try:
            return self._run(args, timeout)
        finally:
            self._busy.release()

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess | None:
        env = {k: v for k, v in os.environ.items() if k != _PER_TEST}
        if self._broken or (self._server is not None and env != self._env):
            return None
        if self._server is None and not self._start(env):
            return None
        with tempfile.TemporaryDirectory(prefix="forked-cli-") as folder:
            out, err = Path(folder) / "out", Path(folder) / "err"
            self._send({"args": args, "cwd": os.getcwd(), "out": str(out), "err": str(err),
                        "per_test": os.environ.get(_PER_TEST)})
            pid = self._reply(30)["pid"]
            try:
                returncode = self._reply(timeout)["returncode"]
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._reply(30)
                raise subprocess.TimeoutExpired([sys.executable, "-m", "flowstore", *args],
                                                timeout) from None
            # (read as `subprocess.run(text=True)` reads: the locale's encoding, universal
            # newlines)
            return subprocess.CompletedProcess([sys.executable, "-m", "flowstore", *args],
                                               returncode, out.read_text(), err.read_text())

    def close(self) -> None:
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            self._server = None

    def _start(self, env: dict[str, str]) -> bool:
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r}); "
                f"from tests.forked_cli import serve; serve({requests_read}, {replies_write})")
        self._server = subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(requests_read, replies_write))
        os.close(requests_read)
        os.close(replies_write)
        self._requests, self._replies = requests_write, replies_read
        self._env = env
        try:
            ready = self._reply(120)["ready"]
        except (subprocess.TimeoutExpired, EOFError):
            ready = False
        if not ready:
            self._broken = True
            self.close()
            os.close(self._requests)
            os.close(self._replies)
        return ready

    def _send(self, request: dict) -> None:
        os.write(self._requests, (json.dumps(request) + "\n").encode())

    def _reply(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise subprocess.TimeoutExpired("flowstore", timeout)
            chunk = os.read(self._replies, 4096)
            if not chunk:
                self._broken = True
                raise EOFError("the forked-CLI server ended")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)
