"""The one job pipeline: ID data -> train -> save -> export -> evaluate -> report.

Every trainer (`trainers.fmnist`, `trainers.cifar`, `trainers.imagenet`) describes a job with the
same pieces (a `amp_tf.config.JobConfig` and its data) and runs it with `run_job`
(`benchmarks/quality/ood.py` loops over `train_models` / `score_models`):

* the ID data: `IDData`, raw pixels in memory, split into train / validation /
  test (validation held out of training by a seeded permutation; the training
  indices are kept in their original order), with the per-channel training
  statistics the models carry; or `StreamedIDData` for sets too large for memory
  (ImageNet folders or tfds sets, `load_id_stream`): the same views over tf.data;
* the OOD sets, `{name: raw-pixel images}` (`load_ood`), or streams of batches
  (`load_ood_streams`); `load_fmnist_suite` loads the offline suite of a
  `amp_tf.config.JobConfig`, with its near-OOD splits;
* `{model name: TrainConfig}`: usually an anchored model and its vanilla twin.

`run_job` writes into a `RunFolder` (a temporary sibling renamed into place
when complete, so a killed run never leaves a folder that looks finished) and
returns the results dict that `amp_tf.run.report` renders. The serving threshold is
set on the ID *validation* images, never on the reported ID test set.

Example:
    >>> from amp_tf.run.training import TrainConfig
    >>> d = load_id("fashion_mnist", val_size=64, train_limit=256, eval_limit=64)
    >>> ood, _ = load_ood(["digits"], d.image_shape, limit=64)
    >>> cfg = TrainConfig(epochs=1, batch_size=64, backbone_kwargs={"width": 4})
    >>> import tempfile, pathlib
    >>> folder = RunFolder(pathlib.Path(tempfile.mkdtemp()) / "run", config={"doc": 1})
    >>> from amp_tf.config import DataConfig, JobConfig
    >>> job = JobConfig(cfg, DataConfig("fashion_mnist"), models=("anchored",), num_anchors=2)
    >>> results = run_job(job, d, ood, folder, verbose=0, plots=False, log=lambda *a: None)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from amp_tf.run.scoring import score_models  # noqa: F401  (the job's scoring; importable from here as before)
from amp_tf.run.data import (  # noqa: F401  (the job's data; importable from here as before)
    IDData, StreamedIDData, split_id, load_id, load_ood, load_fmnist_suite, load_id_stream, threshold_count, load_ood_streams,
)


# --------------------------------------------------------------------------- #
# Run folders
# --------------------------------------------------------------------------- #
# The rules and the lock live in amp_tf.run.runfolder (pure Python: a CLI checks --out before TensorFlow).
from amp_tf.run.runfolder import RunFolder, RunFolderLost, RunInterrupted, check_run_folder  # noqa: E402,F401


# --------------------------------------------------------------------------- #
# The job
# --------------------------------------------------------------------------- #
def train_models(data, models, out, verbose=1, backup=True, strategy=None, callbacks_for=None, log=print):
    """Trains `{name: TrainConfig}` on `data` into `out/<name>/` (`out` None: no files); returns
    `{name: (model, cfg, seconds)}`.

    `data` is an `IDData` (arrays) or a `StreamedIDData` (tf.data). The statistics of
    `data` are filled into each config; `init_from="job:<name>"`
    starts an anchored model from a model trained (or given) earlier in the same
    dict. A `GivenModel` is not trained: it is loaded, checked against `data`
    and scored as it is. Each model trains under its own dtype policy
    (`--mixed-precision`); the global policy is restored after each one.
    """
    from amp_tf.run.training import train

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
        x, y, val = data.training_input()
        out_dir = Path(out) / name if out is not None else None
        model, _ = train(cfg, x, y, data.num_classes, val=val, out_dir=out_dir, verbose=verbose,
                         strategy=strategy, backup=backup(name) if callable(backup) else backup, init_from=init,
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

        from amp_tf.method.anchoring import AnchoredModel
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
        from amp_tf.contract import check_finite_weights

        check_finite_weights(self.model, str(self.path))
        if not self.anchored:  # the contract of every door (amp_tf.contract): logits out
            from amp_tf.contract import check_logits_head

            check_logits_head(self.model, str(self.path))
        from amp_tf.contract import check_outputs

        outputs = getattr(self.model, "outputs", None) or []  # a subclassed model may not tell
        if len(outputs) > 1:
            check_outputs([(getattr(t, "name", "?"), None) for t in outputs], str(self.path))  # one output
        if data is not None:
            from amp_tf.contract import shapes_match

            shape, classes = tuple(self.model.input_shape[1:]), int(self.model.output_shape[-1])
            if not shapes_match(shape, data.image_shape) or classes != int(data.num_classes):
                raise ValueError(
                    f"{self.path}: the model takes {shape} images and has {classes} outputs; the ID set "
                    f"{data.name} is {tuple(data.image_shape)} with {data.num_classes} classes. Give a model "
                    "trained on this data set.")
        return self.model

    def to_dict(self):
        return {"given": str(self.path), "anchored": self.anchored, "trained_here": False}


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


def run_job(job, data, ood, folder, models=None, *, near=(), tpr=None, export=True, plots=True, tflite=True,
            callbacks_for=None, verbose=1, backup=True, strategy=None, title=None, extra=None, log=print):
    """Trains the models of `job`, saves them, exports the anchored one, scores all, writes the report.

    Args:
        job: the `amp_tf.config.JobConfig`: its models (`job_models`), K (`num_anchors`), the metric
            convention (`positive`) and the serving head's calibration.
        data: `IDData`, or `StreamedIDData` (ImageNet-sized sets, `load_id_stream`), loaded for `job.data`.
        ood: `{name: raw-pixel images}` (may be empty: no OOD report then); with
            streamed data, `{name: stream of (images, labels) batches}` (`load_ood_streams`).
        folder: a `RunFolder`; `folder.commit()` is called at the end.
        models: `{name: TrainConfig or GivenModel}` (default: `job_models(job)`; a CLI passes the given
            model it has loaded and checked already); the statistics of `data` are filled into the
            configs; a `GivenModel` is scored (and saved) as it is.
        near: near-OOD splits, `[(IDData of the split's ID classes, {ood name: images})]`:
            the same model configs are trained on each split (in `near_<id>/`) and
            scored on its held-out classes; their metrics join the same score keys.
        tpr: serving threshold: this fraction of ID validation images pass (default `recipe.SERVING_TPR`).
        export: write `serving/` (SavedModel) for the anchored model.
        tflite: also write `model.tflite` (LiteRT) of the serving head.
        callbacks_for: optional `name -> [keras callbacks]`.
        backup: `train(backup=...)`: True, False or a folder per model (callable name -> value).
        extra: more top-level keys for the results (e.g. the CLI's args).

    Returns:
        The results dict (also in `report.json`), with `out` = the final folder.
    """
    from amp_tf import recipe

    num_anchors = recipe.check_num_anchors(job.num_anchors)
    tpr = recipe.SERVING_TPR if tpr is None else tpr
    models = job_models(job) if models is None else models
    if near and any(isinstance(c, GivenModel) for c in models.values()):
        raise ValueError("near: the near-OOD splits train their own models on other classes; a given model "
                         "cannot be theirs. Drop the near splits or the given model.")
    train_kw = dict(verbose=verbose, backup=backup, strategy=strategy, log=log)
    with folder.guard():  # a work folder that vanishes mid-run fails loudly (RunFolderLost)
        return _run_job(data, ood, models, folder, num_anchors, job.positive, train_kw, callbacks_for, near,
                        dict(export=export, tpr=tpr, calibration=job.calibration, tflite=tflite),
                        dict(title=title, extra=extra, plots=plots))


def job_models(job, given=None):
    """`{name: TrainConfig or GivenModel}` of a `JobConfig`, in training order.

    * ``job.train.init_from`` a file: that vanilla model is the twin (`given`, or a `GivenModel` of the
      file: scored, not trained) and the anchored model is fine-tuned from it for
      ``job.finetune_epochs`` epochs (0: ``train.epochs``); without "vanilla" in ``job.models``, the
      anchored model alone, fine-tuned from the file;
    * else with both models and ``finetune_epochs > 0``: the vanilla twin trains ``train.epochs``,
      then the anchored model is fine-tuned from it for ``finetune_epochs``;
    * else each model of ``job.models`` from scratch, the anchored one first.

    Example:
        >>> from amp_tf.config import JobConfig, TrainConfig
        >>> ms = job_models(JobConfig(TrainConfig(epochs=2), finetune_epochs=1))
        >>> [(n, c.anchored, c.epochs, c.init_from) for n, c in ms.items()]
        [('vanilla', False, 2, None), ('anchored', True, 1, 'job:vanilla')]
    """
    names = tuple(job.models)
    if not names or set(names) - {"anchored", "vanilla"} or len(set(names)) != len(names):
        raise ValueError(f"models: {names!r}; give ('anchored', 'vanilla'), ('anchored',) or ('vanilla',).")
    anchored = dataclasses.replace(job.train, anchored=True)
    vanilla = dataclasses.replace(job.train, anchored=False, init_from=None)
    source = str(job.train.init_from or "")
    if source and not source.startswith("job:"):
        if "anchored" not in names:
            raise ValueError(f"init_from {source!r}: a given vanilla model is the start of the anchored model; "
                             "the job has no anchored model (models: ('vanilla',)).")
        tuned = dataclasses.replace(anchored, arch=None, backbone_kwargs={}, init_from=source,
                                    epochs=job.finetune_epochs or job.train.epochs)
        if "vanilla" not in names:
            return {"anchored": tuned}
        twin = given if given is not None else GivenModel(source, seed=job.train.seed)
        return {"vanilla": twin, "anchored": dataclasses.replace(tuned, init_from="job:vanilla")}
    anchored.init_from = None
    if job.finetune_epochs and "anchored" in names:
        if "vanilla" not in names:
            raise ValueError(f"finetune_epochs {job.finetune_epochs}: the anchored model is fine-tuned from the "
                             "vanilla twin, which the job does not have; set finetune_epochs=0 (from scratch).")
        return {"vanilla": vanilla, "anchored": dataclasses.replace(anchored, epochs=job.finetune_epochs,
                                                                    init_from="job:vanilla")}
    return {n: anchored if n == "anchored" else vanilla for n in ("anchored", "vanilla") if n in names}


class _Clock:
    """Seconds per phase of a job, and its wall / CPU time and the hypervisor's steal share."""

    def __init__(self):
        self.t0, self.cpu0, self.jiffies0 = time.time(), time.process_time(), _machine_jiffies()
        self.timings, self.t = {}, self.t0

    def lap(self, phase):
        self.timings[phase] = round(time.time() - self.t, 1)
        self.t = time.time()

    def record(self, results):
        results["timings_s"] = self.timings  # the same dict: the report phase is added after writing
        results["wall_time_s"] = round(time.time() - self.t0, 1)
        # Wall time depends on the machine's load: the process' CPU time and the share of
        # the machine's CPU taken by the hypervisor (steal) make runs comparable.
        results["cpu_time_s"] = round(time.process_time() - self.cpu0, 1)
        jiffies1 = _machine_jiffies()
        if self.jiffies0 and jiffies1 and jiffies1[0] > self.jiffies0[0]:
            results["steal_share"] = round((jiffies1[1] - self.jiffies0[1]) / (jiffies1[0] - self.jiffies0[0]), 3)


def _run_job(data, ood, models, folder, num_anchors, positive, train_kw, callbacks_for, near, serving, report):
    from amp_tf.run.distribute import worker_info
    from amp_tf.run.files import write_json
    from amp_tf.run.report import write_report
    from amp_tf.run.scoring import job_anchors, select_shipped, shipped_summary

    log, clock, out = train_kw["log"], _Clock(), folder.work
    trained = train_models(data, models, out, callbacks_for=callbacks_for, **train_kw)
    clock.lap("train")
    if not worker_info()[2]:
        log("non-chief worker: training done; the chief writes models and report.")
        return {"chief": False}
    anchors = job_anchors(trained, data, num_anchors)
    shipped = select_shipped(trained, data, anchors, serving["calibration"], serving["tpr"], log)
    clock.lap("select")
    scores, values, info, anchors = score_models(trained, data, ood, num_anchors, positive, log, shipped, anchors)
    clock.lap("score")
    _save_and_export(trained, anchors, data.x_val, out, info, shipped=shipped, **serving)
    clock.lap("save_and_export")
    ood_names = list(ood)
    for near_data, near_ood in near:
        near_trained = train_models(near_data, models, out / f"near_{near_data.name}", **train_kw)
        near_anchors = job_anchors(near_trained, near_data, num_anchors)
        near_shipped = select_shipped(near_trained, near_data, near_anchors, serving["calibration"], serving["tpr"],
                                      log)
        s, _, i, _ = score_models(near_trained, near_data, near_ood, num_anchors, positive, log, near_shipped,
                                  near_anchors)
        _merge(scores, s)  # raw values stay out of the plots: they have another ID set
        info.update({f"{n}@{near_data.name}": m for n, m in i.items()})
        ood_names += list(near_ood)
    if near:
        clock.lap("near_ood")
    results = _results(data, ood_names, positive, trained, num_anchors, info, scores, report)
    results["shipped"] = next((shipped_summary(d, n) for n, d in shipped.items()), None)
    clock.record(results)
    if ood_names:
        write_report(out, results, values, plots=report["plots"])
    else:
        write_json(out / "report.json", results)
    clock.lap("report")
    log("time per phase: " + ", ".join(f"{k} {v:.0f} s" for k, v in clock.timings.items()))
    results["out"] = str(folder.commit())
    return results


def _save_and_export(trained, anchors, id_val, out, info, export, tpr, calibration, tflite, shipped=None):
    """Saves every model as `<name>.keras`; exports the first anchored one (serving/, model.tflite) with
    its shipped detector (`shipped[name]`, saved as `detector.json` / `detector.npz`), else AMP alone. An
    export left in `out` by the run that a --resume continues is replaced."""
    from amp_tf.serve.export import export_for_serving, export_tflite
    from amp_tf.method.predictor import AnchoredPredictor

    exported, shipped = not export, shipped or {}
    for earlier in (out / "serving", out / "model.tflite"):  # a resumed run killed after its export: replaced
        if earlier.is_dir() and not earlier.is_symlink():   # (the work folder is this run's alone)
            shutil.rmtree(earlier)
        elif earlier.exists() or earlier.is_symlink():
            earlier.unlink()
    for name, (model, cfg, _) in trained.items():
        model.save(out / f"{name}.keras")
        if name in shipped:
            shipped[name].save(out)
        if cfg.anchored and not exported:
            exported = True
            if name in shipped:
                head = export_for_serving(shipped[name], out / "serving")
            else:
                pred = AnchoredPredictor.from_model(model, anchors, calibration=calibration)
                head = export_for_serving(pred, out / "serving", id_images=id_val, tpr=tpr)
            if tflite:
                export_tflite(head, out / "model.tflite")  # the same model for LiteRT (builtin ops, batch 1)
            info[name]["serving_threshold_on"] = f"{len(id_val)} ID validation images (tpr {tpr})"
            info[name]["serving_threshold"] = float(head.threshold.numpy())
            info[name]["serving_detector"] = head.detector["label"]


def _results(data, ood_names, positive, trained, num_anchors, info, scores, report):
    return {
        "title": report["title"] or f"{data.name} (ID) vs " + (", ".join(ood_names) or "no OOD set"),
        "id_set": data.name, "ood_sets": ood_names, "positive": positive,
        "data": {**data.sizes(), "mean": [float(v) for v in np.asarray(data.mean)],
                 "std": [float(v) for v in np.asarray(data.std)],
                 "serving_threshold": next((m["serving_threshold"] for m in info.values() if "serving_threshold" in m),
                                           None)},
        "config": {"train": {n: c.to_dict() for n, (_, c, _) in trained.items()}, "num_anchors": int(num_anchors)},
        "models": info, "scores": scores,
        **(report["extra"] or {}),
    }
