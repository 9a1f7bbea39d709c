"""The one job pipeline: ID data -> train -> save -> export -> evaluate -> report.

Every trainer (`trainers.fmnist`, `trainers.cifar`, `trainers.imagenet` for
image folders), the tuner and `benchmarks/ood_quality.py` describe a job with
the same three pieces and run it with `run_job`:

* `IDData`: the ID images as raw pixels, split into train / validation / test
  (validation held out of training by a seeded permutation; the training
  indices are kept in their original order), with the per-channel training
  statistics the models carry.
* the OOD sets, `{name: raw-pixel images}` (`load_ood`);
* `{model name: TrainConfig}`: usually an anchored model and its vanilla twin.

`run_job` writes into a `RunFolder` (a temporary sibling renamed into place
when complete, so a killed run never leaves a folder that looks finished) and
returns the results dict that `amp_tf.report` renders. The serving threshold is
set on the ID *validation* images, never on the reported ID test set.

Example:
    >>> from amp_tf.training import TrainConfig
    >>> d = load_id("fashion_mnist", val_size=64, train_limit=256, eval_limit=64)
    >>> ood, _ = load_ood(["digits"], d.image_shape, limit=64)
    >>> cfg = TrainConfig(epochs=1, batch_size=64, backbone_kwargs={"width": 4})
    >>> import tempfile, pathlib
    >>> folder = RunFolder(pathlib.Path(tempfile.mkdtemp()) / "run", config={"doc": 1})
    >>> results = run_job(d, ood, {"anchored": cfg}, folder, num_anchors=2, verbose=0,
    ...                   plots=False, log=lambda *a: None)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from amp_tf.pixels import check_pixels


# --------------------------------------------------------------------------- #
# ID data
# --------------------------------------------------------------------------- #
@dataclasses.dataclass
class IDData:
    """The ID images of a job, raw pixels (uint8), split three ways.

    Attributes:
        name: registry name of the ID set.
        x_train, y_train: training images and labels.
        x_val, y_val: ID validation images, held out of training: early
            stopping, the serving threshold, every selection.
        x_test, y_test: the reported ID test set.
        num_classes: class count.
        mean, std: per-channel statistics of `x_train` in pixel units.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray = None
    std: np.ndarray = None

    def __post_init__(self):
        from amp_tf.data.preprocessing import channel_stats

        for k in ("x_train", "x_val", "x_test"):
            check_pixels(getattr(self, k), k)
        if self.mean is None or self.std is None:
            self.mean, self.std = channel_stats(self.x_train)

    @property
    def image_shape(self):
        return tuple(self.x_train.shape[1:])

    def sizes(self):
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}


def split_id(name, x_all, y_all, x_test, y_test, val_size, seed=0, train_limit=None, num_classes=None,
             min_val=20):
    """`IDData` from a training pool: `val_size` images held out by a seeded permutation.

    The validation images are the first `val_size` of `permutation(seed)`; the
    rest, in their original order, are the training images (then the first
    `train_limit` of them).
    """
    val_size = int(val_size)
    if val_size < min_val:
        raise ValueError(f"val_size: need at least {min_val} ID validation images (serving threshold, "
                         f"selection), got {val_size}.")
    if val_size >= len(x_all):
        raise ValueError(f"val_size: {val_size} leaves no training images out of {len(x_all)}.")
    if train_limit is not None and int(train_limit) < 1:
        raise ValueError(f"train_limit: expected an int >= 1 (or no limit), got {train_limit}.")
    order = np.random.default_rng(seed).permutation(len(x_all))
    val_idx, train_idx = order[:val_size], np.sort(order[val_size:])
    if train_limit:
        train_idx = train_idx[: int(train_limit)]
    y_all = np.asarray(y_all)
    n = int(num_classes) if num_classes else int(y_all.max()) + 1
    return IDData(name, x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx],
                  np.asarray(x_test), np.asarray(y_test), n)


