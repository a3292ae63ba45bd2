"""`--scheduler`: extraction on a real dask.distributed cluster (separate worker processes)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest

from flowstore.build import BuildConfig, build
from flowstore.errors import FlowstoreError, StoreError
from flowstore.params import VideoParams
from flowstore.store import open_store
from tests.conftest import chunk_file


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


def _run_on_cluster(address, fn, arguments, finished, **kwargs):
    """`fn` over `arguments` on the cluster at `address`, as a build runs its tasks (the
    sample is the first argument, unless `sample_of` says otherwise)."""
    from flowstore.worker import TaskOutcome
    from flowstore.parallel import Cluster

    kwargs.setdefault("sample_of", lambda args: args[0])
    with Cluster(address) as cluster:
        cluster.run(fn, arguments, finished, failed=TaskOutcome, **kwargs)


def _config(source, store, **kwargs):
    return BuildConfig(dataset="tvhi", source=source, store=store, progress=False,
                       params=VideoParams(size=32, steps=4), **kwargs)


def test_cluster_build_equals_threaded_build(tiny_tvhi_source, tmp_path, cluster):
    threaded = build(_config(tiny_tvhi_source, tmp_path / "threads.zarr"))
    remote = build(_config(tiny_tvhi_source, tmp_path / "cluster.zarr",
                           scheduler=cluster.scheduler_address))
    assert remote.ok and remote.computed == threaded.computed == 16
    assert remote.fingerprint == threaded.fingerprint
    with open_store(tmp_path / "threads.zarr") as a, open_store(tmp_path / "cluster.zarr") as b:
        for name in a.array_names():
            np.testing.assert_array_equal(a.read(name), b.read(name))


def test_a_cluster_build_reuses_an_hdf5_store_and_lets_it_go(tiny_tvhi_source, tmp_path,
                                                             cluster):
    """`--reuse-from` on a cluster: the workers copy OLD's samples, and close OLD when the
    build ends (they kept an HDF5 OLD open, so its lock refused any later build of it)."""
    old = tmp_path / "old.h5"
    assert build(_config(tiny_tvhi_source, old)).computed == 16
    remote = build(_config(tiny_tvhi_source, tmp_path / "new.zarr", reuse_from=old,
                           scheduler=cluster.scheduler_address))
    assert remote.ok and (remote.reused, remote.computed) == (16, 0)
    with open_store(old) as a, open_store(tmp_path / "new.zarr") as b:
        for name in ("flow", "frames", "middle_frame", "checksum", "id"):
            np.testing.assert_array_equal(a.read(name), b.read(name))
    again = build(_config(tiny_tvhi_source, old, overwrite=True))  # (refused while held)
    assert again.ok and again.computed == 16


def test_workers_of_another_opencv_are_refused_before_anything_is_made(tiny_tvhi_source,
                                                                       tmp_path, cluster,
                                                                       monkeypatch):
    """The workers' OpenCV is asked before the new store's folder and lock are made: a cluster
    whose release is not OLD's, or that has several, left the folder and the lock file of a
    store that was never built (the same refusals on threads leave nothing)."""
    from flowstore.errors import StoreMismatchError
    from flowstore.parallel import Cluster

    old = tmp_path / "old.zarr"
    assert build(_config(tiny_tvhi_source, old)).computed == 16
    new = tmp_path / "sub" / "new.zarr"
    from flowstore.params import EXTRACTION_VERSION

    releases = {"tcp://a:1": (EXTRACTION_VERSION, "0.0.1")}
    monkeypatch.setattr(Cluster, "on_each_worker", lambda self, fn: releases)
    with pytest.raises(StoreMismatchError, match="this build extracts with OpenCV 0.0.1"):
        build(_config(tiny_tvhi_source, new, reuse_from=old,
                      scheduler=cluster.scheduler_address))
    assert not (tmp_path / "sub").exists()
    releases["tcp://b:1"] = (EXTRACTION_VERSION, "0.0.2")
    with pytest.raises(FlowstoreError, match="have OpenCV 0.0.1, 0.0.2"):
        build(_config(tiny_tvhi_source, new, scheduler=cluster.scheduler_address))
    assert not (tmp_path / "sub").exists()


def test_a_cluster_build_connects_to_its_scheduler_once(tiny_tvhi_source, tmp_path, cluster,
                                                      monkeypatch):
    """One connection for the whole build: it connected once to ask the workers' OpenCV and
    again to run the tasks, each connection with its own probe of the scheduler."""
    import distributed

    made = []

    class Counted(distributed.Client):
        def __init__(self, *args, **kwargs):
            made.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(distributed, "Client", Counted)
    result = build(_config(tiny_tvhi_source, tmp_path / "once.zarr",
                           scheduler=cluster.scheduler_address))
    assert result.ok and result.computed == 16
    assert made == [cluster.scheduler_address]


def test_relative_source_and_store_paths_reach_the_workers(tiny_tvhi_source, tmp_path, cluster,
                                                         monkeypatch):
    """The workers run in their own working directory (here: where the cluster started), so a
    path relative to the coordinator's found nothing there and every sample "failed"."""
    monkeypatch.chdir(tmp_path)
    source = Path(os.path.relpath(tiny_tvhi_source, tmp_path))
    result = build(_config(source, Path("rel.zarr"), scheduler=cluster.scheduler_address))
    assert result.ok and result.computed == 16, result.failures
    with open_store(tmp_path / "rel.zarr") as store:
        assert store.read("done").all()


