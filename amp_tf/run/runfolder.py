"""Run folders: one owner per folder, never mixed with another run, never half-written.

A run writes into a work folder (the hidden sibling `.<name>.partial`) and renames it
into place when it is complete (`RunFolder.commit`). A live run holds a lock file in
its work folder (`.run.lock`: process id, host, start time and a token; created
atomically with ``O_CREAT | O_EXCL``), so any other run into the same `--out` (plain,
`--resume` or `--overwrite`) is refused at once, naming the live process. A lock
whose process is gone (same host, process no longer alive) marks an interrupted run:
only then is `--resume` advised.

Pure Python (no TensorFlow, no numpy): a CLI checks its `--out` (`check_run_folder`)
before TensorFlow is imported, so a second run into a busy folder is refused in well
under a second. `amp_tf.run.pipeline` re-exports `RunFolder`, `RunFolderLost` and
`check_run_folder`.

Example:
    >>> import pathlib, tempfile
    >>> run = RunFolder(pathlib.Path(tempfile.mkdtemp()) / "run", {"seed": 0}, log=lambda m: None)
    >>> check_run_folder(run.path, {"seed": 0})
    Traceback (most recent call last):
    ...
    ValueError: --out ... is in use by a live run (process ... on ..., started ...): ...
    >>> run.commit().name
    'run'
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import weakref
from pathlib import Path

from amp_tf.contract import check_folder_path
from amp_tf.run.runlock import HELD as _HELD
from amp_tf.run.runlock import LOCK, lock_state  # noqa: F401  (importable from here as before)
from amp_tf.run.runlock import acquire as _acquire
from amp_tf.run.runlock import read_lock as _read_lock
from amp_tf.run.runlock import refuse_live as _refuse_live

#: Run folders whose `guard()` is active in this process (training adds their epoch check).
_ACTIVE = []
#: What job.json records besides the settings (not compared on --resume: e.g. the data may move).
RECORD_KEYS = ("data_sources",)


class RunFolderLost(FileNotFoundError):
    """The work folder of a run in progress was deleted or taken over by another run: nothing is committed."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: `path` is the run's --out (its work folder is kept for --resume)."""

    def __init__(self, path, work):
        super().__init__(f"interrupted: the run is kept in {work}")
        self.path, self.work = Path(path), Path(work)