def load_id(name, val_size=5000, seed=0, train_limit=None, eval_limit=None, data_dir=None, download=False):
    """`split_id` of a registry set's `train` split, with its `test` split (first `eval_limit`)."""
    from amp_tf import data

    kw = dict(data_dir=data_dir, download=download)
    train_set = data.load(name, "train", **kw)
    x_all, y_all = data.to_numpy(train_set)
    x_test, y_test = data.to_numpy(data.load(name, "test", **kw), limit=eval_limit or None)
    return split_id(name, x_all, y_all, x_test, y_test, val_size, seed, train_limit,
                    num_classes=train_set.num_classes)


def load_ood(names, image_shape, resize=None, convert_channels=False, limit=None, data_dir=None,
             download=False, skip_missing=False, log=print):
    """`({name: raw-pixel images}, {skipped name: reason})` in the ID geometry.

    Unknown names fail before anything loads; with `skip_missing`, sets whose
    data is not on this machine are skipped with one line each.
    """
    from amp_tf.data import DataNotFoundError, registry
    from amp_tf.data.loading import load_images

    for n in names:
        registry.resolve(n)
    ood, skipped = {}, {}
    for n in names:
        try:
            x, _, _ = load_images(n, "test", image_shape[:2], image_shape[-1], resize=resize,
                                  convert_channels=convert_channels, limit=limit, data_dir=data_dir,
                                  download=download)
        except DataNotFoundError as err:
            if not skip_missing:
                raise
            skipped[n] = (str(err).strip().splitlines() or [type(err).__name__])[0]
            log(f"skipped {n}: {skipped[n]}")
            continue
        ood[n] = x
    return ood, skipped


# --------------------------------------------------------------------------- #
# Run folders
# --------------------------------------------------------------------------- #
class RunFolderLost(FileNotFoundError):
    """The work folder of a run in progress was deleted or taken over by another run: nothing is committed."""


def _stored_config(folder):
    """The `job.json` of a run folder, or None when it has none (or it is unreadable)."""
    try:
        return json.loads((Path(folder) / "job.json").read_text())
    except (OSError, ValueError):
        return None


def _non_empty_dir(path):
    return path.is_dir() and any(path.iterdir())


