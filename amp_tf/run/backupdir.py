"""--backup-dir: a backup folder belongs to one run.

Keras' `BackupAndRestore` restores whatever backup it finds in its folder, so a `--backup-dir`
shared by two runs would make the second silently continue the first's model. A run claims its
backup folder (`claim_backup_dir`) with a marker, `.amp-backup-owner.json`, naming the run's
`--out`; `check_backup_dir` (before TensorFlow, touching nothing) refuses a folder that holds the
backup of another run, or files that no run of ours claimed, naming both runs and the fix.

Pure Python (no TensorFlow): `amp_tf.cli.runs.check_out` calls it with the other `--out` checks.

Example:
    >>> import pathlib, tempfile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> claim_backup_dir(tmp / "bk", tmp / "run-a")
    >>> _ = (tmp / "bk" / "anchored").mkdir()
    >>> _ = (tmp / "bk" / "anchored" / "training_metadata.json").write_text("{}")
    >>> check_backup_dir(tmp / "bk", tmp / "run-b")
    Traceback (most recent call last):
    ...
    ValueError: --backup-dir .../bk holds the backup of another run (--out .../run-a, ...); ...
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import socket
from pathlib import Path

from amp_tf.run.runlock import proc_start, lock_state

#: The file that names the run a backup folder belongs to.
MARKER = ".amp-backup-owner.json"


def _backup_files(folder):
    """The files under `folder` but the marker (a backup of some run), at most a few."""
    found = []
    for p in Path(folder).rglob("*"):
        if p.name != MARKER and not p.is_dir():
            found.append(p)
            if len(found) >= 3:
                break
    return found


def backup_owner(folder):
    """The marker of `folder` (``{"out", "host", "pid", "proc_start", "claimed"}``: a lock's fields, read by
    `amp_tf.run.runlock.lock_state`), or None when it has none."""
    try:
        owner = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and owner.get("out") else None


def _nested(a, b):
    return a == b or a in b.parents or b in a.parents


def check_backup_dir(folder, out=None, resume=False):
    """Refuses a --backup-dir that another run's backup (or files of no run) fills, or one nested with
    --out (`out`: the run's --out; None: a new folder under runs/). Touches nothing.

    Returns ``"resume"`` (the backup is this --out's, restored by --resume), ``"stale"`` (this --out's
    earlier run, replaced: `claim_backup_dir` clears it) or ``"free"`` (nothing to restore).
    """
    folder = Path(folder).expanduser().absolute()
    where = f"--backup-dir {folder}"
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{where} is a file, not a folder; pass another --backup-dir.")
    this = "this run (a new folder under runs/)"
    if out is not None:
        out = Path(out).expanduser().absolute()
        this = f"this run (--out {out})"
        if _nested(folder, out):
            raise ValueError(f"{where} and --out {out} lie inside one another: a run folder holds its run only "
                             "(it is written as a hidden .partial folder and moved into place at the end). Omit "
                             "--backup-dir (the backups then live inside the run folder), or pass a folder "
                             "outside --out.")
    files, owner = (_backup_files(folder) if folder.is_dir() else []), backup_owner(folder)
    other = owner is not None and (out is None or Path(owner["out"]) != out)
    if not files and not (other and lock_state(owner) != "gone"):  # a live run keeps its folder, backup or not
        return "free"
    if owner is None:
        raise ValueError(f"{where} holds files that no amp-tf run claimed ({', '.join(p.name for p in files)}; no "
                         f"{MARKER}); restoring them into {this} could continue another model. Pass another "
                         f"--backup-dir (a new or empty folder), or remove {folder} yourself.")
    if other:
        raise ValueError(f"{where} holds the backup of another run (--out {owner['out']}, started "
                         f"{owner.get('claimed')} by process {owner.get('pid')} on {owner.get('host')}); "
                         f"{this} would silently continue that run's model. Pass another --backup-dir, or "
                         f"remove {folder} (that run can then no longer be resumed).")
    return "resume" if resume else "stale"


def claim_backup_dir(folder, out, resume=False):
    """Makes `folder` the backup folder of the run in `out` (after every check): writes the marker; an
    earlier backup of the same --out is removed unless `resume` (a replaced run's epochs are never
    restored into a new one)."""
    folder = Path(folder).expanduser().absolute()
    state = check_backup_dir(folder, out, resume)
    if state == "stale":
        for p in folder.iterdir():
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"out": str(Path(out).expanduser().absolute()), "host": socket.gethostname(), "pid": os.getpid(),
             "proc_start": proc_start(os.getpid()), "claimed": _dt.datetime.now().isoformat(timespec="seconds")}
    (folder / MARKER).write_text(json.dumps(owner, indent=2))
