"""Shared fixtures: tiny generated sources, the real data beside the checkout, a CLI runner."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Before any test imports TensorFlow: it reads TF_ENABLE_ONEDNN_OPTS once, at its import, and
# the tests train on the kernels `trainers` train on (`trainers.backend.use_onednn_kernels`).
import trainers  # noqa: F401,E402
from tests.forked_cli import ForkedCli

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def run_python(script: str, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`script` run by a new interpreter that imports this checkout, with `args` as its
    `sys.argv[1:]`: for a command that must meet a signal or a patch of its own."""
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


#: The opening of a script whose command meets a Ctrl-C where Keras swallows it: inside
#: `pythonify_logs` (each batch's logs in fit, evaluate and predict), whose bare `except: pass`
#: drops the KeyboardInterrupt; once, at its first call. SIGINT's default handler is set first,
#: as a terminal has it: a test run started under nohup hands it on ignored, and the command
#: then installs no handler of its own. The script goes on to run its command.
CTRL_C_WHERE_KERAS_SWALLOWS = """
import os, signal, sys
from keras.src import backend
convert = backend.convert_to_numpy
def converting(value):
    if sys._getframe(1).f_code.co_name == "pythonify_logs":  # (inside its try)
        backend.convert_to_numpy = convert  # (once)
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))  # (the handler runs in here)
    return convert(value)
backend.convert_to_numpy = converting
signal.signal(signal.SIGINT, signal.default_int_handler)
"""


def load_benchmark(name: str):
    """`benchmarks/NAME.py` imported as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module
REAL_TVHI = SHARED / "data" / "tvhi"

# A tiny synthetic TV-HI: 4 clips per class (2 test, 2 in set 2), short and small.
TINY_SYNTH = dict(videos_per_class=4, negatives=1, min_frames=22, max_frames=30,
                  resolution=(96, 72), seed=0)
TINY_BUILD = ["--size", "32", "--steps", "4"]


@pytest.fixture(scope="session")
def tiny_tvhi_source(tmp_path_factory) -> Path:
    """A read-only tiny synthetic TV-HI source, shared by the session (copy it to change it)."""
    from flowstore.synth.tvhi import SynthTVHIConfig, write_synthetic_tvhi

    return write_synthetic_tvhi(tmp_path_factory.mktemp("synth") / "tvhi", SynthTVHIConfig(**TINY_SYNTH))


@pytest.fixture
def tvhi_source(tiny_tvhi_source, tmp_path) -> Path:
    """A private copy of the tiny source that a test may damage."""
    return Path(shutil.copytree(tiny_tvhi_source, tmp_path / "source"))


@pytest.fixture(params=[".zarr", ".h5"], ids=["zarr", "hdf5"])
def suffix(request) -> str:
    """Run a test once per backend."""
    return request.param


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_env():
    """A real moto S3 server on 127.0.0.1 with a bucket `features`, for the session: the AWS
    environment variables that point flowstore (s3fs) at it."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "flowstore-test", "AWS_SECRET_ACCESS_KEY": "flowstore-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="x", aws_secret_access_key="y").create_bucket(Bucket="features")
    yield env
    server.stop()