def check_run_folder(path, config, resume=False, overwrite=False):
    """Refuses a run folder that would mix runs, before anything is loaded or written. Touches nothing.

    Returns the state RunFolder will start from: ``"new"``, ``"interrupted"``
    (a `.<name>.partial` left by a killed run: resumed with `resume=True`) or
    ``"replace"`` (`overwrite=True` over an earlier run).

    Raises:
        ValueError: `--out` is a file, or `.` / `..`; it holds a run (or a killed run) and
            neither `resume` nor `overwrite` is set; `resume` with no interrupted
            run, of a finished run (nothing to resume: it is refused, its files
            stay as they are), or with other settings than the stored `job.json`;
            `overwrite` of a folder that holds no amp-tf run (no `job.json`).

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
    for p in (path, work):
        if p.exists() and not p.is_dir():
            raise ValueError(f"--out {path}: {p} is a file, not a run folder; pass another --out.")
    finished, partial = _non_empty_dir(path), work.exists()
    if overwrite:
        if finished and _stored_config(path) is None:
            raise ValueError(f"--overwrite: {path} holds no job.json, so it is no amp-tf run folder and is "
                             "left alone; remove it yourself, or pass another --out.")
        return "replace" if finished or partial else "new"
    if not resume:
        if finished or partial:
            what = "holds an earlier run" if finished else f"has an interrupted run ({work})"
            raise ValueError(f"--out {path} {what}. Pass --resume to continue it with the same settings, "
                             "--overwrite to replace it, or another --out.")
        return "new"
    if not partial:
        if finished and _stored_config(path) is not None:
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


class RunFolder:
    """A run's output folder, never mixed with another run and never half-written.

    The run writes into `work` (a hidden sibling `.<name>.partial`, holding
    `job.json`) and `commit()` renames it to `path` when complete. The rules
    (`check_run_folder`, which a CLI can call before it loads any data):

    * a new `path`: the run starts;
    * a non-empty `path`, or a partial folder left by a killed run: refused,
      unless `resume=True` (continues the *interrupted* run; its stored
      `job.json` must equal `config`) or `overwrite=True` (starts afresh; the
      earlier run in `path` is deleted only by `commit()`, so a run that
      fails or is refused on the way leaves it as it was; a non-empty folder
      without `job.json` is never replaced);
    * `resume=True` of a *finished* run: refused, its files untouched (there is
      nothing to resume; `overwrite=True` runs it again).

    If the work folder is deleted, or taken over by another run (a second
    `--overwrite` or `--resume` of the same `--out`), while this run is in
    progress, `commit()` (and `check_intact()`, between phases) raises
    `RunFolderLost` and commits nothing.

    Args:
        path: the final folder.
        config: the run's settings (JSON-able); stored as `job.json` and
            compared on resume. Leave out what may differ on resume (verbosity).
        resume, overwrite: see above (not both).
        log: where the "resuming ..." line goes.

    Example:
        >>> import pathlib, tempfile
        >>> run = RunFolder(pathlib.Path(tempfile.mkdtemp()) / "run", {"seed": 0}, log=lambda m: None)
        >>> _ = (run.work / "report.md").write_text("done")
        >>> run.commit().name
        'run'
    """

    OWNER = ".owner"  # a token of the process that writes the work folder (removed at commit)

    def __init__(self, path, config, resume=False, overwrite=False, log=print):
        import uuid

        self.path = Path(path)
        self.work = self.path.parent / f".{self.path.name}.partial"
        self.config = json.loads(json.dumps(config, default=str))
        self.log = log
        self.state = check_run_folder(self.path, self.config, resume, overwrite)
        if self.state == "replace":  # the earlier run in `path` stays until this one is complete
            shutil.rmtree(self.work, ignore_errors=True)
        if self.state == "interrupted":
            self.log(f"resuming the interrupted run in {self.work} (same settings; completed epochs are "
                     "restored from its backups)")
        self._token = uuid.uuid4().hex
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "job.json").write_text(json.dumps(self.config, indent=2, sort_keys=True))
        (self.work / self.OWNER).write_text(self._token)

    def check_intact(self):
        """Raises `RunFolderLost` unless the work folder is still this run's (job.json and owner token)."""
        try:
            mine = (self.work / self.OWNER).read_text() == self._token
        except OSError:
            mine = False
        if not mine or _stored_config(self.work) != self.config:
            raise RunFolderLost(
                f"the run folder {self.work} was deleted or taken over by another run while this run was in "
                f"progress; nothing was committed to {self.path}. Start the run again (--overwrite)."
            )

    @contextlib.contextmanager
    def guard(self):
        """Wraps a run's work: an `OSError` because the work folder vanished becomes `RunFolderLost`.

        Example:
            >>> import pathlib, tempfile
            >>> run = RunFolder(pathlib.Path(tempfile.mkdtemp()) / "run", {}, log=lambda m: None)
            >>> with run.guard():
            ...     shutil.rmtree(run.work)
            ...     (run.work / "report.md").write_text("x")
            Traceback (most recent call last):
            ...
            amp_tf.pipeline.RunFolderLost: the run folder ... was deleted or taken over by another run ...
        """
        try:
            yield self.work
        except OSError as err:
            if not isinstance(err, RunFolderLost):
                self.check_intact()
            raise

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
        (self.work / self.OWNER).unlink()
        self.work.rename(self.path)
        return self.path

    def discard(self):
        """Removes the work folder of a run refused after `RunFolder` was made (a resumed one is kept).

        For checks that need the data: call it when such a check refuses the run,
        so that a refusal leaves nothing behind (an earlier run in `path` is untouched).
        """
        if self.state != "interrupted" and self.work.is_dir():
            shutil.rmtree(self.work)


