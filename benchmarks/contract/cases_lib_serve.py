"""Library cases, group ``serve``: load_run on damaged run folders, export_for_serving, export_tflite and
TFLiteModel (LiteRT)."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np

from benchmarks.contract import libkit as K
from benchmarks.contract.spec import lib

L = "amp_tf.run.files.load_run"


def _copy(ctx, name, mutate):
    dst = Path(ctx["ws"]) / "serve" / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(ctx["run"], dst)
    mutate(dst)
    return dst


def _load(path):
    from amp_tf.run.files import load_run

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        run = load_run(path)
    return run, [str(x.message) for x in w]


@lib("serve", L, "a folder that does not exist", names=("no-such-run",))
def run_missing(ctx):
    return _load(Path(ctx["ws"]) / "no-such-run")


@lib("serve", L, "the path of anchored.keras instead of the run folder", names=("anchored.keras",))
def run_file(ctx):
    return _load(Path(ctx["run"]) / "anchored.keras")


@lib("serve", L, "a copy without job.json", names=("job.json",))
def run_no_job(ctx):
    return _load(_copy(ctx, "nojob", lambda p: (p / "job.json").unlink()))


@lib("serve", L, "a run whose job.json is garbage", names=("job.json",))
def run_bad_job(ctx):
    return _load(_copy(ctx, "badjob", lambda p: (p / "job.json").write_text("{garbage")))


@lib("serve", L, "a run without serving/", names=("serving",))
def run_no_serving(ctx):
    return _load(_copy(ctx, "noserv", lambda p: shutil.rmtree(p / "serving")))


@lib("serve", L, "a run whose anchored.keras is truncated", names=("anchored.keras",))
def run_truncated(ctx):
    def cut(p):
        data = (p / "anchored.keras").read_bytes()
        (p / "anchored.keras").write_bytes(data[: len(data) // 2])
    return _load(_copy(ctx, "trunc", cut))


@lib("serve", L, "a run without vanilla.keras", expect="ok")
def run_no_vanilla(ctx):
    run, _ = _load(_copy(ctx, "novan", lambda p: (p / "vanilla.keras").unlink()))
    return K.ok(run.vanilla is None and run.anchored is not None, "loads; vanilla is None")


@lib("serve", L, "a run whose detector.npz was deleted (detector.json kept)", names=("detector",))
def run_no_npz(ctx):
    run, w = _load(_copy(ctx, "nonpz", lambda p: (p / "detector.npz").unlink()))
    if w and run.detector is None:
        return K.ok(True, "loaded with a warning: " + w[0][:200])
    return f"loaded silently (detector: {run.detector_label}, warnings: {w[:1]})"


@lib("serve", L, "a run whose detector.json is truncated", names=("detector.json",))
def run_bad_detjson(ctx):
    def cut(p):
        t = (p / "detector.json").read_text()
        (p / "detector.json").write_text(t[: len(t) // 2])
    return _load(_copy(ctx, "baddet", cut))


@lib("serve", "RunModels.predict", "`x / 255`", names=("x / 255",))
def run_predict_x255(ctx):
    return K.run(ctx["run"]).predict(K.images()[0][:16] / 255.0)


@lib("serve", "RunModels.predict", "(N, 28, 28) uint8 images", names=("shape|(n, h, w, c)|channel",))
def run_predict_rank3(ctx):
    return K.run(ctx["run"]).predict(K.images()[0][:16, ..., 0])


# --- export_for_serving / export_tflite --------------------------------------------------------------------
X = "export_for_serving"


def _export(ctx, name, **kw):
    from amp_tf import export_for_serving

    path = kw.pop("path", Path(ctx["ws"]) / "serve" / f"exp-{name}")
    return export_for_serving(kw.pop("predictor", K.predictor(ctx)), path, **kw)


@lib("serve", X, "threshold=inf", names=("threshold",))
def exp_thr_inf(ctx):
    return _export(ctx, "inf", threshold=float("inf"))


@lib("serve", X, "tpr=0", names=("tpr",))
def exp_tpr0(ctx):
    return _export(ctx, "tpr0", id_images=K.images()[0][:64], tpr=0.0)


@lib("serve", X, "tpr=-0.5", names=("tpr",))
def exp_tpr_neg(ctx):
    return _export(ctx, "tprn", id_images=K.images()[0][:64], tpr=-0.5)


@lib("serve", X, "a path that is an existing file", names=("notes.txt",))
def exp_path_file(ctx):
    return _export(ctx, "f", path=ctx["img_notes"], threshold=0.5)


@lib("serve", X, "an AnchoredModel instead of a predictor", names=("predictor|AnchoredPredictor",))
def exp_model(ctx):
    return _export(ctx, "model", predictor=K.run(ctx["run"]).anchored, threshold=0.5)


@lib("serve", X, "ID images with a NaN", names=("nan",))
def exp_nan(ctx):
    x = K.images()[0][:64].astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    return _export(ctx, "nan", id_images=x)


@lib("serve", X, "neither id_images nor threshold", names=("id_images", "threshold"))
def exp_neither(ctx):
    return _export(ctx, "neither")


@lib("serve", X, "batch_size=0 (with id_images)", names=("batch_size",))
def exp_batch0(ctx):
    return _export(ctx, "b0", id_images=K.images()[0][:64], batch_size=0)


@lib("serve", X, "threshold='0.5' (text)", expect="either", names=("threshold",))
def exp_thr_text(ctx):
    _export(ctx, "thrtext", threshold="0.5")
    return K.ok(True, "exported with the threshold read as a number")


@lib("serve", X, "a path in a folder that does not exist yet", expect="ok")
def exp_new_parent(ctx):
    p = Path(ctx["ws"]) / "serve" / "new" / "deep" / "serving"
    _export(ctx, "deep", path=p, threshold=0.5)
    return K.ok((p / "saved_model.pb").is_file(), f"exported to {p}")


TF = "export_tflite"


def _tflite(ctx, name, **kw):
    from amp_tf.serve.litert import export_tflite

    return export_tflite(K.predictor(ctx), kw.pop("path", Path(ctx["ws"]) / "serve" / f"{name}.tflite"), **kw)


@lib("serve", TF, "batch_size=0", names=("batch_size",))
def tfl_batch0(ctx):
    return _tflite(ctx, "b0", threshold=0.5, batch_size=0)


@lib("serve", TF, "a path in a folder that is a file", names=("notes.txt",))
def tfl_under_file(ctx):
    return _tflite(ctx, "uf", path=Path(ctx["img_notes"]) / "m.tflite", threshold=0.5)


@lib("serve", TF, "tpr=1.5", names=("tpr",))
def tfl_tpr(ctx):
    return _tflite(ctx, "tpr", id_images=K.images()[0][:64], tpr=1.5)


M = "TFLiteModel"


def _tfl(path, **kw):
    from amp_tf.serve.litert import TFLiteModel

    return TFLiteModel(path, **kw)


def _bad_file(ctx, name, data):
    p = Path(ctx["ws"]) / "serve" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


@lib("serve", M, "a path that does not exist", names=("nope.tflite",))
def tfl_missing(ctx):
    return _tfl(Path(ctx["ws"]) / "nope.tflite")


@lib("serve", M, "a text file named .tflite", names=("text.tflite",))
def tfl_text(ctx):
    return _tfl(_bad_file(ctx, "text.tflite", b"hello, not a model\n" * 10))


@lib("serve", M, "an empty file", names=("empty.tflite",))
def tfl_empty(ctx):
    return _tfl(_bad_file(ctx, "empty.tflite", b""))


@lib("serve", M, "a truncated .tflite (half of the file)", names=("half.tflite",))
def tfl_truncated(ctx):
    data = (Path(ctx["run"]) / "model.tflite").read_bytes()
    return _tfl(_bad_file(ctx, "half.tflite", data[: len(data) // 2]))


@lib("serve", M, "the run's anchored.keras", names=("anchored.keras",))
def tfl_keras(ctx):
    return _tfl(Path(ctx["run"]) / "anchored.keras")


@lib("serve", M, "the serving/ folder", names=("serving",))
def tfl_dir(ctx):
    return _tfl(Path(ctx["run"]) / "serving")


@lib("serve", M, "num_threads=-3", names=("num_threads",))
def tfl_threads(ctx):
    return _tfl(Path(ctx["run"]) / "model.tflite", num_threads=-3)


def _call(ctx, x):
    return _tfl(Path(ctx["run"]) / "model.tflite")(x)


@lib("serve", M + ".__call__", "an empty batch", names=("empty|n >= 1",))
def tfl_call_empty(ctx):
    return _call(ctx, np.zeros((0, 28, 28, 1), np.uint8))


@lib("serve", M + ".__call__", "int32 pixels", names=("uint8|dtype",))
def tfl_call_int32(ctx):
    return _call(ctx, K.images()[0][:4].astype(np.int32))


@lib("serve", M + ".__call__", "RGB images for a grayscale model", names=("28, 28, 1|channels",))
def tfl_call_rgb(ctx):
    return _call(ctx, np.zeros((2, 28, 28, 3), np.uint8))


@lib("serve", M + ".__call__", "a Python list of images", expect="either", names=("images",))
def tfl_call_list(ctx):
    out = _call(ctx, list(K.images()[0][:3]))
    return K.ok(len(out["is_ood"]) == 3, "3 answers")


@lib("serve", M + ".__call__", "the same images as the run's predict: same verdicts", expect="ok")
def tfl_matches_run(ctx):
    x = K.images()[0][:32]
    a, b = _call(ctx, x), K.run(ctx["run"]).predict(x)
    same = np.array_equal(np.asarray(a["is_ood"]).ravel(), np.asarray(b["is_ood"]).ravel()) and np.array_equal(
        np.asarray(a["predicted_class"]).ravel(), np.asarray(b["predicted_class"]).ravel())
    return K.ok(same and K.same(np.ravel(a["ood_score"]), np.ravel(b["ood_score"]), 1e-3),
                "LiteRT equals load_run(...).predict")