def test_an_overwrite_with_other_parameters_on_the_same_cluster_writes_the_new_layout(
        tiny_tvhi_source, tmp_path, cluster):
    """Issue 12, item 2: worker processes outlive a build. After the first build they hold a
    handle on the float16 store; the `--overwrite --flow-dtype float32` build on the same
    cluster must write float32 chunks (it wrote float16 ones with the stale handle, and the
    checksum, taken from the arrays in memory, let the coordinator mark them done)."""
    from distributed import Client

    from flowstore.verify import verify

    store = tmp_path / "s.zarr"
    first = build(_config(tiny_tvhi_source, store, scheduler=cluster.scheduler_address))
    assert first.ok and first.computed == 16
    with Client(cluster) as client:  # both workers wrote, so both hold a handle on the old store
        handles = client.run(lambda: len(__import__("flowstore.worker").worker._OPEN_STORES))
        assert len(handles) == 2 and all(handles.values()), handles
    second = build(BuildConfig(dataset="tvhi", source=tiny_tvhi_source, store=store,
                               progress=False, overwrite=True,
                               params=VideoParams(size=32, steps=4, flow_dtype="float32"),
                               scheduler=cluster.scheduler_address))
    assert second.ok and second.computed == 16, second.failures
    checked = verify(store)
    assert checked.ok and checked.checked == 16, checked.problems
    threaded = build(BuildConfig(dataset="tvhi", source=tiny_tvhi_source,
                                 store=tmp_path / "threads.zarr", progress=False,
                                 params=VideoParams(size=32, steps=4, flow_dtype="float32")))
    with open_store(store) as remote, open_store(tmp_path / "threads.zarr") as local:
        assert remote.read("flow").dtype == np.float32
        np.testing.assert_array_equal(remote.read("flow"), local.read("flow"))
    assert threaded.ok


def _a_task_with_a_bug(index):
    raise TypeError(f"a bug in task {index}")


def test_a_task_that_raises_on_the_cluster_is_an_internal_error(cluster):
    """Only what the cluster gives up on (a killed worker, a lost connection) is a failure of
    the sample; an exception out of the task itself is a bug, told with its traceback."""
    outcomes = []
    _run_on_cluster(cluster.scheduler_address, _a_task_with_a_bug, [(3,)], outcomes.append)
    [outcome] = outcomes
    assert outcome.index == 3 and outcome.reason is None
    assert "TypeError: a bug in task 3" in outcome.internal_error
    assert "_a_task_with_a_bug" in outcome.internal_error