# --------------------------------------------------------------------------- #
# The job
# --------------------------------------------------------------------------- #
def train_models(data, models, out, verbose=1, backup=True, strategy=None, callbacks_for=None, log=print):
    """Trains `{name: TrainConfig}` on `data` into `out/<name>/`; returns `{name: (model, cfg, seconds)}`.

    The statistics of `data` are filled into each config; `init_from="job:<name>"`
    starts an anchored model from a model trained (or given) earlier in the same
    dict. A `GivenModel` is not trained: it is loaded, checked against `data`
    and scored as it is. Each model trains under its own dtype policy
    (`--mixed-precision`); the global policy is restored after each one.
    """
    from amp_tf.training import train

    stats = dict(mean=tuple(np.asarray(data.mean).tolist()), std=tuple(np.asarray(data.std).tolist()))
    trained = {}
    for name, cfg in models.items():
        if isinstance(cfg, GivenModel):
            log(f"the {name} model is the given {cfg.path} (scored, not trained)")
            trained[name] = (cfg.load(data), cfg, 0.0)
            continue
        cfg = dataclasses.replace(cfg, **stats)
        log(f"training the {name} {cfg.arch or 'model'} on {data.name} for {cfg.epochs} epochs ...")
        t = time.time()
        init = None
        if cfg.init_from and str(cfg.init_from).startswith("job:"):
            src = str(cfg.init_from)[4:]
            if src not in trained:
                raise ValueError(f"{name}: init_from {cfg.init_from!r} names no model trained before it.")
            init = trained[src][0]
            log(f"  {name} starts from the {src} model (anchor_backbone, function-preserving)")
        model, _ = train(cfg, data.x_train, data.y_train, data.num_classes, val=(data.x_val, data.y_val),
                         out_dir=Path(out) / name, verbose=verbose, strategy=strategy,
                         backup=backup(name) if callable(backup) else backup, init_from=init,
                         callbacks=(callbacks_for(name) if callbacks_for else ()))
        trained[name] = (model, cfg, time.time() - t)
    return trained


@dataclasses.dataclass
class GivenModel:
    """A trained model that a job scores instead of training (e.g. the vanilla twin of --init-from).

    Attributes:
        path: its `.keras` file (recorded in the report).
        anchored: whether it is an `AnchoredModel` (the vanilla twin: False).
        seed: the seed recorded with it (anchors come from the first anchored config).
        model: the loaded model, when already loaded (`load` fills it in).

    Example:
        >>> GivenModel("runs/x/vanilla.keras").to_dict()
        {'given': 'runs/x/vanilla.keras', 'anchored': False, 'trained_here': False}
    """

    path: str
    anchored: bool = False
    seed: int = 0
    model: object = dataclasses.field(default=None, repr=False, compare=False)

    def load(self, data=None):
        """The model, loaded once and checked against `data` (an `IDData`): image shape and classes."""
        import keras

        from amp_tf.anchoring import AnchoredModel
        from amp_tf.serializables import register_all

        if self.model is None:
            register_all()  # every serializable registered, also in a CLI process
            try:
                self.model = keras.saving.load_model(self.path, compile=False)
            except Exception as err:  # keras raises many types for a bad file
                first = (str(err).strip().splitlines() or [""])[0]
                raise ValueError(f"{self.path} could not be loaded as a Keras model ({type(err).__name__}: "
                                 f"{first}); give a model saved with model.save('name.keras').") from None
        if isinstance(self.model, AnchoredModel) != self.anchored:
            want = "an anchored" if self.anchored else "a vanilla"
            raise ValueError(f"{self.path}: expected {want} model, got a {type(self.model).__name__}.")
        if data is not None:
            shape, classes = tuple(self.model.input_shape[1:]), int(self.model.output_shape[-1])
            if shape != tuple(data.image_shape) or classes != int(data.num_classes):
                raise ValueError(
                    f"{self.path}: the model takes {shape} images and has {classes} outputs; the ID set "
                    f"{data.name} is {tuple(data.image_shape)} with {data.num_classes} classes. Give a model "
                    "trained on this data set.")
        return self.model

    def to_dict(self):
        return {"given": str(self.path), "anchored": self.anchored, "trained_here": False}


