"""What a killed process leaves behind, and telling whether its process is gone.

A command's work folder is removed when the command ends, fails or is interrupted (a
`finally:`), but not when it is killed (SIGKILL, the kernel's out-of-memory killer, a power
cut). Work folders are therefore named with their process's id, and a later command removes
those whose process no longer runs: `flowstore estimate`'s scratch stores
(`flowstore-estimate-<pid>-<random>` in the temporary folder), `trainers run`'s work folders
(`.partial-<run>-<pid>-<hex>` in the runs folder, `trainers.runs`), and the reader's shared
batch buffers of a DataLoader worker that died (`flowstore.reader.torch`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def process_gone(pid: int) -> bool:
    """Whether no process `pid` runs on this machine. False where that cannot be told: a
    process of another user (signalling it is refused, so it runs), a pid <= 0 (`kill(0)`
    would ask about this process's group) or one too large for the system's type."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False
    return False


def remove_dead_work_folders(folder: Path, prefix: str) -> None:
    """Remove the folders in `folder` named `<prefix><pid>-<anything>` whose process is gone
    (`process_gone`); a folder that cannot be listed or removed is left as it is (another
    user's, or a read-only one: never this command's failure)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        pid, dash, _ = entry.name[len(prefix):].partition("-")
        if entry.name.startswith(prefix) and dash and pid.isdecimal() \
                and entry.is_dir(follow_symlinks=False) and process_gone(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)