def test_a_worker_that_cannot_import_the_code_is_one_line(cluster, tmp_path, monkeypatch):
    """A worker whose environment lacks flowstore: distributed raised a plain
    Exception("ModuleNotFoundError(...)"), a traceback of 40 lines and exit 1. A module only
    this process can import stands in for flowstore."""
    import importlib
    import sys

    from flowstore.parallel import Cluster

    (tmp_path / "only_here.py").write_text("def version():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    only_here = importlib.import_module("only_here")
    try:
        with Cluster(cluster.scheduler_address) as connected:
            with pytest.raises(FlowstoreError, match=(
                    r"^a worker of the Dask scheduler .* cannot run flowstore's code \(.*No "
                    r"module named 'only_here'.*\): install flowstore, the release this process "
                    r"runs, in every worker's environment$")):
                connected.on_each_worker(only_here.version)
            with pytest.raises(TypeError, match="a bug in task"):  # anything else: raised
                connected.on_each_worker(_a_worker_function_with_a_bug)
    finally:
        sys.modules.pop("only_here", None)


def _a_worker_function_with_a_bug():
    raise TypeError("a bug in task")


def _dies_on_sample_0(task, *args):
    """A build's task, but the worker running sample 0's dies (as one killed by the kernel's
    out-of-memory killer would)."""
    if args[4] == 0:
        os._exit(1)
    return task(*args)


def test_a_task_the_cluster_gives_up_on_fails_its_sample_and_the_build_goes_on(
        tiny_tvhi_source, tmp_path, monkeypatch):
    """A killed worker's task (KilledWorker) is its sample's failure. The cluster told the
    sample by the task's last argument, which `--reuse-from` made the reuse entry (None): the
    failure was made for sample None and the build crashed in a traceback."""
    import functools

    import dask
    import distributed

    map_tasks = distributed.Client.map

    def dying(self, fn, *iterables, **kwargs):  # (on the coordinator: the workers run it)
        return map_tasks(self, functools.partial(_dies_on_sample_0, fn), *iterables, **kwargs)

    monkeypatch.setattr(distributed.Client, "map", dying)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                     host="127.0.0.1", dashboard_address="127.0.0.1:0") as local:
        result = build(_config(tiny_tvhi_source, tmp_path / "s.zarr",
                               scheduler=local.scheduler_address))
    with open_store(tmp_path / "s.zarr") as store:
        first = str(store.read("id")[0])
    # (the tasks queued on the dead worker are given up on with it)
    assert first in result.failures and not result.ok
    assert all(reason.startswith("task failed on the cluster: KilledWorker")
               for reason in result.failures.values()), result.failures
    # said without the task's key, so that they group as one reason (`inspect`, the summary)
    assert len(set(result.failures.values())) == 1 < len(result.failures), result.failures
    assert result.computed == 16 - len(result.failures) > 0
    monkeypatch.undo()
    again = build(_config(tiny_tvhi_source, tmp_path / "s.zarr"))  # (on threads)
    assert again.ok and again.computed == len(result.failures)


def _sample_index(index):
    return index


def test_a_cluster_build_keeps_a_bounded_window_of_tasks_in_flight(cluster):
    """The scheduler holds at most about `window` of a build's tasks at once, however many
    samples it has: its memory, and the coordinator's futures, do not grow with the store
    (all of them were submitted at once before: 40 here, 300,000 on Kinetics)."""
    from distributed import Client

    seen, held = [], []
    with Client(cluster.scheduler_address, set_as_default=False) as observer:
        def finished(index):
            seen.append(index)
            held.append(observer.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))

        _run_on_cluster(cluster.scheduler_address, _sample_index, [(i,) for i in range(40)],
                        finished, window=6)
    assert sorted(seen) == list(range(40))
    # the window, and released tasks the scheduler may not have forgotten yet
    assert max(held) <= 12, held


def test_hdf5_with_a_scheduler_is_refused(tiny_tvhi_source, tmp_path):
    with pytest.raises(StoreError, match="one process"):
        build(_config(tiny_tvhi_source, tmp_path / "s.h5", scheduler="tcp://127.0.0.1:1"))