def score_models(trained, data, ood, num_anchors=5, positive="id", log=print):
    """Scores trained models on `data.x_test` and `ood`: `(metrics by score, raw values, info)`.

    Anchored models use K anchors from the training images (seeded with the
    first anchored model's seed); every AMP variant comes from the same logits.
    """
    from amp_tf.evaluation import evaluate_model
    from amp_tf.predictor import select_anchors

    anchored = [n for n, (_, c, _) in trained.items() if c.anchored]
    anchors = select_anchors(data.x_train, num_anchors, seed=trained[anchored[0]][1].seed) if anchored else None
    scores, values, info = {}, {}, {}
    for name, (model, cfg, secs) in trained.items():
        n_images = len(data.x_test) + sum(len(v) for v in (ood or {}).values())
        log(f"scoring the {name} model on {data.name} + {len(ood)} OOD set(s) ({n_images} images) ...")
        t = time.time()
        res, vals, acc = evaluate_model(model, data.x_test, data.y_test, ood or {}, name,
                                        anchors=anchors if cfg.anchored else None, positive=positive)
        log(f"  {name}: {len(res)} scores in {time.time() - t:.0f} s")
        scores.update(res)
        values.update(vals)
        info[name] = {"id_accuracy": acc, "params": int(model.count_params()), "train_time_s": round(secs, 1)}
    return scores, values, info, anchors


def _merge(into, more):
    for key, per_set in more.items():
        into.setdefault(key, {}).update(per_set)


