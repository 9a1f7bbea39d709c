"""A command's run: its folder (`--out` checked at once, `run_folder`, the backups),
the data sources and versions it records, and `run_and_report` (the job, timed, then the report).
Every name still imports from `amp_tf.cli.common`."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from pathlib import Path


def backup_arg(args, model_name):
    """`train(backup=...)` from --no-backup / --backup-dir: False, True, or this model's folder."""
    if args.no_backup:
        return False
    if getattr(args, "backup_dir", None):
        return str(Path(args.backup_dir) / model_name)
    return True


#: Flags that may differ between a run and its --resume (they change no result).
RUNTIME_FLAGS = ("out", "resume", "overwrite", "verbose", "dry_run", "no_backup", "backup_dir", "download",
                 "data_dir")


def _run_config(args):
    return {k: v for k, v in sorted(vars(args).items()) if k not in RUNTIME_FLAGS}


def check_out(args):
    """Refuses --out / --resume / --overwrite that would mix runs (a live run's folder among them), or a
    place that cannot be written, before TensorFlow is imported and any data loaded. Writes nothing."""
    from amp_tf.run.runfolder import check_run_folder, check_writable  # pure Python

    if args.out:
        check_run_folder(Path(args.out), _run_config(args), resume=getattr(args, "resume", False),
                         overwrite=getattr(args, "overwrite", False))
    else:
        check_writable(Path("runs"), "the default run folder under runs/")
    if getattr(args, "backup_dir", None) and not getattr(args, "no_backup", False):
        from amp_tf.run.backupdir import check_backup_dir  # pure Python

        check_writable(Path(args.backup_dir), f"--backup-dir {args.backup_dir}")
        check_backup_dir(args.backup_dir, args.out or None, resume=getattr(args, "resume", False))


def run_folder(args, name, log=print, data=()):
    """The `amp_tf.run.pipeline.RunFolder` of --out / --resume / --overwrite (default: runs/<name>-<time>);
    its job.json records where each split of `data` (`IDData`s) was read (`data_sources`). A --backup-dir
    becomes this run's (`amp_tf.run.backupdir.claim_backup_dir`: a replaced run's backup is removed)."""
    from amp_tf.run.pipeline import RunFolder

    out = Path(args.out) if args.out else Path("runs") / f"{name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    folder = RunFolder(out, _run_config(args), resume=getattr(args, "resume", False),
                       overwrite=getattr(args, "overwrite", False), log=log,
                       record={"data_sources": data_sources(*data)} if data else None)
    if getattr(args, "backup_dir", None) and not args.no_backup:  # the backup folder is this run's alone
        from amp_tf.run.backupdir import claim_backup_dir

        try:
            claim_backup_dir(args.backup_dir, out, resume=folder.state == "interrupted")
        except BaseException:
            folder.discard()
            raise
    return folder


def data_sources(*datasets):
    """``{"<set>/<split>": path}``: where each split of the ID data (`IDData.sources`) was read.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> data_sources(NS(name="fashion_mnist", sources={"train": "/d/train-images-idx3-ubyte.gz"}))
        {'fashion_mnist/train': '/d/train-images-idx3-ubyte.gz', 'fashion_mnist/val': '/d/train-images-idx3-ubyte.gz'}
    """
    out = {}
    for d in datasets:
        for split, source in (getattr(d, "sources", None) or {}).items():
            out[f"{d.name}/{split}"] = source or "not told by its loader"
            if split == "train":  # the validation images are held out of the training split
                out[f"{d.name}/val"] = out[f"{d.name}/train"]
    return out


def init_from_info(path):
    """`(class name, input shape or None, classes or None)` of the --init-from `.keras` file, read from
    its config.json without Keras; refuses what cannot be fine-tuned (checked before any work).

    Raises:
        ValueError: not a file, not a `.keras` archive, an anchored model, a model with more than one
            output, or one that ends in softmax / sigmoid.
    """
    import json
    import zipfile

    from amp_tf.run.files import check_keras_file  # no TensorFlow: names a missing, truncated or foreign file

    p = Path(path)
    fix = "pass a vanilla Keras model saved with model.save('name.keras') (e.g. vanilla.keras of a run)"
    if not p.is_file():
        raise ValueError(f"--init-from {path}: no such file; {fix}.")
    check_keras_file(p, "--init-from")
    try:
        with zipfile.ZipFile(p) as z:
            config = json.loads(z.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        raise ValueError(f"--init-from {path} is not a Keras model file (not a .keras archive with a "
                         f"config.json); {fix}.") from None
    name = str(config.get("class_name", ""))
    if name == "AnchoredModel" or str(config.get("registered_name", "")).endswith(">AnchoredModel"):
        raise ValueError(f"--init-from {path} is an anchored model (AnchoredModel): fine-tuning starts from "
                         f"a vanilla model, which becomes the anchored one; {fix}. To continue training "
                         "an anchored run, use --resume on its --out.")
    from amp_tf.contract import check_logits_config, check_outputs, outputs_in_config

    outputs = outputs_in_config(config)
    check_outputs(outputs, f"--init-from {path}")  # one output (of logits) ...
    check_logits_config(config, f"--init-from {path}")  # ... logits only: a softmax / sigmoid head is refused
    shape = None
    for layer in (config.get("config") or {}).get("layers") or ():
        if layer.get("class_name") == "InputLayer":
            shape = tuple((layer.get("config") or {}).get("batch_shape") or ())[1:] or None
            break
    return name, shape, (outputs[0][1] if outputs else None)


def versions():
    import keras
    import numpy as np
    import tensorflow as tf

    from amp_tf._version import __version__

    return {"amp_tf": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}


#: What a job's time (`report.json`'s `wall_time_s`, the report's footer, the console) counts.
JOB_TIME_INCLUDES = "training, detector selection, scoring, saving and export; not data loading or the report"


def run_and_report(args, job, data, ood, folder, log, t0, models=None, extra=None, **run_kw):
    """Every trainer's last step: `pipeline.run_job` of the `JobConfig` (its models: `models`, default
    `job_models(job)`), the report's summary printed, and one "done in" line (wall time, process CPU
    time, the hypervisor's share).

    `extra` adds to what the report records besides the seed, the versions and the flags;
    `run_kw` go to `run_job` (e.g. `near=`, `title=`, `tflite=`).
    """
    from amp_tf.run.pipeline import run_job
    from amp_tf.run.report import render

    record = {**(extra or {}), "seed": args.seed, "versions": versions(), "args": vars(args)}
    results = run_job(job, data, ood, folder, models=models, plots=not args.no_plots, verbose=args.verbose,
                      backup=lambda n: backup_arg(args, n), log=log, extra=record, **run_kw)
    if not results.get("chief", True):
        return results
    if ood:
        print(render(results, "md").split("## Per OOD set")[0])
    steal = results.get("steal_share")
    log(f"done: job time {results['wall_time_s']:.0f} s ({JOB_TIME_INCLUDES}; report.json and the footer give the "
        f"same figure); the whole process took {time.time() - t0:.0f} s with data loading and plots (CPU time "
        f"{time.process_time():.0f} s" + (f"; the hypervisor took {100 * steal:.0f} % of the machine's CPU"
                                         if steal is not None else "") + f"); report: {results['out']}/report.md")
    return results