def test_workers_with_a_scheduler_is_refused_not_ignored(tiny_tvhi_source, tmp_path):
    """`--workers 8 --scheduler ...` ran on the cluster's workers, the 8 unsaid and unused."""
    from tests.conftest import assert_one_line_error, flowstore_cli

    result = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store",
                           tmp_path / "s.zarr", "--workers", "8", "--scheduler",
                           "tcp://127.0.0.1:9")
    assert assert_one_line_error(result) == (
        "error: --workers does not apply with --scheduler: the cluster's workers run the tasks "
        "(`dask worker --nthreads N` sets theirs)")
    assert not (tmp_path / "s.zarr").exists()
    assert BuildConfig(dataset="tvhi", source=tiny_tvhi_source, store=tmp_path / "s.zarr",
                       params=VideoParams()).workers >= 1  # (the default: this process's cores)
    # An empty address (an unset variable in a script) built on threads without a word.
    result = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store",
                           tmp_path / "s.zarr", "--scheduler", "")
    assert assert_one_line_error(result) == (
        "error: --scheduler needs the scheduler's address (tcp://HOST:PORT), got an empty one")
    assert not (tmp_path / "s.zarr").exists()


def test_unreachable_scheduler_is_a_clear_error(tiny_tvhi_source, tmp_path, monkeypatch):
    from flowstore import parallel

    # (distributed retries a refused connection until the timeout: the same error, in 1 s)
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(FlowstoreError, match="cannot reach Dask scheduler"):
        build(_config(tiny_tvhi_source, tmp_path / "s.zarr", scheduler="tcp://127.0.0.1:9"))


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1:abc", "ValueError: invalid literal for int"),
    ("tls://127.0.0.1:9", "TypeError: TLS expects a `ssl_context`"),
    # Dask's own words for an address it refuses before connecting, not "something there
    # answered, but not as a Dask scheduler" of a server never asked (found by review)
    ("tpc://127.0.0.1:8786", "ValueError: unknown address scheme 'tpc'"),
    ("tcp://[::1:8786", "ValueError: invalid address '[::1:8786'"),
    ("tcp://127.0.0.1:99999", "port 99999 is out of range (1-65535)"),  # (was a 10 s wait)
    ("tcp://127.0.0.1:65536", "port 65536 is out of range (1-65535)"),
    ("tcp://127.0.0.1:0", "port 0 is out of range (1-65535)"),
])
def test_a_malformed_scheduler_address_is_one_line(tiny_tvhi_source, tmp_path, address, reason):
    """Each raised out of distributed (a traceback, exit 1), and the half-made client's
    clean-up held the exit 20 s more."""
    with pytest.raises(FlowstoreError, match=f"cannot reach Dask scheduler '{re.escape(address)}'"
                                             f": {re.escape(reason)}"):
        build(_config(tiny_tvhi_source, tmp_path / "s.zarr", scheduler=address))
    assert not (tmp_path / "s.zarr").exists()


def test_a_port_that_never_answers_dasks_handshake_is_one_line_in_time(
        tiny_tvhi_source, tmp_path, monkeypatch):
    """The dashboard's port (8787, one digit from the scheduler's 8786), or any server that
    accepts a connection and answers no Dask handshake: the build waited forever, printing
    nothing (distributed's timeout covers the connection, not the handshake)."""
    import socket
    import time

    from flowstore import parallel

    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 1)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the backlog), says nothing
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        began = time.monotonic()
        with pytest.raises(FlowstoreError, match="nothing there answered as a Dask scheduler "
                                                 "within 1 s"):
            build(_config(tiny_tvhi_source, tmp_path / "s.zarr", scheduler=address))
    assert time.monotonic() - began < 10