def _machine_jiffies():
    """(all, steal) CPU jiffies of the machine from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return sum(vals[:8]), vals[7]
    except (OSError, ValueError, IndexError):
        return None


def run_job(data, ood, models, folder, num_anchors=5, positive="id", tpr=0.95, export=True, plots=True,
            callbacks_for=None, verbose=1, backup=True, strategy=None, title=None, extra=None, near=(),
            log=print):
    """Trains each model, saves it, exports the anchored one, scores all, writes the report.

    Args:
        data: `IDData`.
        ood: `{name: raw-pixel images}` (may be empty: no OOD report then).
        models: `{name: TrainConfig or GivenModel}`; the statistics of `data` are filled
            into the configs; a `GivenModel` is scored (and saved) as it is.
        folder: a `RunFolder`; `folder.commit()` is called at the end.
        num_anchors: K for AMP (anchors picked from the training images with the
            first anchored model's seed).
        positive: metric convention (`"id"` or `"ood"`).
        tpr: serving threshold: this fraction of ID validation images pass.
        export: write `serving/` (SavedModel) for the anchored model.
        callbacks_for: optional `name -> [keras callbacks]`.
        backup: `train(backup=...)`: True, False or a folder per model (callable name -> value).
        extra: more top-level keys for the results (e.g. the CLI's args).
        near: near-OOD splits, `[(IDData of the split's ID classes, {ood name: images})]`:
            the same model configs are trained on each split (in `near_<id>/`) and
            scored on its held-out classes; their metrics join the same score keys.

    Returns:
        The results dict (also in `report.json`), with `out` = the final folder.
    """
    with folder.guard():  # a work folder that vanishes mid-run fails loudly (RunFolderLost)
        return _run_job(data, ood, models, folder, num_anchors, positive, tpr, export, plots, callbacks_for,
                        verbose, backup, strategy, title, extra, near, log)


def _run_job(data, ood, models, folder, num_anchors, positive, tpr, export, plots, callbacks_for, verbose,
             backup, strategy, title, extra, near, log):
    from amp_tf.distribute import worker_info
    from amp_tf.export import export_for_serving, export_tflite
    from amp_tf.predictor import AnchoredPredictor
    from amp_tf.report import write_report
    from amp_tf.files import write_json

    if int(num_anchors) < 2:
        raise ValueError(f"num_anchors: AMP needs K >= 2 anchors, got {num_anchors}.")
    if near and any(isinstance(c, GivenModel) for c in models.values()):
        raise ValueError("near: the near-OOD splits train their own models on other classes; a given model "
                         "cannot be theirs. Drop the near splits or the given model.")
    t0, cpu0, jiffies0 = time.time(), time.process_time(), _machine_jiffies()
    timings = {}  # seconds per phase, in the report

    def lap(phase, since):
        timings[phase] = round(time.time() - since, 1)
        return time.time()

    out = folder.work
    t = time.time()
    trained = train_models(data, models, out, verbose, backup, strategy, callbacks_for, log)
    t = lap("train", t)
    if not worker_info()[2]:
        log("non-chief worker: training done; the chief writes models and report.")
        return {"chief": False}
    scores, values, info, anchors = score_models(trained, data, ood, num_anchors, positive, log)
    t = lap("score", t)
    exported = not export
    for name, (model, cfg, _) in trained.items():
        model.save(out / f"{name}.keras")
        if cfg.anchored and not exported:
            exported = True
            pred = AnchoredPredictor.from_model(model, anchors)
            head = export_for_serving(pred, out / "serving", id_images=data.x_val, tpr=tpr)
            export_tflite(head, out / "model.tflite")  # the same model for LiteRT (builtin ops, batch 1)
            info[name]["serving_threshold_on"] = f"{len(data.x_val)} ID validation images (tpr {tpr})"
    t = lap("save_and_export", t)
    ood_names = list(ood)
    for near_data, near_ood in near:
        sub = out / f"near_{near_data.name}"
        near_trained = train_models(near_data, models, sub, verbose, backup, strategy, None, log)
        s, v, i, _ = score_models(near_trained, near_data, near_ood, num_anchors, positive, log)
        _merge(scores, s)  # raw values stay out of the plots: they have another ID set
        info.update({f"{n}@{near_data.name}": m for n, m in i.items()})
        ood_names += list(near_ood)
    if near:
        t = lap("near_ood", t)
    results = {
        "title": title or f"{data.name} (ID) vs " + (", ".join(ood_names) or "no OOD set"),
        "id_set": data.name, "ood_sets": ood_names, "positive": positive,
        "data": {**data.sizes(), "mean": [float(v) for v in np.asarray(data.mean)],
                 "std": [float(v) for v in np.asarray(data.std)], "serving_threshold": "ID validation images"},
        "config": {"train": {n: c.to_dict() for n, (_, c, _) in trained.items()}, "num_anchors": int(num_anchors)},
        "models": info, "scores": scores,
        **(extra or {}),
    }
    results["timings_s"] = timings
    results["wall_time_s"] = round(time.time() - t0, 1)
    # Wall time depends on the machine's load: the process' CPU time and the share of
    # the machine's CPU taken by the hypervisor (steal) make runs comparable.
    results["cpu_time_s"] = round(time.process_time() - cpu0, 1)
    jiffies1 = _machine_jiffies()
    if jiffies0 and jiffies1 and jiffies1[0] > jiffies0[0]:
        results["steal_share"] = round((jiffies1[1] - jiffies0[1]) / (jiffies1[0] - jiffies0[0]), 3)
    if ood_names:
        write_report(out, results, values, plots=plots)
    else:
        write_json(out / "report.json", results)
    lap("report", t)
    log("time per phase: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    results["out"] = str(folder.commit())
    return results
