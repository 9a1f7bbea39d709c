"""The files a run reads and writes: JSON written atomically, `.keras` files checked before loading.

Nothing here imports TensorFlow or Keras at module level, so a CLI can check a
`.keras` path (`check_keras_file`) while it parses its arguments.

`keras.saving.load_model` answers a truncated `.keras` file, or an HDF5 / text
file renamed `.keras`, with "File not found"; `load_keras_model` says what the
file is instead and how to get a good one.

Example:

>>> import pathlib, tempfile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "r.json"
>>> write_json(p, {"auroc": 0.9})
>>> p.read_text()
'{\\n  "auroc": 0.9\\n}'
>>> bad = p.with_name("model.keras")
>>> _ = bad.write_text("not a model")
>>> check_keras_file(bad, "--model")
Traceback (most recent call last):
...
ValueError: --model ...model.keras is not a Keras model: the file is text, not a .keras zip archive; ...
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from amp_tf.contract import read_json

#: What a loader expects, appended to every message of `check_keras_file`.
EXPECTED = "expected a .keras file written by model.save(...) (e.g. a run's anchored.keras or vanilla.keras)"

_MAGIC = {  # leading bytes of files that are often renamed .keras by mistake
    b"\x89HDF\r\n\x1a\n": "an HDF5 file (a legacy .h5 model, or weights?), not a .keras zip archive: "
                          "load it where it was written and save it with model.save('model.keras')",
    b"PK\x03\x04": None,  # a zip: checked below
    b"\x08\x01\x12": "a protocol buffer (a SavedModel's saved_model.pb?): pass the .keras file, not serving/",
}


def write_json(path, obj):
    """Writes `obj` as indented JSON to `path` atomically (a temporary file, then a rename).

    Creates the parent folder; numpy scalars / arrays and paths become JSON
    numbers / lists / strings. A reader never sees a half-written file.

    Example:
        >>> import pathlib, tempfile, numpy as np
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a" / "b.json"
        >>> write_json(p, {"x": np.float32(0.5), "n": np.arange(2)})
        >>> json.loads(p.read_text())
        {'x': 0.5, 'n': [0, 1]}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if hasattr(o, "item") and getattr(o, "ndim", None) == 0:  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):  # numpy arrays
        return o.tolist()
    return str(o)  # paths and anything else


def _what_is(path):
    """A phrase saying what a file that is not a valid .keras archive is, or None if it looks valid."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes): it was never written, or the copy failed"
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, what in _MAGIC.items():
        if head.startswith(magic) and what:
            return f"the file is {what}"
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
        return ("the file is truncated or corrupt (a zip archive that ends early: cut off while being "
                "written or copied); copy or save it again")
    if not zipfile.is_zipfile(path):
        text = head and all(32 <= b < 127 or b in (9, 10, 13) for b in head)
        return f"the file is {'text' if text else 'not a zip archive'}, not a .keras zip archive"
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"the file is a corrupt zip archive ({err})"
    if "config.json" not in names:
        return "the file is a zip archive without a model in it (no config.json), not a .keras model"
    if bad is not None:
        return f"the file is corrupt (its member {bad} fails its checksum); copy or save it again"
    return None


def check_keras_file(path, what="path"):
    """Raises a clear error unless `path` is a readable, complete `.keras` archive. Needs no TensorFlow.

    Args:
        path: the file to check.
        what: how the message names the path (a flag such as `"--model"`, or an argument name).

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: a folder, an empty, truncated or corrupt file, an HDF5 or text
            file, a zip without a model; the first line says which and what to do.

    Example:
        >>> check_keras_file("/no/such/model.keras", "--model")
        Traceback (most recent call last):
        ...
        FileNotFoundError: --model /no/such/model.keras: no such file; expected a .keras file ...
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path}: no such file; {EXPECTED}.")
    if path.is_dir():
        hint = " (a SavedModel such as serving/?)" if (path / "saved_model.pb").exists() else ""
        raise ValueError(f"{what} {path} is a folder{hint}, not a Keras model file; {EXPECTED}.")
    problem = _what_is(path)
    if problem:
        raise ValueError(f"{what} {path} is not a Keras model: {problem}; {EXPECTED}.")
    return path


def load_keras_model(path, what="path", compile=False):
    """`keras.saving.load_model(path)` after `check_keras_file`, with amp-tf's classes registered.

    A file that passes the check but still fails to load (e.g. a class that is
    not registered) gets a `ValueError` whose first line names the file and
    Keras' own first line.

    Example:
        >>> import amp_tf, keras, pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.keras"
        >>> keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(p)
        >>> load_keras_model(p, "--model").output_shape
        (None, 2)
    """
    check_keras_file(path, what)
    import keras

    from amp_tf.serializables import register_all

    register_all()

    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as err:  # Keras raises many types for a bad file
        first = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"{what} {path} could not be loaded as a Keras model ({type(err).__name__}: "
                         f"{first}); {EXPECTED}.") from None


