"""The lock of a live run (`.run.lock` in its work folder: process id, host, start time and a
token, created atomically with ``O_CREAT | O_EXCL``): taking it (`acquire`), reading it
(`read_lock`, `lock_state`: live, interrupted or foreign) and refusing a second run into a live
run's folder. Pure Python, read by `amp_tf.run.runfolder`."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import uuid
from pathlib import Path


#: The lock file of a live run, in its work folder (removed when the run ends).
LOCK = ".run.lock"
#: Tokens of the runs this process holds (a lock with our pid is live only while its run is).
HELD = set()


def proc_start(pid):
    """The start time of process `pid` in clock ticks since boot (Linux), or None: tells a reused pid apart."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def read_lock(work):
    """The lock of a work folder: a dict, ``{}`` when it is being written (empty), None when there is none."""
    try:
        text = (Path(work) / LOCK).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return {}
    try:
        lock = json.loads(text)
    except ValueError:
        return {}
    return lock if isinstance(lock, dict) else {}


def lock_state(lock):
    """``"live"``, ``"gone"`` (its process ended: an interrupted run) or ``"unknown"`` (another host).

    A lock being written (``{}``) is live. A lock of this process is live while its
    `RunFolder` is (not committed, released or garbage-collected).
    """
    if lock is None:
        return "gone"
    if not lock:
        return "live"
    if lock.get("host") != socket.gethostname():
        return "unknown"
    pid = lock.get("pid")
    if pid == os.getpid():
        return "live" if lock.get("token") in HELD else "gone"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:  # alive, another user's
        pass
    except (OSError, TypeError, ValueError):
        return "gone"
    started = proc_start(pid)
    if started is not None and lock.get("proc_start") not in (None, started):
        return "gone"  # the pid was reused by another process
    return "live"


def _who(lock):
    if not lock:
        return "a run that is starting (its lock is being written)"
    return (f"process {lock.get('pid')} on {lock.get('host')}, started {lock.get('started')}"
            + (f": {_short(lock['command'])}" if lock.get("command") else ""))


def _short(text, n=100):
    return text if len(text) <= n else text[: n - 3] + "..."


def refuse_live(path, work, lock, state):
    if state == "unknown":
        raise ValueError(
            f"--out {path} is locked by {_who(lock)}: another machine, so whether it still runs cannot be "
            f"told from here. If it does, wait for it or pass another --out; if it does not, delete "
            f"{work / LOCK} and pass --resume to continue it.")
    raise ValueError(f"--out {path} is in use by a live run ({_who(lock)}): wait for it to finish, stop it, "
                     "or pass another --out. Nothing was written.")


def acquire(work, path):
    """Creates the lock of this process in `work` (O_CREAT | O_EXCL); refuses a live owner. Returns its token."""
    token = uuid.uuid4().hex
    lock = {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": proc_start(os.getpid()),
            "started": _dt.datetime.now().isoformat(timespec="seconds"), "token": token,
            "command": " ".join(__import__("sys").argv)[:300]}
    for _ in range(3):
        try:
            fd = os.open(work / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            old = read_lock(work)
            state = lock_state(old)
            if state != "gone":
                refuse_live(path, work, old, state)
            stale = work / f"{LOCK}.{token}"  # take the dead run's lock over: one taker wins the rename
            with contextlib.suppress(FileNotFoundError):
                os.rename(work / LOCK, stale)
                stale.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(lock))
        HELD.add(token)
        return token
    raise ValueError(f"--out {path}: other runs keep taking its lock; pass another --out.")
