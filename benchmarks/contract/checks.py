"""Checks and set-ups the probe's cases share (pure Python)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def finished(key="out", need=("job.json", "report.json", "anchored.keras")):
    """A check: exit 0 and a complete run folder at ctx[key] (no work folder left beside it)."""
    def check(ctx, r):
        if r.get("exit") != 0:
            return None
        out = Path(ctx[key])
        missing = [n for n in need if not (out / n).exists()]
        partial = out.parent / f".{out.name}.partial"
        if missing:
            return "wrong", f"exit 0 but {out} lacks {missing}"
        if partial.exists():
            return "wrong", f"exit 0 but the work folder {partial} is left"
        return "clear", "completed; the run folder is complete"
    return check


def untouched(key, files):
    """A check wrapper: `files` (names in ctx[key]) must still be there, as they were."""
    def check(ctx, r):
        folder = Path(ctx[key])
        gone = [f for f in files if not (folder / f).exists()]
        if gone:
            return "wrong", f"the user's files {gone} in {folder} were deleted"
        return None
    return check


def both(*checks):
    def check(ctx, r):
        for c in checks:
            v = c(ctx, r)
            if v is not None:
                return v
        return None
    return check


def user_folder(name="user", files=("notes.txt",)):
    """A set-up: a folder of a user's files in the case folder; ctx['user'] is its path."""
    def setup(ctx, d):
        u = Path(d) / name
        u.mkdir(parents=True, exist_ok=True)
        for f in files:
            (u / f).write_text("mine\n")
        return {name: str(u)}
    return setup


def copy_run(name="copy", mutate=None):
    """A set-up: a copy of the tiny finished run in the case folder (ctx[name]); `mutate(path)` alters it."""
    def setup(ctx, d):
        dst = Path(d) / name
        shutil.copytree(ctx["run"], dst, symlinks=True)
        if mutate is not None:
            mutate(dst)
        return {name: str(dst)}
    return setup


def partial_of_run(name="iv", lock=None, job=None):
    """A set-up: an interrupted run: ``.<name>.partial`` (a copy of the tiny run) with `lock` text (or none) and
    `job` text for its job.json (or the run's own); ctx[name] is the --out."""
    def setup(ctx, d):
        work = Path(d) / f".{name}.partial"
        shutil.copytree(ctx["run"], work, symlinks=True)
        if lock is not None:
            (work / ".run.lock").write_text(lock)
        if job is not None:
            (work / "job.json").write_text(job)
        return {name: str(Path(d) / name)}
    return setup


def dead_pid():
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid += 1


def lock_text(host=None, pid=None):
    import socket

    return json.dumps({"pid": pid or dead_pid(), "host": host or socket.gethostname(), "started": "2025-01-01T00:00:00",
                       "token": "x", "command": "python -m trainers.fmnist"})


def refused_untouched(key, files=("notes.txt",)):
    return untouched(key, files)


def job_records(key, want):
    """A check: exit 0 and the run's job.json names `want` (a ctx key's path) as a data source."""
    def check(ctx, r):
        if r.get("exit") != 0:
            return None
        job = json.loads((Path(ctx[key]) / "job.json").read_text())
        src = json.dumps(job.get("data_sources", {}))
        target = os.path.realpath(ctx[want])
        if ctx[want] not in src and target not in src:
            return "wrong", f"job.json's data_sources {src[:200]} do not name {ctx[want]}"
        return "clear", f"completed; data_sources: {src[:150]}"
    return check


def masked_by_data(names):
    """A check for a flag case of a trainer whose data is not on this machine: an answer about the missing
    data instead of the flag means the flag is not checked up front (late: it is found after the data)."""
    def check(ctx, r):
        a = (r.get("answer") or "").lower()
        named = all(any(alt.format(**ctx).lower() in a for alt in str(n).split("|")) for n in names)
        if r.get("exit") not in (0, None) and not named and ("not on this machine" in a or "not prepared" in a):
            return "late", "the flag is not checked before the data is looked for (the answer names the missing data)"
        return None
    return check


def not_a_full_disk(ctx, r):
    """A check: a path that cannot be written (/proc, /sys) must not be called a full disk."""
    a = (r.get("answer") or "").lower()
    if r.get("exit") not in (0, None) and "is full" in a:
        return "obscure", "a path that cannot be written is called a full disk ('free some space'): the wrong cause"
    return None


def ignored(why):
    """A check: a flag-only mistake that the command accepts and silently ignores (the run itself is right)."""
    def check(ctx, r):
        return ("obscure", why) if r.get("exit") == 0 else None
    return check
