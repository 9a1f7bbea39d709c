"""Places a run writes to: `check_writable` (before any work: a file on the path, no permission, a
read-only file system or none on a disk such as /proc, a full disk: each called what it is) and
`disk_full` (a run that failed on a full disk is told so, whatever error TensorFlow raised).
Pure Python; `amp_tf.run.runfolder` re-exports both."""
from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

from amp_tf.contract import check_folder_path

#: The least free space a run starts with (its models, backups and report).
MIN_FREE_BYTES = 64 << 20
#: A run that fails with less free space than this on its disk is told the disk is full.
FULL_BYTES = 1 << 20


def check_writable(folder, what="--out"):
    """Refuses, before any work, a folder that cannot be made or written: a file on its path, no
    permission, a read-only file system or none on a disk (/proc, /sys), a full disk (`what` names the
    flag in the message): a place that cannot be written is never called full. Touches nothing.

    Example:
        >>> import pathlib, tempfile
        >>> notes = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
        >>> _ = notes.write_text("mine")
        >>> check_writable(notes / "run", "--out notes.txt/run")
        Traceback (most recent call last):
        ...
        ValueError: --out notes.txt/run: .../notes.txt is a file, not a folder; pass a path made of folders.
    """
    folder = Path(folder).absolute()
    existing = check_folder_path(folder, what)  # the one path check (also the library's saves and exports)
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "write in" if existing == folder else "create folders in"
        raise ValueError(f"{what}: cannot {verb} {existing} (permission denied, or a read-only file system); "
                         "pass a folder you may write to.")
    try:
        fs = os.statvfs(existing)
    except OSError:
        return
    if fs.f_flag & os.ST_RDONLY or fs.f_blocks == 0:  # read-only, or no disk at all (/proc, /sys)
        kind = "a read-only file system" if fs.f_flag & os.ST_RDONLY else "no disk (a virtual file system)"
        raise ValueError(f"{what}: {existing} is on {kind}, where no file can be written; pass a folder you "
                         "may write to.")
    free = fs.f_bavail * fs.f_frsize
    if free < MIN_FREE_BYTES:
        raise ValueError(f"{what}: the disk that holds {existing} is full ({free >> 20} MiB free); free some "
                         "space, or pass a folder on another disk.")


def disk_full(folder, err):
    """What to say when `err` ended a run writing into `folder` and the disk is full (ENOSPC / EDQUOT, or
    under `FULL_BYTES` free: TensorFlow's writers raise their own errors), else None.

    Example:
        >>> disk_full(".", ValueError("unrelated")) is None
        True
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if getattr(err, "errno", None) not in (errno.ENOSPC, errno.EDQUOT) and free >= FULL_BYTES:
        return None
    first = re.sub(r"\{\{.*?\}\}\s*", "", (str(err).strip().splitlines() or [""])[0])  # TF's op frame: noise
    return (f"the disk that holds {Path(folder).absolute()} is full ({free >> 10} KiB free), and the run stopped "
            f"({type(err).__name__}: {first})")