# --------------------------------------------------------------------------- #
# The checks
# --------------------------------------------------------------------------- #
def _stored_config(folder):
    """The settings in the `job.json` of a run folder (without `RECORD_KEYS`), or None when it has none
    (or it is unreadable)."""
    try:
        stored = json.loads((Path(folder) / "job.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: v for k, v in stored.items() if k not in RECORD_KEYS} if isinstance(stored, dict) else stored


def _non_empty_dir(path):
    return path.is_dir() and any(path.iterdir())


def _some_files(path, n=3):
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def check_run_folder(path, config, resume=False, overwrite=False):
    """Refuses a run folder that would mix runs, before anything is loaded or written. Touches nothing.

    Returns the state RunFolder will start from: ``"new"``, ``"interrupted"``
    (a `.<name>.partial` left by a run whose process is gone: resumed with `resume=True`)
    or ``"replace"`` (`overwrite=True` over an earlier run).

    Raises:
        ValueError: `--out` is a file, or `.` / `..`; a live run holds it (whatever the
            flags); it holds a run (or an interrupted run) and neither `resume` nor
            `overwrite` is set; it holds files that are no amp-tf run (no `job.json`);
            `resume` with no interrupted run, of a finished run (nothing to resume: it is
            refused, its files stay as they are), or with other settings than the stored
            `job.json`; `overwrite` of a folder that holds no amp-tf run.

    Example:
        >>> import pathlib, tempfile
        >>> check_run_folder(pathlib.Path(tempfile.mkdtemp()) / "run", {"seed": 0})
        'new'
    """
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ValueError(f"--out {path}: name a run folder of its own (e.g. runs/my-run), not {path}.")
    work = path.parent / f".{path.name}.partial"
    config = json.loads(json.dumps(config, default=str))
    if resume and overwrite:
        raise ValueError("--resume and --overwrite: pick one.")
    check_writable(path.parent, f"--out {path}")
    for p in (path, work):
        if p.exists() and not p.is_dir():
            raise ValueError(f"--out {path}: {p} is a file, not a run folder; pass another --out.")
    for folder in (work, path):  # a live run (committing: its lock is in `path` for a moment)
        state = lock_state(_read_lock(folder)) if (folder / LOCK).exists() else "gone"
        if state != "gone":
            _refuse_live(path, folder, _read_lock(folder), state)
    holder = inside_run(path)
    if holder is not None:
        raise ValueError(f"--out {path} lies inside the run folder {holder}; a run's folder holds that run only. "
                         "Pass a folder outside it.")
    finished, partial = _non_empty_dir(path), work.exists()
    ours = finished and _stored_config(path) is not None
    if overwrite:
        if finished and not ours:
            raise ValueError(f"--overwrite: {path} holds no job.json, so it is no amp-tf run folder and is "
                             f"left alone ({_some_files(path)}); remove it yourself, or pass another --out.")
        return "replace" if finished or partial else "new"
    if not resume:
        if finished and not ours:
            raise ValueError(f"--out {path} holds files that are no amp-tf run ({_some_files(path)}; no "
                             "job.json); they are left alone. Pass another --out (a new or empty folder).")
        if finished or partial:
            what = "holds an earlier run" if finished else _interrupted(work)
            raise ValueError(f"--out {path} {what}. Pass --resume to continue it with the same settings, "
                             "--overwrite to replace it, or another --out.")
        return "new"
    return _check_resume(path, work, config, finished, partial, ours)


def inside_run(path, live_only=False):
    """The run folder above `path`: a finished one (its `job.json`; not with `live_only`) or a live one (a
    lock in it, or in its `.partial` while it trains), else None."""
    for parent in Path(path).absolute().parents:
        if not live_only and (parent / "job.json").is_file():
            return parent
        for folder in (parent, parent.parent / f".{parent.name}.partial"):
            if (folder / LOCK).exists() and lock_state(_read_lock(folder)) != "gone":
                return parent
    return None


def check_output_folder(path, marker, overwrite=False, tool="this command", flag="--out"):
    """The rules of a run folder (`check_run_folder`) for a command's plain output folder (eval.ood,
    trainers.tune): refuses a live run's folder (or its `.partial`), a folder inside a live run, a
    training run's folder, and a non-empty folder without `overwrite`; `overwrite` replaces
    only what `tool` wrote itself (a folder holding `marker`): a user's files are left alone. Touches nothing.

    Example:
        >>> import pathlib, tempfile
        >>> user = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (user / "notes.txt").write_text("mine")
        >>> check_output_folder(user, "report.json", overwrite=True, tool="eval.ood")
        Traceback (most recent call last):
        ...
        ValueError: --overwrite: ... holds no report.json, so it is no eval.ood output and is left alone (notes.txt); remove it yourself, or pass another --out.
    """
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ValueError(f"{flag} {path}: name a folder of its own (e.g. runs/my-eval), not {path}.")
    check_writable(path.parent, f"{flag} {path}")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder; pass another {flag}.")
    for folder in (path.parent / f".{path.name}.partial", path):
        state = lock_state(_read_lock(folder)) if (folder / LOCK).exists() else "gone"
        if state != "gone":
            _refuse_live(path, folder, _read_lock(folder), state)
    holder = inside_run(path, live_only=True)  # beside a finished run's files is fine (runs/x/eval)
    if holder is not None:
        raise ValueError(f"{flag} {path} lies inside the folder of a live run ({holder}), which must hold that "
                         f"run only when it completes. Pass a folder outside it, or wait for the run to finish.")
    if _non_empty_dir(path):
        if (path / "job.json").exists():
            raise ValueError(f"{flag} {path} is a training run's folder; write elsewhere (e.g. {flag} {path}-"
                             f"{tool.rsplit('.', 1)[-1]}).")
        if not overwrite:
            raise ValueError(f"{flag} {path} is not empty; pass --overwrite to replace an earlier {tool} output, "
                             f"or another {flag}.")
        if not (path / marker).exists():
            raise ValueError(f"--overwrite: {path} holds no {marker}, so it is no {tool} output and is left "
                             f"alone ({_some_files(path)}); remove it yourself, or pass another {flag}.")
    return path


#: The least free space a run starts with (its models, backups and report).
MIN_FREE_BYTES = 64 << 20


def check_writable(folder, what="--out"):
    """Refuses, before any work, a folder that cannot be made or written: a file on its path, no
    permission, a read-only or full disk (`what` names the flag in the message). Touches nothing.

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
        free = shutil.disk_usage(existing).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise ValueError(f"{what}: the disk that holds {existing} is full ({free >> 20} MiB free); free some "
                         "space, or pass a folder on another disk.")


def _interrupted(work):
    lock = _read_lock(work)
    if lock:
        return (f"has an interrupted run ({work}; its process {lock.get('pid')} on {lock.get('host')}, started "
                f"{lock.get('started')}, is gone)")
    return f"has an interrupted run ({work})"


def _check_resume(path, work, config, finished, partial, ours):
    if not partial:
        if ours:
            raise ValueError(f"--resume: the run in {path} is already complete; there is nothing to resume, "
                             "and its files are left as they are. Pass --overwrite to run it again, or "
                             "another --out.")
        what = "holds no amp-tf run (no job.json)" if finished else "holds no run to resume"
        raise ValueError(f"--resume: {path} {what}; drop --resume.")
    old = _stored_config(work)
    if old is None:
        raise ValueError(f"--resume: the interrupted run in {work} has no job.json (its folder was deleted or "
                         "replaced during the run), so its settings are unknown; pass --overwrite to start over.")
    if old != config:
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        raise ValueError(f"--resume: the settings differ from the stored run's in {diff}; rerun with the "
                         "stored settings, or pass --overwrite to start over.")
    return "interrupted"


# --------------------------------------------------------------------------- #
# The folder
# --------------------------------------------------------------------------- #
class RunFolder:
    """A run's output folder, owned by one live run, never mixed with another and never half-written.

    The run writes into `work` (a hidden sibling `.<name>.partial`, holding
    `job.json` and the lock `.run.lock`) and `commit()` renames it to `path` when
    complete. The rules (`check_run_folder`, which a CLI calls before it loads any data):

    * a folder a live run holds (its lock's process is alive): refused at once,
      whatever the flags, naming that process;
    * a new `path`: the run starts;
    * a non-empty `path`, or a partial folder left by a run whose process is gone:
      refused, unless `resume=True` (continues the *interrupted* run; its stored
      `job.json` must equal `config`) or `overwrite=True` (starts afresh; the
      earlier run in `path` is deleted only by `commit()`, so a run that fails or is
      refused on the way leaves it as it was; a non-empty folder without `job.json`
      is never replaced);
    * `resume=True` of a *finished* run: refused, its files untouched.

    If the work folder is deleted while this run is in progress, the next epoch
    boundary (training under `guard()`), `commit()` and `check_intact()` raise
    `RunFolderLost`: nothing is re-created and nothing committed. The lock is released
    by `commit()`, `discard()`, `release()` and when the work under `guard()` ends with
    an error (Ctrl-C: `RunInterrupted`, which names the folder to resume).

    Args:
        path: the final folder.
        config: the run's settings (JSON-able); stored as `job.json` and
            compared on resume. Leave out what may differ on resume (verbosity).
        resume, overwrite: see above (not both).
        log: where the "resuming ..." line goes.
        record: more keys for job.json that are not settings (`RECORD_KEYS`, e.g.
            ``{"data_sources": {split: path}}``): written, never compared.

    Example:
        >>> import pathlib, tempfile
        >>> run = RunFolder(pathlib.Path(tempfile.mkdtemp()) / "run", {"seed": 0}, log=lambda m: None)
        >>> _ = (run.work / "report.md").write_text("done")
        >>> run.commit().name
        'run'
    """

    OWNER = LOCK  # the file that says which run owns the work folder (removed at commit)

    def __init__(self, path, config, resume=False, overwrite=False, log=print, record=None):
        self.path = Path(path)
        self.work = self.path.parent / f".{self.path.name}.partial"
        self.config = json.loads(json.dumps(config, default=str))
        self.log = log
        self.state = check_run_folder(self.path, self.config, resume, overwrite)
        if self.state == "new" and self.work.exists():
            raise ValueError(f"--out {self.path}: another run started in it just now; pass another --out.")
        self.work.mkdir(parents=True, exist_ok=True)
        self._token = _acquire(self.work, self.path)
        weakref.finalize(self, _HELD.discard, self._token)  # a dropped RunFolder holds nothing
        if self.state == "replace":  # a stale work folder; the earlier run in `path` stays until commit
            for p in self.work.iterdir():
                if p.name != LOCK:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        if self.state == "interrupted":
            self.log(f"resuming the interrupted run in {self.work} (same settings; completed epochs are "
                     "restored from its backups)")
        record = json.loads(json.dumps({k: v for k, v in (record or {}).items() if k in RECORD_KEYS}, default=str))
        (self.work / "job.json").write_text(json.dumps({**self.config, **record}, indent=2, sort_keys=True))

    def held(self):
        """True while this run holds its work folder (its lock is there and is its own)."""
        return (_read_lock(self.work) or {}).get("token") == self._token

    def check_intact(self):
        """Raises `RunFolderLost` unless the work folder is still this run's (job.json and lock)."""
        if not self.held() or _stored_config(self.work) != self.config:
            self.release()
            raise RunFolderLost(
                f"the run folder {self.work} was deleted or taken over by another run while this run was in "
                f"progress; nothing was committed to {self.path}. Start the run again (--overwrite)."
            )

    def release(self):
        """Gives up the lock (the run ended without a commit, as when its process ends); idempotent."""
        if self.held():
            with contextlib.suppress(OSError):
                (self.work / LOCK).unlink()
        _HELD.discard(self._token)

    @contextlib.contextmanager
    def guard(self):
        """Wraps a run's work: training checks the folder at each epoch end (`epoch_check`); an
        `OSError` because the work folder vanished becomes `RunFolderLost`; Ctrl-C becomes
        `RunInterrupted`; any error releases the lock.

        Example:
            >>> import pathlib, tempfile
            >>> run = RunFolder(pathlib.Path(tempfile.mkdtemp()) / "run", {}, log=lambda m: None)
            >>> with run.guard():
            ...     shutil.rmtree(run.work)
            ...     (run.work / "report.md").write_text("x")
            Traceback (most recent call last):
            ...
            amp_tf.run.runfolder.RunFolderLost: the run folder ... was deleted or taken over by another run ...
        """
        _ACTIVE.append(self)
        try:
            yield self.work
        except KeyboardInterrupt:
            self.release()
            raise RunInterrupted(self.path, self.work) from None
        except OSError as err:
            if not isinstance(err, RunFolderLost):
                self.check_intact()
            self.release()
            raise
        except BaseException:
            self.release()
            raise
        finally:
            _ACTIVE.remove(self)

    def commit(self):
        """Moves the complete run into place; returns its final path.

        Raises:
            RunFolderLost: the work folder is gone or no longer this run's.
            FileExistsError: `path` was filled by someone else during the run.
        """
        self.check_intact()
        if _non_empty_dir(self.path):
            if self.state == "new" or _stored_config(self.path) is None:
                raise FileExistsError(f"{self.path} was filled while this run was in progress; the complete "
                                      f"run stays in {self.work}: move it yourself.")
            shutil.rmtree(self.path)  # the earlier run that --overwrite replaces
        elif self.path.is_dir():
            self.path.rmdir()
        self.work.rename(self.path)  # with the lock: a run starting now sees a live owner, not a free folder
        (self.path / LOCK).unlink()
        _HELD.discard(self._token)
        return self.path

    def discard(self):
        """Removes the work folder of a run refused after `RunFolder` was made (a resumed one is kept).

        For checks that need the data: call it when such a check refuses the run,
        so that a refusal leaves nothing behind (an earlier run in `path` is untouched).
        """
        if self.state != "interrupted" and self.held():
            shutil.rmtree(self.work)
        self.release()


def epoch_check(out_dir):
    """A Keras-free epoch-end check for training into `out_dir`: `check()` raises `RunFolderLost`
    when the run folder under `guard()` that holds `out_dir` was deleted or taken over; None when
    `out_dir` is in no guarded run folder."""
    if out_dir is None:
        return None
    out_dir = Path(out_dir).absolute()
    for folder in reversed(_ACTIVE):
        work = folder.work.absolute()
        if out_dir == work or work in out_dir.parents:
            return folder.check_intact
    return None