def in_ci() -> bool:
    """Whether the tests run in CI (`CI=true`, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_real_data(path: Path, what: str) -> Path:
    """`path`, a file of the real data in `../shared/data` beside the checkout, or stop the test.

    Outside CI a checkout without the real data skips these tests with a reason `-ra` shows.
    CI always has the data, so there its absence fails the test: a suite that skipped its
    real-data checks would otherwise pass without having checked anything real.
    """
    if path.is_file():
        return path
    message = f"{what} not found at {path}"
    if in_ci():
        pytest.fail(f"{message}, and CI (CI=true) always has the real data beside the "
                    "checkout: the checkout is incomplete", pytrace=False)
    pytest.skip(f"{message} (the real data beside the checkout; CI fails here)")


@pytest.fixture
def real_tvhi() -> Path:
    require_real_data(REAL_TVHI / "handShake_0001.avi", "real TV-HI clips")
    return REAL_TVHI


_FORKED_CLI = ForkedCli()
atexit.register(_FORKED_CLI.close)


def flowstore_cli(*args: str | Path, env: dict | None = None,
                  timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `flowstore` command in a process of its own (exit codes and stderr as users
    see them): forked from a server that has its imports done (`tests.forked_cli`), or in a
    new interpreter where `env` adds to the environment."""
    if env is None:
        result = _FORKED_CLI.run(list(map(str, args)), timeout)
        if result is not None:
            return result
    return subprocess.run([sys.executable, "-m", "flowstore", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def benchmark_cli(name: str, *args: str | Path, env: dict | None = None,
                  timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `benchmarks/NAME.py` as a user does, in a subprocess: its exit code, and its table
    and header as printed (the benchmarks' own argv and child processes, not pytest's)."""
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def benchmark_rows(out: str, first_cell: str | None = None) -> list[list[str]]:
    """The cells of the markdown table rows printed in `out` (not their heads or rules), those
    whose first cell is `first_cell` where it is given."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| ")]
    rows = [row for row in rows if not set("".join(row)) <= set("-:")]
    return [row for row in rows if first_cell is None or row[0] == first_cell]


def assert_benchmark_header(out: str, name: str, *args: str | Path) -> None:
    """The command, machine and date lines benchmarks/README.md promises of every script."""
    lines = out.splitlines()
    command = next((line for line in lines if line.startswith("- command: `")), None)
    assert command is not None and f"benchmarks/{name}.py" in command, out[:2000]
    assert all(str(arg) in command for arg in args), command
    assert any(line.startswith("- machine: ") and "cores (nproc)" in line for line in lines), out
    assert any(line.startswith("- date: 20") for line in lines), out


def benchmark_output(name: str, *args: str | Path, env: dict | None = None,
                     timeout: float = 300) -> str:
    """What `benchmarks/NAME.py ARGS` prints, once it has exited 0 and printed the header
    that names this command line, the machine and the date."""
    result = benchmark_cli(name, *args, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_benchmark_header(result.stdout, name, *args)
    return result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The user sees exactly one error line, no traceback, and exit code `code`."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def chunk_file(store: str | Path, name: str, index: int) -> Path:
    """The chunk file holding sample `index` of array `name` in a local Zarr store, where the
    store's own chunk key encoding puts it (flat `name/c.3.0.0`; nested `name/c/3/0/0` in stores
    made before flat keys): tests damage, delete or look for chunks through this, not by path."""
    from flowstore.store import open_store

    with open_store(store) as opened:
        return opened.chunk_path(name, index)


def break_chunk_index(path: str | Path, name: str, *, signature: bool = False) -> None:
    """Damage the chunk index (v1 B-tree) node of array `name` of the HDF5 store `path` (the
    node whose first child is the array's first chunk), so that the array can be neither read
    nor written: its first key's offset along the sample axis made 1, where no chunk starts
    ("bad coordinate offset": a column, of chunks of more than one sample), or with
    `signature` the node's signature overwritten ("wrong B-tree signature": any array)."""
    import re
    import struct

    import h5py

    with h5py.File(path, "r") as file:
        chunk, rank = file[name].id.get_chunk_info(0).byte_offset, file[name].ndim
    data = bytearray(Path(path).read_bytes())
    key = 8 + 8 * (rank + 1)  # (chunk size, filter mask, an offset per axis and one more)
    node, = [found.start() for found in re.finditer(b"TREE\x01\x00", data)
             if struct.unpack_from("<Q", data, found.start() + 24 + key)[0] == chunk]
    if signature:
        data[node:node + 4] = b"XXXX"
    else:  # (the key follows the node's 24-byte header)
        struct.pack_into("<Q", data, node + 24 + 8, 1)
    Path(path).write_bytes(bytes(data))


def chunk_and_folders(store: str | Path, name: str, index: int) -> set[str]:
    """That chunk file and every folder from its own up to the array's: what making the
    chunk durable fsyncs (flat keys: the file and the array's folder)."""
    chunk, top = chunk_file(store, name, index), Path(store) / name
    return {str(chunk), str(top),
            *(str(folder) for folder in chunk.parents if top in folder.parents)}


def without_modules_env(folder: Path, *modules: str) -> dict[str, str]:
    """The `PYTHONPATH` of a Python where `modules` (top-level names) are not installed, for a
    command's subprocess: a `sitecustomize` written in `folder` hides them from the path
    finder, so `import` fails and `importlib.util.find_spec` says None, as for a package never
    installed. (PyTorch and Keras probe with `find_spec`; `sys.modules[name] = None` makes it
    None too, but Keras takes a name in `sys.modules` for a module loaded.)"""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import importlib.machinery\n"
        "_find_spec = importlib.machinery.PathFinder.find_spec\n"
        f"_HIDDEN = {sorted(modules)!r}\n"
        "importlib.machinery.PathFinder.find_spec = staticmethod(\n"
        "    lambda name, *args: None if name.partition('.')[0] in _HIDDEN\n"
        "    else _find_spec(name, *args))\n")
    return {"PYTHONPATH": os.pathsep.join(
        [str(folder), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