class RunModels:
    """What a finished run folder holds for scoring new images (`load_run`).

    Attributes:
        path: the run folder.
        anchored: the anchored model (`anchored.keras`), or None.
        vanilla: its vanilla twin (`vanilla.keras`), or None (e.g. `--skip-vanilla`).
        anchors: the (K, H, W, C) anchors the run scored and exported with (raw pixels).
        threshold: the serving threshold: `ood_score < threshold` means OOD (set on
            the run's ID validation images).
        detector: the shipped `ShippedDetector` (`detector.json`, attached to `anchored`), or None
            for a run made before detectors were saved (then `ood_score` is AMP's).
        job: the run's settings (`job.json`).

    `predict(images)` scores raw pixels exactly as the run's `serving/` does: `predicted_class`,
    `ood_score`, `amp_score` and `is_ood`, as numpy arrays.
    """

    def __init__(self, path, anchored, vanilla, anchors, threshold, job, detector=None):
        self.path, self.anchored, self.vanilla = path, anchored, vanilla
        self.anchors, self.threshold, self.job, self.detector = anchors, threshold, job, detector

    @property
    def detector_label(self):
        return "amp" if self.detector is None else self.detector.label

    def predict(self, images, batch_size=256):
        if self.detector is not None:
            return self.detector.predict(images, batch_size)
        from amp_tf.method.predictor import AnchoredPredictor

        out = AnchoredPredictor.from_model(self.anchored, self.anchors).predict(images, batch_size)
        out["ood_score"] = out["amp_score"]
        out["is_ood"] = out["ood_score"] < self.threshold
        return out


def check_finished_run(path, what="run"):
    """`path` as a Path if it is a finished run folder (a trainer's --out, with its job.json); else an error
    naming `what` (the flag or argument) and the fix: a run that never finished, or is still running (only
    its ``.<name>.partial`` work folder is there), is told so, with the trainer's --resume. Pure Python.

    Example:
        >>> import pathlib, tempfile
        >>> runs = pathlib.Path(tempfile.mkdtemp())
        >>> (runs / ".r.partial").mkdir()
        >>> check_finished_run(runs / "r", "--run")
        Traceback (most recent call last):
        ...
        ValueError: --run .../r: the run never finished: only its work folder .../.r.partial is there; finish it with its trainer's --resume (the same command with --resume added), then try again.
    """
    path = Path(path)
    partial = path.parent / f".{path.name}.partial"
    if not (path / "job.json").is_file() and partial.is_dir():
        from amp_tf.run.runlock import LOCK, lock_state, read_lock

        lock = read_lock(partial) if (partial / LOCK).exists() else None
        if lock is not None and lock_state(lock) != "gone":
            raise ValueError(f"{what} {path}: the run is still running (process {lock.get('pid')} on "
                             f"{lock.get('host')}, started {lock.get('started')}, holds its work folder {partial}); "
                             "try again when it has finished.")
        only = "only its work folder" if not path.exists() else "no job.json; its work folder"
        raise ValueError(f"{what} {path}: the run never finished: {only} {partial} is there; finish it with its "
                         "trainer's --resume (the same command with --resume added), then try again.")
    if not path.exists():
        raise FileNotFoundError(f"{what} {path}: no such folder; pass the --out folder of a finished run.")
    if not path.is_dir():
        raise ValueError(f"{what} {path} is a file; pass the --out folder of a finished run.")
    if not (path / "job.json").is_file():
        raise ValueError(f"{what} {path}: no job.json, so it is no finished amp-tf run folder; pass the --out "
                         "folder of a finished run.")
    return path


def load_run(path):
    """Loads a finished run folder: its `.keras` models, and the anchors and threshold of its `serving/`.

    Every file is checked first (`check_keras_file`); a folder that is no
    finished run gets an error naming what is missing.

    Example:
        >>> run = load_run("runs/fmnist-20250101-120000")                     # doctest: +SKIP
        >>> from amp_tf import AnchoredPredictor
        >>> pred = AnchoredPredictor.from_model(run.anchored, run.anchors)   # doctest: +SKIP
        >>> out = pred.predict(images_uint8)                                  # doctest: +SKIP
        >>> is_ood = out["amp_score"] < run.threshold                         # doctest: +SKIP
    """
    path = check_finished_run(path)
    job = read_json(path / "job.json", "re-run the job into a new --out (the models beside it may be whole, but "
                    "what made them is unknown).")
    if not (path / "serving" / "saved_model.pb").is_file():
        raise ValueError(f"run {path}: no serving/ SavedModel, which holds the anchors and the threshold (a run "
                         "made without export); pick anchors from your training images with select_anchors.")
    models = {n: load_keras_model(path / f"{n}.keras", "run file")
              if (path / f"{n}.keras").exists() else None for n in ("anchored", "vanilla")}
    if models["anchored"] is None:
        raise ValueError(f"run {path}: no anchored.keras; expected the anchored model of the run.")
    import tensorflow as tf

    served = tf.saved_model.load(str(path / "serving"))
    found = {v.name.rsplit("/", 1)[-1].split(":")[0]: v.numpy() for v in served.variables
             if v.name.endswith(("/anchors:0", "/threshold:0"))}
    if set(found) != {"anchors", "threshold"}:
        raise ValueError(f"run {path}: serving/ has no anchors and threshold; re-export it with "
                         "amp_tf.export_for_serving.")
    from amp_tf.detection.detectors.shipped import has_detector, load_detector

    detector = None
    if has_detector(path):
        detector = load_detector(path, models["anchored"])
    else:
        import warnings

        warnings.warn(f"run {path}: no saved detector (detector.json; a run made before the shipped detector): "
                      "scoring falls back to AMP alone with the serving threshold. Refit one with "
                      "amp_tf.detection.detectors.select_detector(model, id_train, id_val) and save it into the run folder "
                      "(.save(folder)), or rerun the job.", UserWarning, stacklevel=2)
    return RunModels(path, models["anchored"], models["vanilla"], found["anchors"], float(found["threshold"]),
                     job, detector)
