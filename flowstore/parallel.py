"""Where a build's tasks run: Dask's threaded scheduler in this process, or a dask.distributed
cluster held through one connection for the whole build (`Cluster`).

Both call `finished(result)` in the calling thread as each task completes, so the coordinator
marks samples done while the others still run, and both hold Ctrl-C back while it runs, so the
ledger is never left half-updated.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterable, Iterator

from flowstore.errors import FlowstoreError

#: Tasks per worker thread in one Dask graph of a threaded build (see `run_on_threads`).
THREAD_BATCH_PER_WORKER = 256


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system tells it (taskset,
    a cgroup cpuset, a Slurm allocation), not the host's count, which would make the default
    `--workers` oversubscribe them and `estimate`'s wall time too short by the ratio."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def run_on_threads(workers: int, fn: Callable[..., Any], arguments: Iterable[tuple],
                   finished: Callable[[Any], None]) -> None:
    """Run `fn(*args)` for every argument tuple on Dask's threaded scheduler, `workers` threads.
    The tuples are taken from `arguments` one batch at a time (it may be a generator).

    `finished(result)` is called in this thread as each task completes (a Dask scheduler
    callback). The threaded scheduler, not an in-process dask.distributed cluster: on the 200
    real clips the cluster's event loops, comms and bookkeeping cost about 4 CPU-s that
    extraction could use (benchmarks/README.md, "Throughput on the 200 real TV-HI clips").

    The tasks go to Dask in batches of THREAD_BATCH_PER_WORKER per thread, each graph left
    unoptimized: one graph of the whole build costs time that grows faster than the number of
    samples (Dask's cull, then its scheduler: 100,000 tiny clips spent over 40 minutes in
    `cull` alone; benchmarks/build_scale.py), and there is nothing to optimize in a graph of
    independent tasks. A batch boundary leaves threads idle for at most one task each.

    Ctrl-C (KeyboardInterrupt) stops it between tasks: the tasks in flight finish before it
    returns, so the caller does not close the store under a task still writing, and the pool
    is this function's own, shut down here. Ctrl-C is held back while a worker thread starts and
    while `finished` runs: a KeyboardInterrupt inside `Thread.start` left a started thread
    that the pool never recorded, which the interpreter's exit then waited for forever (1 in
    10 builds interrupted under load hung), and one inside `finished` would stop the ledger
    half-updated.
    """
    import dask
    from dask.callbacks import Callback

    keys: set[Any] = set()

    def posttask(key, value, dsk, state, worker_id) -> None:
        if key in keys:
            with ctrl_c_held():
                finished(value)

    batch, pending = THREAD_BATCH_PER_WORKER * workers, iter(arguments)
    pool = _InterruptSafePool(workers)
    try:
        with Callback(posttask=posttask):
            while tasks := [dask.delayed(fn, pure=False)(*args)
                            for args in itertools.islice(pending, batch)]:
                keys = {task.key for task in tasks}
                dask.compute(*tasks, scheduler="threads", pool=pool, optimize_graph=False)
    finally:
        # The tasks in flight finish before the store is closed; a second Ctrl-C while they do
        # is let through (a task stuck on a hung file would otherwise hold the build), and the
        # command then ends the process as a kill would, which the store survives.
        pool.shutdown(wait=True, cancel_futures=True)


class _InterruptSafePool(concurrent.futures.ThreadPoolExecutor):
    """A thread pool whose `submit`, which may start a thread, is not cut by Ctrl-C."""

    def submit(self, fn, /, *args, **kwargs):
        with ctrl_c_held():
            return super().submit(fn, *args, **kwargs)


#: The signals a command stops on (`flowstore.command.run_app` takes SIGTERM as Ctrl-C).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs and deliver the first that came, to
    whatever handled it before, when the block ends. SIGINT alone was held: a SIGTERM (what
    `timeout`, Slurm and `docker stop` send) inside the ledger's update left a done sample
    without its source size, said as a lost chunk ever after (found by review). Only the main
    thread receives signals, so elsewhere (or for a signal whose handler was not set from
    Python) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = [signum for signum in STOP_SIGNALS if signal.getsignal(signum) is not None]
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda got, frame: received.append(got))
                for signum in held}
    try:
        yield
    finally:  # (an error of the block's own, a full disk, is what the caller must see)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        signal.raise_signal(received[0])


#: Seconds a scheduler has to answer, connection and Dask's handshake together.
CONNECT_TIMEOUT_S = 10
#: Tasks a build keeps submitted to a cluster per worker thread: enough that no worker waits
#: for its next task while the coordinator refills the window, few enough that the scheduler
#: and this process hold a bounded number of tasks and futures, not the whole build's (300,000
#: on Kinetics-400).
CLUSTER_TASKS_PER_THREAD = 8
#: The smallest window of tasks in flight on a cluster, whatever its size.
CLUSTER_MIN_WINDOW = 32
#: Seconds between two sizings of the window to the cluster's threads (a scheduler request).
WINDOW_RESIZE_S = 2.0
#: Seconds with no task finished before the coordinator asks whether the cluster has workers
#: at all (a scheduler request; then again every as many seconds while none finishes).
NO_WORKERS_CHECK_S = 10.0
#: Seconds between two looks for finished tasks while none is (as Dask's own blocking wait).
FINISHED_POLL_S = 0.05


class Cluster:
    """One connection to the dask.distributed scheduler at `address`, held for a whole build
    (asking its workers' OpenCV, then running the tasks): a context manager that closes it.

    The scheduler is asked first with a deadline on the whole exchange (`_probe`):
    distributed's own timeout covers the TCP connection only, and a port that accepts it but
    never answers Dask's handshake (the dashboard's, 8787, a slip of one digit from 8786; any
    web server) held `Client` forever, printing nothing; a malformed address (`host:abc`,
    `tls://` without certificates) raised a traceback and left a half-made `Client` whose
    clean-up held the exit 20 s more.

    Raises:
        FlowstoreError: the scheduler cannot be reached, in one line saying why.
    """

    def __init__(self, address: str) -> None:
        import logging

        from distributed import Client

        self.address = address
        # (its errors are flowstore's to tell, in one line: "Failed to reconnect to scheduler"
        # came out as a log line besides, and a lost scheduler as 35 lines of distributed.client's
        # traceback, a logger distributed's configuration sets a level of its own)
        for name in ("distributed", "distributed.client"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        with concurrent.futures.ThreadPoolExecutor(1) as asker:  # (a caller's loop may run)
            reason = asker.submit(_probe, address).result()
        if reason is None:
            try:
                self.client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s",
                                     set_as_default=False)
                return
            except Exception as exc:  # noqa: BLE001  (whatever it is, the scheduler's: one line)
                reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else str(exc)
        raise FlowstoreError(f"cannot reach Dask scheduler {address!r}: {reason}")

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.client.close()

    def lost(self) -> FlowstoreError:
        """The error of a scheduler gone away during the build. Not any sample's failure: every
        task left would "fail" (one reason each), those never handed out too; they stay
        pending."""
        return FlowstoreError(f"lost the connection to the Dask scheduler {self.address!r}; "
                              f"the samples not finished stay pending: run the same command "
                              f"again to resume")

    def on_each_worker(self, fn: Callable[[], Any]) -> dict[str, Any]:
        """`fn()` run on each connected worker, by worker address. A worker that cannot import
        flowstore (an environment without it: a common cluster mistake) is one line, not
        distributed's traceback of a plain `Exception("ModuleNotFoundError(...)")`."""
        try:
            return self.client.run(fn)
        except (OSError, TimeoutError) as exc:
            raise FlowstoreError(f"lost the connection to the Dask scheduler "
                                 f"{self.address!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001  (told apart below; anything else is raised)
            if not (isinstance(exc, ImportError) or "No module named" in str(exc)):
                raise
            raise FlowstoreError(f"a worker of the Dask scheduler {self.address!r} cannot run "
                                 f"flowstore's code ({exc}): install flowstore, the release "
                                 f"this process runs, in every worker's environment") from None

    def run(self, fn: Callable[..., Any], arguments: Iterable[tuple],
            finished: Callable[[Any], None], failed: Callable[..., Any], *,
            sample_of: Callable[[tuple], Any], window: int | None = None) -> None:
        """Run `fn(*args)` for every argument tuple on the cluster.

        `finished(result)` is called as each task completes. A task the cluster gives up on
        (e.g. KilledWorker after its workers died, a cancelled task) is reported as
        `failed(sample, reason)` of its sample (`sample_of(args)`), not raised; a task that
        raised anything else (a build's task raises nothing, so a bug: e.g. arguments or a
        result that do not travel) comes back as `failed(sample, internal_error=traceback)`.
        A lost scheduler raises `lost()`.

        At most `window` tasks are in flight (default: CLUSTER_TASKS_PER_THREAD per worker
        thread the cluster has, at least CLUSTER_MIN_WINDOW, sized again every
        WINDOW_RESIZE_S); whenever half of them have finished, the other half of the window is
        submitted as one `client.map` (one message to the scheduler, where a `submit` per task
        cost the coordinator about 0.2 ms each). So the scheduler's memory and this process's
        futures do not grow with the number of samples. Results are collected as they come,
        all those finished at once in one gather (`_gather_finished`).
        """
        from distributed import KilledWorker, as_completed

        client = self.client
        cluster_errors = (KilledWorker, concurrent.futures.CancelledError, OSError, TimeoutError)

        def sized() -> int:
            """The window for the threads the cluster has now."""
            threads = sum(self._threads().values())
            return max(CLUSTER_MIN_WINDOW, CLUSTER_TASKS_PER_THREAD * threads)

        # sized again every few seconds unless given: workers that join later (an adaptive or
        # job-queue cluster, a build started before its workers) were never used beyond the
        # window of the start
        fixed = window is not None
        window, sized_at = window if fixed else sized(), time.monotonic()
        pending = iter(arguments)
        running = as_completed(loop=client.loop)
        index_of: dict[str, Any] = {}  # future key -> the task's sample

        def submit(count: int) -> None:
            batch = list(itertools.islice(pending, count))
            if batch:
                futures = client.map(fn, *zip(*batch), pure=False)
                index_of.update((future.key, sample_of(args))
                                for future, args in zip(futures, batch))
                running.update(futures)

        submit(window)
        for batch in self._finished_batches(running):
            values = _gather_finished(client, batch)
            for future in batch:
                index = index_of.pop(future.key)
                if future.key in values:
                    outcome = values[future.key]
                else:
                    try:
                        outcome = future.result()
                    except cluster_errors as exc:  # the cluster gave up on this task
                        if client.status != "running" or "connection-lost" in str(exc):
                            raise self.lost() from None
                        # one line, without the task's key, so that failures group by reason
                        reason = str(exc).replace(str(future.key), "its task").splitlines()
                        outcome = failed(index, f"task failed on the cluster: "
                                                f"{type(exc).__name__}: "
                                                f"{reason[0] if reason else ''}")
                    except Exception as exc:  # noqa: BLE001  (a bug: an internal error)
                        outcome = failed(index, internal_error="".join(
                            traceback.format_exception(type(exc), exc, exc.__traceback__)))
                future.release()
                with ctrl_c_held():  # as on threads: the ledger is never left half-updated
                    finished(outcome)
            if not fixed and time.monotonic() - sized_at >= WINDOW_RESIZE_S:
                window, sized_at = sized(), time.monotonic()
            if running.count() <= window // 2:
                submit(window - running.count())


    def _finished_batches(self, running: Any) -> Iterator[list]:
        """The tasks of `running` (an `as_completed`) as they finish, in batches, as its
        `batches()` gives them, saying so on stderr when the cluster has no worker while tasks
        wait: Dask holds them until a worker joins, and a build whose every worker had died
        (or a scheduler none had joined yet) waited for ever without a word. Said once, with
        a line again when a task finishes after it; the build goes on waiting (an adaptive or
        job-queue cluster starts workers later), and Ctrl-C stops it as anywhere else.

        Raises:
            FlowstoreError: the scheduler is lost (`lost`).
        """
        quiet_since, told = time.monotonic(), False
        while not running.is_empty():
            if running.has_ready():
                quiet_since = time.monotonic()
                if told:
                    print(f"{len(self._threads())} worker(s) joined the Dask scheduler "
                          f"{self.address!r}; the build goes on", file=sys.stderr, flush=True)
                    told = False
                yield running.next_batch(block=False)
                continue
            time.sleep(FINISHED_POLL_S)
            if told or time.monotonic() - quiet_since < NO_WORKERS_CHECK_S:
                continue
            quiet_since = time.monotonic()
            if not self._threads():
                print(f"the Dask scheduler {self.address!r} has no workers: {running.count()} "
                      f"tasks wait for one to join (start workers, or Ctrl-C to stop; the "
                      f"finished samples are kept)", file=sys.stderr, flush=True)
                told = True

    def _threads(self) -> dict[str, int]:
        """The threads of each worker the scheduler has now, by worker address (asked of the
        scheduler, which may be gone by now: distributed's CommClosedError is an OSError).

        Raises:
            FlowstoreError: the scheduler is lost (`lost`).
        """
        try:
            return self.client.nthreads()
        except (OSError, TimeoutError):
            raise self.lost() from None


#: The address schemes of Dask's comms that take a host and a port.
_HOST_PORT_SCHEMES = ("tcp", "tls", "ws", "wss")


def _probe(address: str) -> str | None:
    """Why the scheduler at `address` cannot be used (None: it answered Dask's handshake)."""
    import asyncio

    from distributed.comm import connect
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    # Dask's own refusal of the address, before any connection ("unknown address scheme
    # 'tpc'"): raised inside `connect`, a ValueError was said to be a server that answered
    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
        port = parse_host_port(location)[1] if scheme in _HOST_PORT_SCHEMES else None
    except ValueError as exc:
        return f"ValueError: {exc}"
    if port is not None and not 0 < port < 65536:  # (else a wait, then a timeout)
        return f"port {port} is out of range (1-65535)"

    async def ask() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=CONNECT_TIMEOUT_S),
                                      CONNECT_TIMEOUT_S + 1)
        await comm.close()

    try:
        asyncio.run(ask())
    except (asyncio.TimeoutError, TimeoutError):
        return (f"nothing there answered as a Dask scheduler within {CONNECT_TIMEOUT_S} s "
                f"(the dashboard's port, or another server?)")
    except OSError as exc:
        return str(exc)
    except (MemoryError, OverflowError, ValueError):
        # (the address is well-formed, above: distributed read another server's first bytes
        # as the length of a message, "Unable to allocate 2.82 EiB", or as no length at all)
        return ("something there answered, but not as a Dask scheduler (another server on "
                "that port?)")
    except Exception as exc:  # noqa: BLE001  (a malformed address, TLS asked without certificates,
        return f"{type(exc).__name__}: {exc}"  # a server answering something else)
    return None


def _gather_finished(client: Any, futures: list) -> dict[str, Any]:
    """The results of the futures that finished, by key, in one `gather`: one request per
    worker that holds some, where a `result()` per future is a request per task (on 3,000
    trivial tasks, 1.3 against 0.7 ms of the client process's CPU per task; tasks that finish
    one at a time gain little). Empty when that gather fails (a worker holding one died
    meanwhile): the caller then asks each future on its own, which tells the cause."""
    done = [future for future in futures if future.status == "finished"]
    if not done:
        return {}
    try:
        return {future.key: value for future, value in zip(done, client.gather(done))}
    except Exception:  # noqa: BLE001  (told per future by the caller)
        return {}
