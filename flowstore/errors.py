"""The one small exception hierarchy of flowstore.

Every error a user can cause derives from `FlowstoreError`; the CLI turns it into one line on
stderr and exit code 2, never a traceback. Each class also derives from the builtin it
resembles (as zarr does with `NodeNotFoundError(BaseZarrError, FileNotFoundError)`), so callers
that already catch `FileNotFoundError` or `ValueError` keep working.
"""

from __future__ import annotations

import errno
import resource
from typing import Iterator


class FlowstoreError(Exception):
    """Base class of every error flowstore raises on purpose."""


class ParameterError(FlowstoreError, ValueError):
    """A parameter value is out of range or of the wrong kind."""


class SourceLayoutError(FlowstoreError, FileNotFoundError):
    """The `--source` folder is missing, empty or not laid out as the dataset ships."""


class StoreError(FlowstoreError, OSError):
    """A store path is missing, not a flowstore store, or of another format version."""


class DamagedStoreError(StoreError):
    """A part of a store holds bytes that cannot be read as what was written there (a codec
    refuses them, a short chunk): damage, where a system refusal (a permission, an I/O error)
    is a plain StoreError."""


class HalfCreatedStoreError(StoreError):
    """A store whose making stopped before it was one (an object store, made in place):
    `--overwrite` may delete it, as it deletes a store."""


class MissingChunkError(StoreError):
    """A sample asked for (a done one) has no chunk: a damaged or partly copied store.

    `store`, `array` and `index` say which (None where the whole store is gone), so that a
    reader that knows the sample's id can name it (`missing_chunk`)."""

    def __init__(self, message: str, *, store: str | None = None, array: str | None = None,
                 index: int | None = None) -> None:
        super().__init__(message)
        self.store, self.array, self.index = store, array, index


def missing_chunk(store: str, array: str, index: int, sample: str | None = None
                  ) -> MissingChunkError:
    """A done sample's missing chunk, said of the sample `sample` (its id, where the caller
    knows it: "sample 'hug_0002'") or else of its position in the store."""
    named = f"sample {index}" if sample is None else f"sample {sample!r}"
    return MissingChunkError(f"store {store!r}: the chunk of {named} of {array!r} is missing "
                             f"(the store is damaged, partly copied, or was rebuilt since it "
                             f"was opened); `flowstore verify` lists what is missing",
                             store=store, array=array, index=index)


class ObjectStoreError(StoreError):
    """An object store stopped answering (or answered as no store does) while a command read or
    wrote it: neither damage of a sample nor a bug of flowstore's."""


class StoreMismatchError(StoreError):
    """An existing store was built with other parameters, source or dataset."""


class UnknownDatasetError(FlowstoreError, KeyError):
    """A dataset name that no registered dataset answers to."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class SampleError(FlowstoreError):
    """One sample could not be extracted; recorded as that sample's failure reason."""


def raised_with(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or while handling (`__cause__`, else `__context__`),
    and so on, each once: where a library's error (a full disk, a limit, a store another process
    created) is found behind the error that was made of it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


#: What OpenCV's errors say where an allocation failed (its own allocator; C++'s): under a
#: memory limit, 18 failures of a build blamed their clips ("OpenCV cannot decode", found by
#: review), and one in Farneback was an internal error.
OPENCV_OUT_OF_MEMORY = ("Insufficient memory", "bad_alloc")