def test_a_server_that_speaks_first_is_said_to_be_no_scheduler(tiny_tvhi_source, tmp_path):
    """An SSH server on the port: distributed read its banner's bytes as a message's length,
    and the line said "MemoryError: Unable to allocate 2.82 EiB for an array"."""
    import socket
    import threading

    with socket.create_server(("127.0.0.1", 0)) as server:
        def greet() -> None:
            with contextlib.suppress(OSError):
                while True:
                    connection, _ = server.accept()
                    connection.sendall(b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.1\r\n")
                    connection.close()

        threading.Thread(target=greet, daemon=True).start()
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(FlowstoreError, match=re.escape(
                f"cannot reach Dask scheduler {address!r}: something there answered, but not "
                f"as a Dask scheduler (another server on that port?)")):
            build(_config(tiny_tvhi_source, tmp_path / "s.zarr", scheduler=address))


def test_a_worker_killed_mid_build_leaves_a_truthful_store(tmp_path):
    """SIGKILL one worker process while it extracts: the build completes (the nanny restarts the
    worker and the task is retried) or leaves those samples not done; never a false `done`.

    The kill itself is checked too: it came while samples were still to build, the process is
    gone, and the scheduler saw that worker leave unexpectedly with tasks in hand (which it
    then ran elsewhere), so the test cannot pass by the build finishing first."""
    import os
    import signal
    import threading

    import distributed
    import psutil

    from flowstore.synth.tvhi import SynthTVHIConfig, write_synthetic_tvhi
    from flowstore.verify import verify

    source = write_synthetic_tvhi(tmp_path / "src", SynthTVHIConfig(
        videos_per_class=10, negatives=0, min_frames=60, max_frames=90, resolution=(320, 240)))
    params = VideoParams(size=96, steps=16)
    reference = build(BuildConfig(dataset="tvhi", source=source, store=tmp_path / "ref.zarr",
                                  params=params, progress=False))
    store = tmp_path / "killed.zarr"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        victim, victim_pid = next(iter(client.run(os.getpid).items()))  # (address, pid)
        stop = threading.Event()
        done_at_kill: list[int] = []
        flow_chunks: list[Path] = []

        def samples_written() -> int:
            """Samples whose flow chunk a worker has written: the workers' own progress, seen
            at once (the coordinator's `done` column is written only now and then)."""
            if not flow_chunks:
                try:  # where the chunks go, once the store is there
                    flow_chunks.extend(chunk_file(store, "flow", index) for index in range(40))
                except (OSError, StoreError):
                    return 0
            return sum(chunk.is_file() for chunk in flow_chunks)

        def kill_one_worker_mid_build():
            while not stop.is_set():
                written = samples_written()
                if written >= 3:
                    os.kill(victim_pid, signal.SIGKILL)
                    done_at_kill.append(written)
                    return
                stop.wait(0.01)

        killer = threading.Thread(target=kill_one_worker_mid_build, daemon=True)
        killer.start()
        result = build(BuildConfig(dataset="tvhi", source=source, store=store, params=params,
                                   progress=False, scheduler=cluster.scheduler_address))
        stop.set()
        killer.join()
        assert done_at_kill and done_at_kill[0] < 40, "the worker was not killed mid-build"
        assert not psutil.pid_exists(victim_pid) or \
            psutil.Process(victim_pid).status() == psutil.STATUS_ZOMBIE
        left = [event for _, event in client.get_events("all")
                if event.get("action") == "remove-worker" and event.get("worker") == victim]
        assert left and left[0]["expected"] is False, left
        assert left[0]["processing-tasks"], "the killed worker held no task to retry"
        assert victim_pid not in client.run(os.getpid).values()
        if not result.ok:  # whatever the cluster gave up on is simply retried by a re-run
            result = build(BuildConfig(dataset="tvhi", source=source, store=store, params=params,
                                       progress=False, scheduler=cluster.scheduler_address))
    assert result.ok
    assert verify(store).ok
    with open_store(tmp_path / "ref.zarr") as a, open_store(store) as b:
        assert b.read("done").all() and reference.computed == 40
        for name in ("middle_frame", "frames", "flow", "checksum"):
            np.testing.assert_array_equal(a.read(name), b.read(name))


def _slow_sample(index):
    import time

    time.sleep(0.3)
    return index


@pytest.mark.parametrize("resize_every", [None, 0.0], ids=["default", "every-batch"])
def test_a_lost_scheduler_stops_the_build_in_one_line_and_leaves_samples_pending(
        tmp_path, monkeypatch, resize_every, caplog):
    """The scheduler gone mid-build: every task left was recorded as its sample's failure, each
    with a reason of its own (the task's key in it: nothing grouped, a line a sample), and so
    were the samples never handed out; now the build stops, saying so, and they stay pending.
    Also when the window is re-sized after the loss (asking the scheduler its threads raised
    distributed's CommClosedError, a traceback: seen once in CI at the default interval)."""
    import subprocess
    import sys

    from flowstore import parallel

    if resize_every is not None:
        monkeypatch.setattr(parallel, "WINDOW_RESIZE_S", resize_every)

    address, scheduler = _scheduler_process()
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
         "--no-dashboard", "--local-directory", str(tmp_path)], stderr=subprocess.DEVNULL)
    outcomes = []

    def finished(outcome):
        outcomes.append(outcome)
        if len(outcomes) == 1:
            scheduler.kill()

    try:
        with pytest.raises(FlowstoreError, match="lost the connection to the Dask scheduler"):
            _run_on_cluster(address, _slow_sample, [(i,) for i in range(30)], finished)
    finally:
        for process in (worker, scheduler):
            process.kill()
            process.wait(timeout=30)
    assert len(outcomes) < 30 and not any(getattr(o, "reason", None) for o in outcomes)
    # (distributed.client logged the loss as 35 lines of traceback besides the one line)
    assert not [r for r in caplog.records if r.name.startswith("distributed.client")
                and r.levelno >= logging.ERROR]


