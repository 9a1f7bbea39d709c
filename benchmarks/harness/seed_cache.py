"""A per-seed results cache that a later session on a fresh machine can resume from (issue 20).

Each finished seed is ONE JSON file, `<folder>/seed<N>.json`, committed to git with the
results, so `--resume` on a fresh clone continues where the last session stopped:

    {"code_version": ..., "settings": {...}, "seed": N, "complete": true, "result": {...}}

Rules (the issue's "bad input"):

* A seed's file is written only when the seed is complete, atomically (a temporary
  file in the same folder, then `os.replace`): an interrupted seed leaves no file (or
  the previous one) and is redone, never half-counted.
* Files already there and no `--resume`: refused (`CacheError`), so a run never mixes
  with old results by accident.
* `--resume` with stored settings that differ from this run's: refused, naming each
  differing setting with its stored and its current value.
* A file from another `CODE_VERSION` (the code that makes the numbers changed): never
  reused; the seed is REDONE with a printed line saying so (the old file stays until
  the new seed is complete). Redoing rather than refusing: the settings are the same,
  so the only right answer is the new code's, and the line names the old version.
* An unreadable or incomplete file (a bad merge, an edit by hand): redone, with a line.

Pure Python (no TensorFlow): `tests/test_seed_cache.py` runs in a second.

Example:

>>> import tempfile
>>> c = SeedCache(tempfile.mkdtemp(), {"width": 24}, code_version="v1", log=lambda m: None)
>>> c.check(resume=False)
[]
>>> c.load(0) is None
True
>>> c.save(0, {"acc": 0.93})
>>> SeedCache(c.folder, {"width": 24}, code_version="v1").load(0)
{'acc': 0.93}
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

_NAME = re.compile(r"^seed(\d+)\.json$")


class CacheError(ValueError):
    """A cache that must not be used as it is (the message says why and what to do)."""


def _canonical(value):
    """JSON round trip: tuples become lists, so stored and current settings compare alike."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def setting_differences(stored, current):
    """`["name: stored X, now Y", ...]` for every setting that differs (missing counts as differing)."""
    stored, current = _canonical(stored), _canonical(current)
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key, "<not set>"), current.get(key, "<not set>")
        if a != b:
            out.append(f"{key}: stored {a!r}, now {b!r}")
    return out


class SeedCache:
    """One JSON file per finished seed under `folder`, valid for `settings` and `code_version`.

    Args:
        folder: where the `seed<N>.json` files live (committed with the results).
        settings: every setting that changes a seed's numbers (JSON-able); not the list
            of seeds, output paths or --resume itself.
        code_version: the version of the code that makes the numbers; bump it when a
            change moves them.
        log: called with one line per redone seed.
    """

    def __init__(self, folder, settings, code_version, log=print):
        self.folder = Path(folder)
        self.settings = _canonical(settings)
        self.code_version = str(code_version)
        self.log = log

    def path(self, seed):
        return self.folder / f"seed{int(seed)}.json"

    def stored_seeds(self):
        """Seeds with a file in the folder (readable or not), sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.match(p.name)))

    def _read(self, seed):
        """The stored entry, or None for a missing / unreadable / incomplete file (with a line)."""
        path = self.path(seed)
        if not path.exists():
            return None
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            self.log(f"seed {seed}: {path} is unreadable ({err}); the seed is redone")
            return None
        if not isinstance(entry, dict) or entry.get("complete") is not True or "result" not in entry:
            self.log(f"seed {seed}: {path} is not a complete seed; the seed is redone")
            return None
        return entry

    def check(self, resume):
        """Refuses a cache this run must not use; returns the seeds that will be reused.

        Raises:
            CacheError: files exist and `resume` is False; or `resume` and a file's
                settings differ from this run's (each differing setting is named).
        """
        seeds = self.stored_seeds()
        if seeds and not resume:
            raise CacheError(
                f"{self.folder} already holds seeds {seeds}: pass --resume to continue that run "
                "(same settings), or choose another --cache folder.")
        reused = []
        for seed in seeds:
            entry = self._read(seed)
            if entry is None:
                continue
            diff = setting_differences(entry.get("settings", {}), self.settings)
            if diff:
                raise CacheError(
                    f"--resume: {self.path(seed)} was made with other settings; differing: "
                    + "; ".join(diff) + ". Run with the stored settings, or choose another --cache folder.")
            if entry.get("code_version") == self.code_version:
                reused.append(seed)
        return reused

    def load(self, seed):
        """The stored result of `seed`, or None when the seed has to be (re)done.

        A file from another code version is not reused: one line says so.
        """
        entry = self._read(seed)
        if entry is None:
            return None
        if entry.get("code_version") != self.code_version:
            self.log(f"seed {seed}: {self.path(seed)} was made by code version "
                     f"{entry.get('code_version')!r}, this is {self.code_version!r}: the seed is redone")
            return None
        if setting_differences(entry.get("settings", {}), self.settings):
            raise CacheError(f"{self.path(seed)}: stored settings differ (call check() first).")
        return entry["result"]

    def save(self, seed, result):
        """Writes the complete seed atomically: a temporary file in the folder, then a rename."""
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = {"code_version": self.code_version, "settings": self.settings, "seed": int(seed),
                 "complete": True, "result": result}
        text = json.dumps(entry, indent=1, sort_keys=False, default=_json_default)
        fd, tmp = tempfile.mkstemp(prefix=f".seed{int(seed)}.", suffix=".partial", dir=self.folder)
        try:
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would be committed as is
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(seed))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")