def resource_exhaustion(exc: BaseException) -> str | None:
    """What the system refused the process more of, where `exc` says it ran out ("memory",
    "threads", "open files"), or None: the limits a cluster job or a container sets (`ulimit
    -v`, `-n`, a pids limit). Neither bad input nor a bug: a build under a memory limit ended
    in "internal error: a bug in flowstore (MemoryError)", a read command called a sound store
    "not a readable flowstore store (RuntimeError: can't start new thread)" (found by review)."""
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
        return "memory"
    if (type(exc).__module__, type(exc).__name__) == ("cv2", "error") and any(
            sign in str(exc) for sign in OPENCV_OUT_OF_MEMORY):
        return "memory"  # (OpenCV's allocation, in Farneback as well as in decoding)
    if isinstance(exc, SystemError) and exc.__cause__ is not None:
        # a binding that returned a result with the error of its own allocation set (OpenCV's
        # `retrieve` under `ulimit -v`: numpy's MemoryError is the cause): was an internal error
        return resource_exhaustion(exc.__cause__)
    if (isinstance(exc, ImportError) and "failed to map segment" in str(exc)
            and resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY):
        return "memory"  # (a library loaded lazily, OpenCV's, found no address space left)
    if _device_out_of_memory(exc):
        return "memory"
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return "threads"
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return "open files"
    return None


def _device_out_of_memory(exc: BaseException) -> bool:
    """A training framework's own out-of-memory error, on a GPU or a CPU: TensorFlow's
    `ResourceExhaustedError` ("OOM when allocating tensor"), PyTorch's `OutOfMemoryError`,
    JAX's runtime error of status RESOURCE_EXHAUSTED. Was "internal error: a bug in trainers",
    traceback and all, where a smaller batch is the answer (found by review)."""
    package, name = type(exc).__module__.split(".")[0], type(exc).__name__
    return ((package, name) in {("tensorflow", "ResourceExhaustedError"),
                                ("torch", "OutOfMemoryError")}
            or package in {"jax", "jaxlib"} and str(exc).startswith("RESOURCE_EXHAUSTED"))


#: How much address space a process must still be able to map for a decoder's early stop to be
#: the clip's: FFmpeg's allocations fail silently (a frame that does not decode, a clip that
#: ends early), and the few MiB its decoder held are freed when the capture is released.
MEMORY_MARGIN = 128 * 2**20


def short_of_memory(margin: int = MEMORY_MARGIN) -> bool:
    """Whether the process cannot map `margin` more bytes under its own limit (`ulimit -v` or
    `-d`): asked where a library says no more than that it failed, to tell the system's refusal
    from a bad input. Without such a limit, memory runs out by the OOM killer, not by failed
    allocations: False. Nothing is touched, so the probe costs no memory."""
    limits = (resource.RLIMIT_AS, resource.RLIMIT_DATA)
    if all(resource.getrlimit(limit)[0] == resource.RLIM_INFINITY for limit in limits):
        return False
    import mmap

    try:
        mmap.mmap(-1, margin).close()
    except (OSError, MemoryError):
        return True
    return False


#: How a `flowstore` command asks for less (`resource_advice`).
ASK_FOR_LESS = "fewer --workers, a smaller --size"


def resource_advice(exc: BaseException, ask_for_less: str = ASK_FOR_LESS) -> str | None:
    """`exc` in words with what to do about it, where it is a `resource_exhaustion`; else
    None. `ask_for_less`: the command's options that ask for less (the trainers' batch)."""
    what = resource_exhaustion(exc)
    if what is None:
        return None
    if isinstance(exc, SystemError):  # (a binding's wrapper: its cause says it)
        exc = exc.__cause__
    # named by the builtin it is (numpy's `_ArrayMemoryError` a MemoryError), else by its
    # package (OpenCV's `cv2.error` read "error: std::bad_alloc")
    builtin = next(kind for kind in type(exc).__mro__ if kind.__module__ == "builtins")
    name = (builtin.__name__ if builtin is type(exc) or builtin not in (Exception, RuntimeError)
            else f"{type(exc).__module__.split('.')[0]}.{type(exc).__name__}")
    said = str(exc).splitlines()[0] if str(exc) else ""
    said = f"({name}{': ' + said[:300] if said else ''})"
    if _device_out_of_memory(exc):  # (a GPU's memory, or the machine's: a batch to shrink)
        return (f"training ran out of memory {said}: ask for less (a smaller --batch-size or "
                f"--size, --mixed-precision on a GPU) or raise a limit set (ulimit -v)")
    return (f"the system gave no more {what} {said}: raise the limit (ulimit -v, -n, -u) or "
            f"ask for less ({ask_for_less})")