def test_asking_the_workers_of_a_lost_scheduler_is_one_line():
    """Asking every worker something (their OpenCV at the start, the reuse readers' clean-up at
    the end) of a scheduler gone: distributed's CommClosedError, a traceback in place of the
    build's one line."""
    from flowstore.parallel import Cluster

    address, scheduler = _scheduler_process()
    try:
        with Cluster(address) as cluster:
            scheduler.kill()
            scheduler.wait(timeout=30)
            with pytest.raises(FlowstoreError, match="lost the connection to the Dask "
                                                     "scheduler"):
                cluster.on_each_worker(os.getpid)
    finally:
        scheduler.kill()
        scheduler.wait(timeout=30)


def _scheduler_process() -> tuple[str, "subprocess.Popen"]:
    """(address, process) of a Dask scheduler started in a process of its own on a free port,
    once it accepts connections."""
    import subprocess
    import sys

    from tests.conftest import free_port

    port = free_port()
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--no-dashboard"], stderr=subprocess.DEVNULL)
    _wait_until_listening(port, scheduler)  # a Cluster gives a scheduler 10 s to answer
    return f"tcp://127.0.0.1:{port}", scheduler


def _wait_until_listening(port: int, process, timeout: float = 120.0) -> None:
    """Until a freshly started scheduler accepts connections: its interpreter's start-up alone
    can take seconds on a loaded 2-core machine."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the scheduler exited (its port taken meanwhile?)"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"no scheduler listening on port {port} after {timeout:.0f} s")


def _short_task(index):
    import time

    time.sleep(0.05)
    return index


def test_workers_that_join_later_widen_the_window_of_tasks_in_flight(monkeypatch):
    """The window was sized once, at the start: a build started before its workers (or on an
    adaptive cluster) never had more than the minimum window of tasks in flight, 32, however
    many worker threads joined."""
    import threading

    import distributed

    from flowstore import parallel

    monkeypatch.setattr(parallel, "WINDOW_RESIZE_S", 0.0)
    submitted, finished, in_flight = [0], [0], []
    map_tasks = distributed.Client.map

    def counted_map(self, fn, *iterables, **kwargs):
        futures = map_tasks(self, fn, *iterables, **kwargs)
        submitted[0] += len(futures)
        return futures

    def done(index):
        finished[0] += 1
        in_flight.append(submitted[0] - finished[0])

    monkeypatch.setattr(distributed.Client, "map", counted_map)
    with distributed.LocalCluster(n_workers=0, threads_per_worker=16, processes=False,
                                  dashboard_address="127.0.0.1:0") as cluster:  # (None still takes 8787)
        threading.Timer(0.5, cluster.scale, [1]).start()  # 16 threads join after the start
        _run_on_cluster(cluster.scheduler_address, _short_task, [(i,) for i in range(400)], done)
    assert finished[0] == 400
    assert max(in_flight) > parallel.CLUSTER_MIN_WINDOW, max(in_flight)  # 8 a thread: 128


def test_a_cluster_with_no_workers_is_said_so_and_the_build_goes_on_when_one_joins(
        monkeypatch, capsys):
    """Tasks on a scheduler with no worker (every one died, or none has joined yet) wait for
    one in Dask: the build waited for ever, printing nothing."""
    import threading

    import distributed

    from flowstore import parallel

    monkeypatch.setattr(parallel, "NO_WORKERS_CHECK_S", 0.2)
    finished = []
    with distributed.LocalCluster(n_workers=0, threads_per_worker=2, processes=False,
                                  dashboard_address="127.0.0.1:0") as cluster:
        threading.Timer(1.5, cluster.scale, [1]).start()
        _run_on_cluster(cluster.scheduler_address, _short_task, [(i,) for i in range(20)],
                        finished.append)
    assert sorted(finished) == list(range(20))
    err = capsys.readouterr().err
    assert f"the Dask scheduler {cluster.scheduler_address!r} has no workers: 20 tasks wait" in err
    assert err.count("has no workers") == 1, err  # said once, not at every check
    assert err.count("1 worker(s) joined the Dask scheduler") == 1, err  # (not every batch)


def test_a_cluster_whose_worker_is_busy_is_not_said_to_have_none(monkeypatch, capsys):
    """Tasks longer than the check between finished ones (every real build's) are no sign of
    a cluster without workers: only a scheduler with no worker thread is said to have none."""
    import distributed

    from flowstore import parallel

    monkeypatch.setattr(parallel, "NO_WORKERS_CHECK_S", 0.1)
    finished = []
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0") as cluster:
        _run_on_cluster(cluster.scheduler_address, _slow_sample, [(i,) for i in range(3)],
                        finished.append)
    assert sorted(finished) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "has no workers" not in err and "joined" not in err, err


def test_a_clip_missing_for_every_process_is_not_blamed_on_the_workers(tvhi_source, tmp_path):
    """Only a clip this process sees and the worker does not is the workers' mount's fault;
    one missing for all is the source's, said as a threaded build says it."""
    import distributed

    (tvhi_source / "hug_0001.avi").unlink()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0") as in_process:
        result = build(_config(tvhi_source, tmp_path / "w.zarr",
                               scheduler=in_process.scheduler_address))
    assert result.failures == {"hug_0001": "video file is missing: hug_0001.avi"}


def test_a_ctrl_c_in_the_cluster_coordinators_callback_waits_for_it_to_end(cluster):
    """On a cluster, a Ctrl-C inside `finished` (the coordinator recording a sample in its
    ledger) interrupted it halfway, which the threaded path had been kept from doing."""
    import signal
    import time

    steps = []

    def finished(value):
        steps.append("recording")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        steps.append("recorded")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # (xdist ignores it)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run_on_cluster(cluster.scheduler_address, _sample_index, [(1,)], finished)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert steps == ["recording", "recorded"]


def _unseen_source(monkeypatch):  # what a worker without the source's mount meets
    from flowstore.datasets.base import VideoDataset
    from flowstore.errors import SampleError

    def unseen(self, path, params):
        raise SampleError(f"video file is missing: {Path(path).name}")

    monkeypatch.setattr(VideoDataset, "extract", unseen)


def _unseen_store(monkeypatch):  # a worker without the store's mount
    from flowstore import worker

    def unseen(key):
        raise StoreError(f"no store at {key.path!r}")

    monkeypatch.setattr(worker, "_writer", unseen)


@pytest.mark.parametrize("unseen, hide", [("source", _unseen_source), ("store", _unseen_store)])
def test_a_path_the_workers_cannot_see_is_said_so(tiny_tvhi_source, tmp_path, monkeypatch,
                                                  unseen, hide):
    """A worker that cannot see the source or the store (another machine, another mount)
    failed every sample as "video file is missing" / "no store at ...", of paths the user
    could see were there."""
    import distributed

    hide(monkeypatch)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0") as in_process:
        result = build(_config(tiny_tvhi_source, tmp_path / "w.zarr",
                               scheduler=in_process.scheduler_address))
    assert len(result.failures) == 16
    assert all(reason.endswith(f"(on the worker; this process sees it: every worker must see "
                               f"the {unseen} at the same path)")
               for reason in result.failures.values()), result.failures
    if unseen == "source":
        assert result.failures["handShake_0001"].startswith(
            "video file is missing: handShake_0001.avi (on the worker")
