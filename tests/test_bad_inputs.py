"""The bad-input table: every careless input a new user tried, and what they get now.

Each case runs here and asserts its clear error (or the correct answer); the
table in docs/bad_inputs.md is generated from these cases and checked against
the file, so it cannot drift from the code. Regenerate it with

    AMP_TF_WRITE_DOCS=1 .venv/bin/python -m pytest -q tests/test_bad_inputs.py
"""
import math
import os
import sys
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from amp_tf import data
from amp_tf.method import scores
from amp_tf.method.anchoring import AnchoredModel
from amp_tf.run.callbacks import OODMetricsCallback
from amp_tf.cli import fmnist, ood
from amp_tf.serve.export import export_for_serving
from amp_tf.models import build_backbone
from amp_tf.run.pipeline import RunFolder
from amp_tf.method.predictor import AnchoredPredictor, select_anchors
from tests.helpers import run_cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
CASES = []


def case(where, what):
    """Registers a case: `fn(ctx)` raises the expected error (checked by `expect`) or returns the answer."""
    def deco(fn):
        CASES.append((where, what, fn))
        return fn
    return deco


def expect(kind, pattern, fn, *args, **kwargs):
    with pytest.raises(kind, match=pattern) as info:
        fn(*args, **kwargs)
    return f"{info.type.__name__}: {_first_line(info.value)}"


def _first_line(err):
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if isinstance(err, tf.errors.OpError):  # the in-graph assertion's own line, not TF's frame dump
        ours = [ln for ln in lines if re.search(r"\bimages: |expected images", ln)]
        lines = ours or lines
    line = re.sub(r"\x1b\[[0-9;]*m", "", lines[0] if lines else "")
    line = line.split("Summarized data: b'")[-1].split("assertion failed: [")[-1]
    line = re.sub(r"/tmp/\S+", "<path>", line)
    return line if len(line) <= 230 else line[:227] + "..."


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    x, y = data.to_numpy(data.load("fashion_mnist", "test"), limit=256)
    mean, std = data.channel_stats(x)
    model = AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=4), mean=mean, std=std)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model(x[:2])
    vanilla = build_backbone("resnet_small", (28, 28, 1), 10, anchored=False, width=4, mean=mean, std=std)
    pred = AnchoredPredictor.from_model(model, select_anchors(x, 5))
    root = tmp_path_factory.mktemp("bad")
    export_for_serving(pred, root / "serving", id_images=x[:64])
    model.save(root / "anchored.keras")
    served = tf.saved_model.load(str(root / "serving"))
    return dict(x=x, y=y, mean=mean, std=std, model=model, vanilla=vanilla, pred=pred, root=root,
                served=served, fn=served.signatures["serving_default"])


# ------------------------------------------------------------------ predictor / AMP
@case("AnchoredPredictor.predict", "`x / 255` (floats in [0, 1])")
def _(c):
    return expect(ValueError, r"x / 255", c["pred"].predict, c["x"] / 255.0)


@case("AnchoredPredictor.predict", "already normalised `(x - mean) / std`")
def _(c):
    return expect(ValueError, "already normalised", c["pred"].predict, (c["x"] - c["mean"]) / c["std"])


@case("AnchoredPredictor.predict", "raw 0..255 floats (the old TypeError's natural fix)")
def _(c):
    a, b = c["pred"].predict(c["x"][:16].astype("float32")), c["pred"].predict(c["x"][:16])
    np.testing.assert_allclose(a["amp_score"], b["amp_score"], rtol=1e-5)
    return "the correct answer: identical to uint8 input"


@case("AnchoredPredictor.predict", "uint8 images as loaded")
def _(c):
    out = c["pred"].predict(c["x"][:16])
    assert out["amp_score"].shape == (16,) and np.all(np.isfinite(out["amp_score"]))
    return "the correct answer (raw pixels are the convention)"


@case("AnchoredPredictor.predict", "pixels above 255 (e.g. x * 2)")
def _(c):
    return expect(ValueError, "above 255", c["pred"].predict, c["x"].astype("float32") * 2)


@case("AnchoredPredictor.predict", "an image with NaN")
def _(c):
    bad = c["x"][:8].astype("float32")
    bad[3, 0, 0, 0] = np.nan
    return expect(ValueError, "first at index 3", c["pred"].predict, bad)


@case("AnchoredPredictor.predict", "32x32 images for a 28x28 model")
def _(c):
    return expect(ValueError, r"expected \(batch, 28, 28, 1\)", c["pred"].predict,
                  np.zeros((2, 32, 32, 1), np.uint8))


@case("AnchoredPredictor.predict", "one image without a batch axis (rank 3)")
def _(c):
    return expect(ValueError, "expected \\(N, H, W, C\\)", c["pred"].predict, c["x"][0])


@case("AnchoredPredictor.predict", "an empty array")
def _(c):
    return expect(ValueError, "empty", c["pred"].predict, np.zeros((0, 28, 28, 1), np.uint8))


@case("AnchoredPredictor", "anchors picked from `x / 255`")
def _(c):
    return expect(ValueError, r"anchors: .*x / 255", AnchoredPredictor.from_model, c["model"], c["x"][:5] / 255.0)


@case("AnchoredPredictor", "a single anchor (K = 1)")
def _(c):
    return expect(ValueError, "K >= 2", AnchoredPredictor.from_model, c["model"], c["x"][:1])


@case("AnchoredPredictor", "calibration='exponential' (a typo)")
def _(c):
    return expect(ValueError, "calibration", AnchoredPredictor.from_model, c["model"], c["x"][:5],
                  calibration="exponential")


@case("AnchoredPredictor", "max_batch=0")
def _(c):
    return expect(ValueError, "max_batch", AnchoredPredictor.from_model, c["model"], c["x"][:5], max_batch=0)


@case("AnchoredPredictor.from_model", "a vanilla model instead of an AnchoredModel")
def _(c):
    return expect(TypeError, "AnchoredModel", AnchoredPredictor.from_model, c["vanilla"], c["x"][:5])


@case("select_anchors", "k = 1")
def _(c):
    return expect(ValueError, "K >= 2 anchors", select_anchors, c["x"], 1)


@case("select_anchors", "more anchors than images")
def _(c):
    return expect(ValueError, "asked for 300 anchors", select_anchors, c["x"], 300)


@case("select_anchors", "already-normalised training images")
def _(c):
    return expect(ValueError, "already normalised", select_anchors, (c["x"] - c["mean"]) / c["std"], 5)


# ------------------------------------------------------------------ training
@case("AnchoredModel.fit", "already-normalised images")
def _(c):
    return expect(ValueError, "already normalised", c["model"].fit, (c["x"] - c["mean"]) / c["std"], c["y"],
                  epochs=1, verbose=0)


@case("AnchoredModel.fit", "`x / 255`")
def _(c):
    return expect(ValueError, r"x / 255", c["model"].fit, c["x"] / 255.0, c["y"], epochs=1, verbose=0)


@case("AnchoredModel.fit", "images with NaN pixels")
def _(c):
    bad = c["x"].astype("float32")
    bad[5, 1, 1, 0] = np.nan
    return expect(ValueError, "NaN or Inf", c["model"].fit, bad, c["y"], epochs=1, verbose=0)


@case("AnchoredModel.fit", "float labels such as 3.7")
def _(c):
    return expect(ValueError, "whole-number class ids", c["model"].fit, c["x"], c["y"] + 0.7, epochs=1,
                  verbose=0)


@case("AnchoredModel.fit", "labels >= num_classes")
def _(c):
    return expect(ValueError, r"class ids in \[0, 10\)", c["model"].fit, c["x"], c["y"] + 10, epochs=1,
                  verbose=0)


@case("AnchoredModel", "a backbone over an odd channel count")
def _(c):
    return expect(ValueError, "even channel count",
                  AnchoredModel, build_backbone("resnet_small", (28, 28, 1), 10, anchored=False, width=4))


@case("AnchoredModel", "consistency='blurr' (a typo)")
def _(c):
    return expect(ValueError, "unknown transform", AnchoredModel,
                  build_backbone("resnet_small", (28, 28, 1), 10, width=4), consistency="blurr")


@case("AnchoredModel", "consistency_every=-1")
def _(c):
    return expect(ValueError, "consistency_every", AnchoredModel,
                  build_backbone("resnet_small", (28, 28, 1), 10, width=4), consistency_every=-1)


@case("AnchoredModel", "mean/std of `x / 255` (in [0, 1] units)")
def _(c):
    return expect(ValueError, "pixel units", AnchoredModel, build_backbone("resnet_small", (28, 28, 1), 10, width=4),
                  mean=c["mean"] / 255, std=c["std"] / 255)


@case("AnchoredModel", "std = 0")
def _(c):
    return expect(ValueError, "std", AnchoredModel, build_backbone("resnet_small", (28, 28, 1), 10, width=4),
                  mean=[72.9], std=[0.0])


@case("vanilla model (build_backbone)", "called on `x / 255`")
def _(c):
    return expect(tf.errors.InvalidArgumentError, r"x / 255", c["vanilla"], c["x"][:8] / 255.0)


@case("vanilla model (build_backbone)", "called on normalised images")
def _(c):
    return expect(tf.errors.InvalidArgumentError, "already normalised", c["vanilla"],
                  (c["x"][:8] - c["mean"]) / c["std"])


# ------------------------------------------------------------------ export / serving
@case("export_for_serving", "threshold=nan")
def _(c):
    return expect(ValueError, "finite", export_for_serving, c["pred"], c["root"] / "s1", threshold=math.nan)


@case("export_for_serving", "tpr=1.0")
def _(c):
    return expect(ValueError, r"tpr", export_for_serving, c["pred"], c["root"] / "s2", id_images=c["x"], tpr=1.0)


@case("export_for_serving", "both id_images and threshold")
def _(c):
    return expect(ValueError, "exactly one", export_for_serving, c["pred"], c["root"] / "s3", id_images=c["x"],
                  threshold=1.0)


@case("export_for_serving", "ID images as `x / 255` (the threshold would inherit the mistake)")
def _(c):
    return expect(ValueError, r"id_images: .*x / 255", export_for_serving, c["pred"], c["root"] / "s4",
                  id_images=c["x"] / 255.0)


@case("SavedModel (serving_default)", "a 32x32 batch for a 28x28 model")
def _(c):
    return expect(tf.errors.InvalidArgumentError, r"expected images of shape \(N, 28, 28, 1\)", c["fn"],
                  images=tf.zeros([2, 32, 32, 1], tf.uint8))


@case("SavedModel (serving_default)", "RGB images for a grayscale model")
def _(c):
    return expect(tf.errors.InvalidArgumentError, r"expected images of shape \(N, 28, 28, 1\)", c["fn"],
                  images=tf.zeros([2, 28, 28, 3], tf.uint8))


@case("SavedModel (serving_default)", "an empty batch")
def _(c):
    return expect(tf.errors.InvalidArgumentError, "empty batch", c["fn"], images=tf.zeros([0, 28, 28, 1], tf.uint8))


@case("SavedModel (serving_default)", "uint8 images as loaded")
def _(c):
    got = c["fn"](images=tf.constant(c["x"][:8]))["amp_score"].numpy()
    np.testing.assert_allclose(got, c["pred"].predict(c["x"][:8])["amp_score"], rtol=1e-5)
    return "the correct answer: equals the in-process predictor"


# ------------------------------------------------------------------ callback / scores
@case("OODMetricsCallback", "normalised validation images (checked at construction)")
def _(c):
    return expect(ValueError, "already normalised", OODMetricsCallback, (c["x"] - c["mean"]) / c["std"],
                  {"blur": c["x"]})


@case("OODMetricsCallback", "an OOD set of another size")
def _(c):
    return expect(ValueError, "differ", OODMetricsCallback, c["x"], {"big": np.zeros((4, 32, 32, 1), np.uint8)})


@case("OODMetricsCallback", "num_anchors=1")
def _(c):
    return expect(ValueError, "K >= 2", OODMetricsCallback, c["x"], {"blur": c["x"]}, num_anchors=1)


@case("scores.get", "'mahalanobis' before `import amp_tf.detection.baselines`")
def _(c):
    assert hasattr(scores.get("mahalanobis"), "fit")  # `import amp_tf` imported and registered them
    entry = scores.REGISTRY.pop("mahalanobis")  # as if amp_tf.detection.baselines had not been imported
    try:
        return expect(ValueError, r"import amp_tf\.detection\.baselines", scores.get, "mahalanobis")
    finally:
        scores.REGISTRY["mahalanobis"] = entry


@case("scores.get", "an unknown score name")
def _(c):
    return expect(ValueError, "known scores", scores.get, "maha")


@case("data.load", "an unknown set name")
def _(c):
    return expect(ValueError, "unknown data set name", data.load, "fashion-mnist", "test")


# ------------------------------------------------------------------ CLIs and run folders
def _cli(main, argv):
    """Runs a CLI in-process and returns its stderr-style message (it must exit with code 2)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_cli(main, argv)
    assert code == 2, err.getvalue()
    return err.getvalue().strip().splitlines()[-1]


def _fmnist_error(c, *flags):
    line = _cli(fmnist.main, ["--out", c["root"] / "never", *flags])
    assert not (c["root"] / "never").exists()  # refused before anything is written
    return _path(line)


@case("trainers.fmnist", "--epochs 0 (would export an untrained model)")
def _(c):
    return _fmnist_error(c, "--epochs", "0")


@case("trainers.fmnist", "--lr nan")
def _(c):
    return _fmnist_error(c, "--lr", "nan")


@case("trainers.fmnist", "--num-anchors 1")
def _(c):
    return _fmnist_error(c, "--num-anchors", "1")


@case("trainers.fmnist", "--train-limit 0")
def _(c):
    return _fmnist_error(c, "--train-limit", "0")


@case("trainers.fmnist", "--batch-size 0")
def _(c):
    return _fmnist_error(c, "--batch-size", "0")


@case("trainers.fmnist", "--arch resnet19")
def _(c):
    return _fmnist_error(c, "--arch", "resnet19")


@case("trainers.fmnist", "--consistency blurr")
def _(c):
    return _fmnist_error(c, "--consistency", "blurr")


@case("trainers.fmnist", "--resume --overwrite")
def _(c):
    return _fmnist_error(c, "--resume", "--overwrite")


@case("trainers.* --out", "a folder holding an earlier run, no --resume/--overwrite")
def _(c):
    out = c["root"] / "done"
    RunFolder(out, {"seed": 0}, log=lambda m: None).commit()
    return expect(ValueError, "holds an earlier run", RunFolder, out, {"seed": 1})


@case("trainers.* --out", "--resume of a killed run with another --seed")
def _(c):
    out = c["root"] / "killed"
    RunFolder(out, {"seed": 0}, log=lambda m: None)  # never committed: a killed run
    return expect(ValueError, r"differ .*\['seed'\]", RunFolder, out, {"seed": 1}, resume=True)


@case("eval.ood --out", "a training run's folder")
def _(c):
    run_like = c["root"] / "trained"
    run_like.mkdir()
    (run_like / "job.json").write_text("{}")
    line = _cli(ood.main, ["--model", c["root"] / "anchored.keras", "--id", "fashion_mnist", "--ood", "digits",
                           "--out", run_like, "--verbose", "0"])
    assert "training run's folder" in line
    return re.sub(r"/tmp/\S+", "<path>", line)


@case("eval.ood", "--model pointing at the serving/ folder")
def _(c):
    line = _cli(ood.main, ["--model", c["root"] / "serving", "--id", "fashion_mnist", "--ood", "digits",
                           "--out", c["root"] / "e2", "--verbose", "0"])
    assert "is a folder" in line
    return re.sub(r"/tmp/\S+", "<path>", line)


# ------------------------------------------------------------------ cases: your own Keras model (anchor_backbone, keras.applications)
# (add this area's cases directly below this line)
def _own(*layers, shape=(8, 8, 3)):
    import keras

    return keras.Sequential([keras.Input(shape), *layers], name="own")


@case("anchor_backbone / anchored_model", "a model whose first weighted layer is a Dense on the raw image")
def _(c):
    import keras
    from amp_tf.method.anchoring import anchored_model

    m = _own(keras.layers.Dense(4, name="pixel_mlp"), keras.layers.Flatten(), keras.layers.Dense(2))
    return expect(ValueError, r"'pixel_mlp' \(Dense\).*Conv2D\(units, 1\)", anchored_model, m)


@case("anchor_backbone / anchored_model", "a subclassed keras.Model")
def _(c):
    import keras
    from amp_tf.models import anchor_backbone

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 3), "float32"))
    return expect(ValueError, r"subclassed model \(Net 'net'\).*functional API", anchor_backbone, net)


@case("anchor_backbone / anchored_model", "a model with two inputs (image + metadata)")
def _(c):
    import keras
    from amp_tf.models import anchor_backbone

    img, meta = keras.Input((8, 8, 3), name="image"), keras.Input((2,), name="meta")
    z = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(img))
    m = keras.Model([img, meta], keras.layers.Dense(2)(keras.layers.Concatenate()([z, meta])), name="two_inputs")
    return expect(ValueError, r"has 2 inputs \['image', 'meta'\]; anchoring needs a single image input",
                  anchor_backbone, m)


@case("anchor_backbone / anchored_model", "a DepthwiseConv2D first (no Conv2D stem)")
def _(c):
    import keras
    from amp_tf.method.anchoring import anchored_model

    m = _own(keras.layers.DepthwiseConv2D(3, name="dw"), keras.layers.Conv2D(4, 1))
    return expect(ValueError, r"'dw' \(DepthwiseConv2D\).*depthwise", anchored_model, m)


@case("anchored_model", "a model whose Normalization expects `x / 255` (statistics in [0, 1])")
def _(c):
    import keras
    from amp_tf.method.anchoring import anchored_model

    m = _own(keras.layers.Normalization(mean=0.45, variance=0.05, name="norm01"), keras.layers.Conv2D(4, 3))
    return expect(ValueError, r"expects images in \[0, 1\].*pass mean=0, std=255", anchored_model, m)


@case("anchored_model", "ZeroPadding2D before a Rescaling with an offset")
def _(c):
    import keras
    from amp_tf.method.anchoring import anchored_model

    m = _own(keras.layers.ZeroPadding2D(1), keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale"),
             keras.layers.Conv2D(4, 3))
    return expect(ValueError, r"'rescale' \(Rescaling\) adds an offset after zero padding", anchored_model, m)


@case("anchored_model", "mean without std")
def _(c):
    import keras
    from amp_tf.method.anchoring import anchored_model

    return expect(ValueError, r"mean/std: pass both", anchored_model, _own(keras.layers.Conv2D(4, 3)), mean=100.0)


@case("finetune_anchored", "epochs=0")
def _(c):
    from amp_tf.run.training import finetune_anchored

    return expect(ValueError, r"epochs: expected an int >= 1", finetune_anchored, c["vanilla"], c["x"][:32],
                  c["y"][:32], epochs=0)


@case("finetune_anchored", "a keras.applications-style model ending in softmax (probabilities, not logits)")
def _(c):
    import keras
    from amp_tf.run.training import finetune_anchored

    m = _own(keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
             keras.layers.Dense(10, activation="softmax", name="predictions"), shape=(28, 28, 1))
    return expect(ValueError, r"ends in a softmax.*classifier_activation=None", finetune_anchored, m,
                  c["x"][:32], c["y"][:32], epochs=1)



# ------------------------------------------------------------------ cases: export: SavedModel and LiteRT
# (add this area's cases directly below this line)
def _lite(c):
    """The ctx predictor as a .tflite (exported once, from the same ServingHead as the SavedModel)."""
    if "lite" not in c:
        from amp_tf.serve.export import TFLiteModel, export_tflite, serving_head

        head = serving_head(c["pred"], id_images=c["x"][:64])
        export_tflite(head, c["root"] / "model.tflite")
        c["lite"] = TFLiteModel(c["root"] / "model.tflite", num_threads=1)
    return c["lite"]


@case("SavedModel (serving_default)", "one image without a batch axis (rank 3)")
def _(c):
    return expect(tf.errors.InvalidArgumentError, r"got another rank\. One image without its batch axis", c["fn"],
                  images=tf.constant(c["x"][0]))


@case("export_for_serving", "into a folder that is not empty")
def _(c):
    used = c["root"] / "used"
    used.mkdir(exist_ok=True)
    (used / "notes.txt").write_text("mine")
    got = expect(ValueError, "not empty", export_for_serving, c["pred"], used, id_images=c["x"][:64])
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
    return got


@case("export_for_serving", "a serving threshold from one ID image")
def _(c):
    return expect(ValueError, "at least 20", export_for_serving, c["pred"], c["root"] / "s5", id_images=c["x"][:1])


@case("export_for_serving", "a model trained under `mixed_bfloat16`")
def _(c):
    import keras

    from tests.helpers import tiny_backbone

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        pred = AnchoredPredictor(tiny_backbone(h=28, w=28, c=1, n=10), select_anchors(c["x"], 5),
                                 mean=c["mean"], std=c["std"])
        export_for_serving(pred, c["root"] / "mixed", id_images=c["x"][:64])
    finally:
        keras.config.set_dtype_policy(policy)
    out = tf.saved_model.load(str(c["root"] / "mixed")).signatures["serving_default"](images=tf.constant(c["x"][:4]))
    assert out["amp_score"].dtype == tf.float32 and np.all(np.isfinite(out["amp_score"].numpy()))
    return "the correct answer: exported and served in float32 (its weights are float32)"


@case("AnchoredPredictor", "a bare backbone without mean/std")
def _(c):
    return expect(ValueError, r"^mean/std: .*from_model", AnchoredPredictor, c["model"].backbone, c["x"][:5])


@case("export_tflite", "a per-image-anchor predictor (int64 hash: no TFLite builtins)")
def _(c):
    from amp_tf.serve.export import export_tflite

    pool = AnchoredPredictor.from_model(c["model"], select_anchors(c["x"], 12), anchor_mode="per_image",
                                        num_anchors=5)
    return expect(ValueError, "anchor_mode='fixed'", export_tflite, pool, c["root"] / "pool.tflite", threshold=1.0)


@case("export_tflite", "a path that exists")
def _(c):
    from amp_tf.serve.export import export_tflite

    (c["root"] / "taken.tflite").write_bytes(b"mine")
    return expect(ValueError, "existing file", export_tflite, c["pred"], c["root"] / "taken.tflite", threshold=1.0)


@case(".tflite (TFLiteModel)", "float pixels instead of uint8")
def _(c):
    return expect(TypeError, r"got dtype float32", _lite(c), c["x"][:2].astype("float32"))


@case(".tflite (TFLiteModel)", "a 32x32 batch for a 28x28 model")
def _(c):
    return expect(ValueError, r"expected images of shape \(N, 28, 28, 1\).*another size", _lite(c),
                  np.zeros((2, 32, 32, 1), np.uint8))


@case(".tflite (TFLiteModel)", "one image without a batch axis (rank 3)")
def _(c):
    return expect(ValueError, "another rank", _lite(c), c["x"][0])


@case(".tflite (TFLiteModel)", "uint8 images as loaded (any count; the model's batch is 1)")
def _(c):
    got = _lite(c)(c["x"][:8])
    want = c["fn"](images=tf.constant(c["x"][:8]))
    np.testing.assert_allclose(got["amp_score"], want["amp_score"].numpy(), rtol=1e-4)
    np.testing.assert_array_equal(got["is_ood"], want["is_ood"].numpy())
    return "the correct answer: equals the SavedModel (amp_score within 1e-4, same verdicts)"



# ------------------------------------------------------------------ cases: CLI flags and arguments
# (add this area's cases directly below this line)
def _given(c, name):
    """A model file for --init-from (written once per module): the vanilla twin, or an anchored model."""
    path = c["root"] / f"{name}.keras"
    if not path.exists():
        (c["vanilla"] if name == "vanilla" else c["model"]).save(path)
    return path


@case("trainers.fmnist --init-from", "an anchored model (anchored.keras of a run)")
def _(c):
    return _fmnist_error(c, "--init-from", _given(c, "anchored"))


@case("trainers.fmnist --init-from", "a truncated .keras file")
def _(c):
    bad = c["root"] / "truncated.keras"
    bad.write_bytes(_given(c, "vanilla").read_bytes()[:1500])
    return _fmnist_error(c, "--init-from", bad)


@case("trainers.fmnist --init-from", "with --width 8 (the given model's width is fixed)")
def _(c):
    return _fmnist_error(c, "--init-from", _given(c, "vanilla"), "--width", "8")


@case("trainers.fmnist --init-from", "with --epochs 5 (nothing trains from scratch)")
def _(c):
    return _fmnist_error(c, "--init-from", _given(c, "vanilla"), "--epochs", "5")


@case("trainers.fmnist --init-from", "with --near (the near splits need their own models)")
def _(c):
    return _fmnist_error(c, "--init-from", _given(c, "vanilla"), "--near")


@case("trainers.cifar --init-from", "with --vanilla")
def _(c):
    from amp_tf.cli import cifar

    line = _cli(cifar.main, ["--init-from", _given(c, "vanilla"), "--vanilla", "--out", c["root"] / "never"])
    assert not (c["root"] / "never").exists()
    return re.sub(r"/tmp/\S+", "<path>", line)


@case("trainers.cifar", "--width 8 with --arch wrn40_2")
def _(c):
    from amp_tf.cli import cifar

    line = _cli(cifar.main, ["--arch", "wrn40_2", "--width", "8", "--out", c["root"] / "never"])
    return re.sub(r"/tmp/\S+", "<path>", line)


@case("trainers.fmnist", "--near --holdout (the holdout set has no near-OOD group)")
def _(c):
    return _fmnist_error(c, "--near", "--holdout")


@case("trainers.fmnist", "--skip-vanilla --finetune-epochs 2 (nothing to fine-tune)")
def _(c):
    return _fmnist_error(c, "--skip-vanilla", "--finetune-epochs", "2")


@case("trainers.fmnist", "--num-anchors 50 --train-limit 20")
def _(c):
    return _fmnist_error(c, "--num-anchors", "50", "--train-limit", "20", "--batch-size", "8")


@case("trainers.fmnist", "--batch-size 128 --train-limit 64")
def _(c):
    return _fmnist_error(c, "--batch-size", "128", "--train-limit", "64")


@case("trainers.fmnist", "--data-dir ''")
def _(c):
    return _fmnist_error(c, "--data-dir", "")


@case("trainers.fmnist", "--data-dir of an empty folder")
def _(c):
    empty = c["root"] / "empty_data"
    empty.mkdir(exist_ok=True)
    return _fmnist_error(c, "--data-dir", empty)


@case("eval.ood", "--limit 0 (the older spelling of --eval-limit: both accepted)")
def _(c):
    line = _cli(ood.main, ["--model", c["root"] / "anchored.keras", "--id", "fashion_mnist", "--ood", "digits",
                           "--limit", "0", "--out", c["root"] / "never"])
    return re.sub(r"/tmp/\S+", "<path>", line)



def _flag_error(c, pattern, *flags, main=None):
    """A flag-only refusal of a trainer (trainers.fmnist by default): its line must match `pattern`, and
    nothing is written."""
    line = _cli(main or fmnist.main, ["--out", c["root"] / "never", *flags])
    assert re.search(pattern, line), line
    assert not (c["root"] / "never").exists()
    return _path(line)


@case("trainers.* (every trainer)", "--seed -1 or --seed 2**64")
def _(c):
    _flag_error(c, r"^error: --seed: expected an int in 0\.\.4294967295", "--seed", str(2**64))
    return _flag_error(c, r"^error: --seed: expected an int in 0\.\.4294967295", "--seed", "-1")


@case("trainers.fmnist", "--consistency '' (empty: no transform named)")
def _(c):
    return _flag_error(c, "'' is not a transform; for no anchor transform use --consistency none", "--consistency", "")


@case("trainers.fmnist", "--out '' or --backup-dir '' (empty paths)")
def _(c):
    _flag_error(c, "^error: --backup-dir: empty path", "--backup-dir", "")
    return _flag_error(c, "^error: --out: empty path", "--out", "")


@case("trainers.fmnist", "--no-backup with --backup-dir")
def _(c):
    return _flag_error(c, "--no-backup with --backup-dir: .* drop one", "--no-backup", "--backup-dir", c["root"] / "bk")


@case("trainers.fmnist", "--out under /proc (no disk: not writable, not 'full')")
def _(c):
    return _flag_error(c, "/proc is on no disk .*where no file can be written", "--out", "/proc/amp-run")


@case("trainers.fmnist", "--data-dir whose IDX files are empty (0 bytes)")
def _(c):
    zero = c["root"] / "zero_idx"
    zero.mkdir(exist_ok=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (zero / name).write_bytes(b"")
    return _flag_error(c, "train-images-idx3-ubyte.gz holds only 0 bytes, too short for an IDX file", "--data-dir",
                       zero)


@case("trainers.fmnist --init-from", "a model with two outputs")
def _(c):
    import keras

    path = c["root"] / "two_out.keras"
    inp = keras.Input((28, 28, 1))
    z = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
    keras.Model(inp, [keras.layers.Dense(10, name="a")(z), keras.layers.Dense(3, name="b")(z)]).save(path)
    return _flag_error(c, r"the model has 2 outputs \(a, b\); amp-tf needs a classifier with one output of logits",
                       "--init-from", path)


@case("trainers.imagenet", "--anchor-pool 3 (fewer images than the 5 anchors)")
def _(c):
    from amp_tf.cli import imagenet

    return _flag_error(c, r"^error: --anchor-pool 3: .* give --anchor-pool >= 5", "--anchor-pool", "3", main=imagenet.main)


@case("trainers.imagenet", "--ood imagenet2012_corrupted/gaussian_blur_9 (levels are 1..5)")
def _(c):
    from amp_tf.cli import imagenet

    return _flag_error(c, "unknown imagenet2012_corrupted variant 'gaussian_blur_9'", "--ood",
                       "imagenet2012_corrupted/gaussian_blur_9", main=imagenet.main)


@case("trainers.* --backup-dir", "a --backup-dir holding a killed run's backup, given to another run")
def _(c):
    from amp_tf.run.backupdir import claim_backup_dir

    bk = c["root"] / "shared_bk"
    claim_backup_dir(bk, c["root"] / "run_a")
    (bk / "anchored").mkdir()
    (bk / "anchored" / "training_metadata.json").write_text('{"epoch": 1}')
    line = _flag_error(c, r"holds the backup of another run \(--out .*run_a.*this run \(--out .*never\)",
                       "--seed", "1", "--backup-dir", bk)
    return re.sub(r"started \S+ by process \d+ on [^)]+\)", "started <time> by process <pid> on <host>)", line)


@case("trainers.* --backup-dir", "a --backup-dir inside --out")
def _(c):
    return _flag_error(c, "--backup-dir .* and --out .* lie inside one another", "--backup-dir",
                       c["root"] / "never" / "bk")


@case("trainers.* --out", "a dangling symbolic link")
def _(c):
    link = c["root"] / "dangling"
    if not link.is_symlink():
        link.symlink_to(c["root"] / "no_target")
    return _flag_error(c, "is a symbolic link to .*no_target, which does not exist", "--out", link)


# ------------------------------------------------------------------ cases: run folders and saved files
# (add this area's cases directly below this line)
@case("trainers.* --out (RunFolder)", "--resume of a finished run")
def _(c):
    out = c["root"] / "finished"
    folder = RunFolder(out, {"seed": 0}, log=lambda m: None)
    (folder.work / "report.md").write_text("done")
    folder.commit()
    got = expect(ValueError, "already complete", RunFolder, out, {"seed": 0}, resume=True)
    assert sorted(p.name for p in out.iterdir()) == ["job.json", "report.md"]  # nothing redone or touched
    return re.sub(r"/tmp/\S+", "<path>", got)


@case("trainers.* --out (RunFolder)", "--overwrite of a folder that holds no run (no job.json)")
def _(c):
    mine = c["root"] / "my_notes"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    got = expect(ValueError, "left alone", RunFolder, mine, {"seed": 0}, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep"
    return re.sub(r"/tmp/\S+", "<path>", got)


@case("trainers.* --out (RunFolder)", "the `.partial` run folder deleted while the run is in progress")
def _(c):
    import shutil

    from amp_tf.run.pipeline import RunFolderLost

    folder = RunFolder(c["root"] / "deleted", {"seed": 0}, log=lambda m: None)
    shutil.rmtree(folder.work)
    (folder.work / "anchored").mkdir(parents=True)  # training recreates what it writes
    got = expect(RunFolderLost, "deleted or taken over", folder.commit)
    assert not folder.path.exists()  # nothing committed (the CLI exits with code 2, no "done")
    return re.sub(r"/tmp/\S+", "<path>", got)


def _bad_keras(c, name, content):
    from amp_tf.run.files import load_keras_model

    path = c["root"] / name
    path.write_bytes(content)
    got = expect(ValueError, "is not a Keras model: the file is", load_keras_model, path, "--model")
    return re.sub(r"/tmp/\S+", "<path>", got)


@case("amp_tf.run.files.load_keras_model", "a truncated `.keras` file (cut off while copied)")
def _(c):
    data = (c["root"] / "anchored.keras").read_bytes()
    return _bad_keras(c, "truncated.keras", data[: len(data) // 2])


@case("amp_tf.run.files.load_keras_model", "an HDF5 weights file renamed `.keras`")
def _(c):
    c["model"].save_weights(c["root"] / "w.weights.h5")
    return _bad_keras(c, "h5.keras", (c["root"] / "w.weights.h5").read_bytes())


@case("amp_tf.run.files.load_keras_model", "a text file renamed `.keras`")
def _(c):
    return _bad_keras(c, "text.keras", b"model: resnet\n")


@case("amp_tf.run.files.load_run", "the folder of an unfinished run")
def _(c):
    from amp_tf.run.files import load_run

    folder = RunFolder(c["root"] / "unfinished", {"seed": 0}, log=lambda m: None)
    folder.path.mkdir()
    expect(ValueError, "the run is still running .* holds its work folder", load_run, folder.path)  # its lock is live
    folder.release()  # as when its process ends: an interrupted run
    got = expect(ValueError, "the run never finished: no job.json; its work folder .*--resume", load_run, folder.path)
    return re.sub(r"/tmp/\S+", "<path>", got)



# ------------------------------------------------------------------ cases: tf.data, detectors, callbacks and fit
# (add this area's cases directly below this line)
def _fresh(c):
    """A fresh width-4 AnchoredModel for cases that may train (the shared model stays as the export saw it)."""
    if "fresh" not in c:
        model = AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=4), mean=c["mean"], std=c["std"])
        model.compile("sgd", "sparse_categorical_crossentropy")
        c["fresh"] = model
    return c["fresh"]


def _ds(x, y, batch=32):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _refused_before_training(c, kind, pattern, x, y=None, **kwargs):
    model = _fresh(c)
    steps = int(model.optimizer.iterations.numpy()) if model.optimizer.built else 0
    got = expect(kind, pattern, model.fit, x, y, epochs=1, verbose=0, **kwargs)
    assert (int(model.optimizer.iterations.numpy()) if model.optimizer.built else 0) == steps
    return got


@case("AnchoredModel.fit (tf.data)", "float labels such as 3.7")
def _(c):
    return _refused_before_training(c, ValueError, "^y: labels must be whole-number", _ds(c["x"], c["y"] + 0.7))


@case("AnchoredModel.fit (tf tensors)", "float labels such as 3.7")
def _(c):
    return _refused_before_training(c, ValueError, "^y: labels must be whole-number", tf.constant(c["x"]),
                                    tf.constant(c["y"] + 0.7))


@case("AnchoredModel.fit (tf.data)", "labels >= num_classes in the first batch")
def _(c):
    return _refused_before_training(c, ValueError, r"^y: labels must be class ids in \[0, 10\)",
                                    _ds(c["x"], c["y"] + 10))


@case("AnchoredModel.fit (tf.data)", "a label >= num_classes in a later batch")
def _(c):
    late = c["y"].copy()
    late[-1] = 12
    return expect(ValueError, r"^y: labels must be class ids in \[0, 10\).*max 12", _fresh(c).fit, _ds(c["x"], late),
                  epochs=1, verbose=0)


@case("AnchoredModel.fit (tf.data)", "`x / 255`")
def _(c):
    return _refused_before_training(c, ValueError, r"^x: .*x / 255", _ds(c["x"] / 255.0, c["y"]))


@case("AnchoredModel.fit (tf.data)", "32x32 images for a 28x28 model")
def _(c):
    return _refused_before_training(c, ValueError, r"^x: expected \(batch, 28, 28, 1\)",
                                    _ds(np.zeros((8, 32, 32, 1), np.uint8), c["y"][:8]))


@case("AnchoredModel.fit", "32x32 images for a 28x28 model")
def _(c):
    return _refused_before_training(c, ValueError, r"^x: expected \(batch, 28, 28, 1\)",
                                    np.zeros((8, 32, 32, 1), np.uint8), c["y"][:8])


@case("AnchoredModel.fit", "empty arrays")
def _(c):
    return _refused_before_training(c, ValueError, "^x: got an empty array", c["x"][:0], c["y"][:0])


@case("AnchoredModel.fit (tf.data)", "an empty dataset")
def _(c):
    return _refused_before_training(c, ValueError, "^x: the dataset is empty", _ds(c["x"][:0], c["y"][:0]))


@case("AnchoredModel.fit", "validation_data as `x / 255`")
def _(c):
    return _refused_before_training(c, ValueError, r"^validation_data images: .*x / 255", c["x"], c["y"],
                                    validation_data=(c["x"] / 255.0, c["y"]))


@case("AnchoredModel.fit (tf.data)", "validation_data as `x / 255`")
def _(c):
    return _refused_before_training(c, ValueError, r"^validation_data images: .*x / 255", _ds(c["x"], c["y"]),
                                    validation_data=_ds(c["x"] / 255.0, c["y"]))


@case("AnchoredModel.fit", "a batch of one image at width 4 (129 images, batch 128)")
def _(c):
    model = AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=4), mean=c["mean"], std=c["std"])
    model.compile("sgd", "sparse_categorical_crossentropy")
    hist = model.fit(c["x"][:129], c["y"][:129], batch_size=128, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    return "trains (strided 1x1 convs avoid the crashing kernel, amp_tf/models/conv.py)"


@case("OODMetricsCallback in fit", "32x32 images for a 28x28 model")
def _(c):
    big = np.zeros((4, 32, 32, 1), np.uint8)
    return _refused_before_training(c, ValueError, r"^id_images: expected \(batch, 28, 28, 1\)",
                                    c["x"][:32], c["y"][:32],
                                    callbacks=[OODMetricsCallback(big, {"big": big}, verbose=0)])


@case("OODMetricsCallback in fit", "RGB images for a grayscale model")
def _(c):
    rgb = np.zeros((4, 28, 28, 3), np.uint8)
    return _refused_before_training(c, ValueError, r"^id_images: expected \(batch, 28, 28, 1\)",
                                    c["x"][:32], c["y"][:32],
                                    callbacks=[OODMetricsCallback(rgb, {"rgb": rgb}, verbose=0)])


@case("detectors.names", "called before and after `import amp_tf.detection.baselines`")
def _(c):
    from amp_tf.detection import detectors

    before = detectors.names()
    import amp_tf.detection.baselines  # noqa: F401

    assert detectors.names() == before == sorted(detectors.KINDS) and len(before) == 23
    return f"the same {len(before)} names (a static table; tests/test_detectors.py also checks a fresh process)"


@case("detectors.get", "'msp' / 'energy' on an AnchoredModel (listed by names(anchored=True))")
def _(c):
    from amp_tf.detection import detectors

    ref = AnchoredPredictor.from_model(c["model"], select_anchors(c["x"], 3, seed=0)).predict(c["x"][:8])
    for name in ("msp", "energy"):
        s = detectors.get(name, num_anchors=3).fit(c["model"], id_train=(c["x"], c["y"])).score(c["x"][:8])
        np.testing.assert_allclose(s, ref[name], rtol=1e-5, atol=1e-6)
    return "the scores, through AnchoredPredictor (on the calibrated mean logits, as eval.ood reports them)"


@case("detectors.get", "'gram' fitted on an AnchoredModel (knn / mahalanobis take one: its anchored features)")
def _(c):
    from amp_tf.detection import detectors

    return expect(TypeError, "scores a plain classifier, got an AnchoredModel", detectors.get("gram").fit,
                  c["model"], id_train=(c["x"], c["y"]))


@case("detector.score", "32x32 images after valid ones (energy)")
def _(c):
    from amp_tf.detection import detectors

    det = detectors.get("energy").fit(c["vanilla"])
    det.score(c["x"][:8])
    return expect(ValueError, r"^images: expected \(batch, 28, 28, 1\)", det.score, np.zeros((2, 32, 32, 1), np.uint8))


@case("detector.score", "RGB images after valid ones (mahalanobis)")
def _(c):
    from amp_tf.detection import detectors

    det = detectors.get("mahalanobis").fit(c["vanilla"], id_train=(c["x"], c["y"]))
    det.score(c["x"][:8])
    return expect(ValueError, r"^images: expected \(batch, 28, 28, 1\)", det.score, np.zeros((2, 28, 28, 3), np.uint8))


@case("check_pixels (every entry point)", "one legitimate dark image in float pixel units (all values <= 0.5)")
def _(c):
    from amp_tf.models.pixels import check_pixels

    dark = (c["x"][:1] * 0.0015).astype("float32")
    check_pixels(dark)
    c["pred"].predict(np.concatenate([c["x"][:3], dark]), batch_size=3)  # the last batch is the dark image alone
    return "accepted (judged as a whole; several such images, or a pixel above 0.5, read as `x / 255`)"


@case("data.load('folder:<path>')", "a folder of 16-bit grayscale PNGs")
def _(c):
    from PIL import Image

    folder = c["root"] / "png16"
    folder.mkdir()
    v = (c["x"][:4, ..., 0].astype(np.uint16) * 257)
    for i, a in enumerate(v):
        Image.fromarray(a).save(folder / f"{i}.png")
    got = data.to_numpy(data.load(f"folder:{folder}"))[0]
    np.testing.assert_array_equal(got, c["x"][:4])
    return "the 8-bit images exactly (16-bit values scaled by 1/257, not clipped)"



# ------------------------------------------------------------------ cases: anchor transform T
# (add this area's cases directly below this line)
@case("AnchoredModel", "consistency_mode='batch' (a typo)")
def _(c):
    return expect(ValueError, "mode", AnchoredModel, build_backbone("resnet_small", (28, 28, 1), 10, width=4),
                  consistency_mode="batch")


@case("AnchoredModel(consistency_mode='official')", "a backbone for 4-channel images, colour jitter in T")
def _(c):
    import keras

    inp = keras.Input((12, 12, 8))
    backbone = keras.Model(inp, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(inp)))
    return expect(ValueError, "1- or 3-channel", AnchoredModel, backbone, consistency="all",
                  consistency_mode="official", num_classes=10)


@case("ConsistencyAugment(mode='official')", "'blur' on images 4 pixels tall (the 3x9 kernel needs 5)")
def _(c):
    from amp_tf.method.augment import ConsistencyAugment

    t = ConsistencyAugment("blur", mode="official")
    return expect(ValueError, "at least 5 pixels tall", t, np.zeros((2, 4, 28, 1), np.float32))



# ------------------------------------------------------------------ cases: one owner, one data source, one contract
# (add this area's cases directly below this line)
def _path(text):
    return re.sub(r"/tmp/\S+?(?=[;:,.)]*( |$))", "<path>", text)


@case("trainers.* --out (RunFolder)", "a second run (plain, --resume or --overwrite) into the --out of a live run")
def _(c):
    argv, sys.argv = sys.argv, ["trainers/fmnist.py", "--out", "runs/cc"]  # the lock's command: one length
    try:
        live = RunFolder(c["root"] / "live", {"seed": 0}, log=lambda m: None)
    finally:
        sys.argv = argv
    try:
        for kw in ({}, {"resume": True}, {"overwrite": True}):
            got = expect(ValueError, f"in use by a live run \\(process {os.getpid()} on ", RunFolder, live.path,
                         {"seed": 0}, **kw)
        assert live.held() and live.commit() == live.path  # the live run completes untouched
    finally:
        live.release()
    return re.sub(r"process \d+ on \S+, started \S+: [^)]*\)", "process <pid> on <host>, started <time>: "
                  "<its command>)", _path(got))


@case("trainers.* --out (RunFolder)", "a `.partial` whose lock names a process that is gone (a killed run)")
def _(c):
    killed = RunFolder(c["root"] / "gone", {"seed": 0}, log=lambda m: None)
    killed.release()  # as when its process is killed
    return _path(expect(ValueError, "has an interrupted run.*--resume", RunFolder, killed.path, {"seed": 0}))


@case("trainers.fmnist --out", "a folder holding only the user's notes.txt")
def _(c):
    mine = c["root"] / "notes_only"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    line = _cli(fmnist.main, ["--out", mine])
    assert "no amp-tf run" in line and [p.name for p in mine.iterdir()] == ["notes.txt"]
    return _path(line)


@case("trainers.fmnist --out", "a path under a file (notes.txt/run)")
def _(c):
    (c["root"] / "notes.txt").write_text("mine")
    return _path(_cli(fmnist.main, ["--out", c["root"] / "notes.txt" / "run"]))


@case("trainers.fmnist", "--resume without --out")
def _(c):
    return _cli(fmnist.main, ["--resume"])


@case("trainers.fmnist", "--data-dir holding only the training files")
def _(c):
    import shutil

    from amp_tf.data.offline import DEBIAN_FASHION_MNIST_DIR

    half = c["root"] / "train_only"
    half.mkdir()
    for f in Path(DEBIAN_FASHION_MNIST_DIR).glob("train-*"):
        shutil.copy(f, half)
    return _path(_fmnist_error(c, "--data-dir", half))


@case("trainers.fmnist", "--data-dir holding 30 PNGs and no Fashion-MNIST files")
def _(c):
    from PIL import Image

    pngs = c["root"] / "pngs"
    pngs.mkdir()
    for i in range(30):
        Image.fromarray(c["x"][i, ..., 0]).save(pngs / f"{i:02d}.png")
    return _path(_fmnist_error(c, "--data-dir", pngs))


@case("data.load('fashion_mnist', data_dir=...)", "a data_dir without the test split (library)")
def _(c):
    return _path(expect(data.DataNotFoundError, "test split is not there", data.load, "fashion_mnist", "test",
                        data_dir=c["root"] / "train_only"))


def _head_model(activation, shape=(28, 28, 1)):
    import keras

    inp = keras.Input(shape)
    z = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inp)))
    return keras.Model(inp, keras.layers.Dense(10, activation=activation, name="predictions")(z))


@case("finetune_anchored", "a model ending in sigmoid")
def _(c):
    from amp_tf.run.training import finetune_anchored

    return expect(ValueError, "ends in a sigmoid.*activation=None", finetune_anchored, _head_model("sigmoid"),
                  c["x"][:32], c["y"][:32], epochs=1)


@case("trainers.fmnist --init-from", "a model ending in softmax")
def _(c):
    _head_model("softmax").save(c["root"] / "softmax.keras")
    return _path(_fmnist_error(c, "--init-from", c["root"] / "softmax.keras"))


@case("trainers.fmnist --init-from", "a model ending in sigmoid")
def _(c):
    _head_model("sigmoid").save(c["root"] / "sigmoid.keras")
    return _path(_fmnist_error(c, "--init-from", c["root"] / "sigmoid.keras"))


@case("eval.ood --model", "a vanilla model ending in softmax")
def _(c):
    return _path(_cli(ood.main, ["--model", c["root"] / "softmax.keras", "--id", "fashion_mnist", "--ood", "digits",
                                 "--out", c["root"] / "never", "--verbose", "0"]))


@case("finetune_anchored", "a model that takes any image size, (None, None, 1)")
def _(c):
    from amp_tf.run.training import finetune_anchored

    model, _ = finetune_anchored(_head_model(None, (None, None, 1)), c["x"][:64], c["y"][:64], epochs=1,
                                 batch_size=32, lr=0.01, verbose=0)
    assert model.backbone.input.shape[1:3] == (None, None)
    return "the correct answer: fine-tuned on the 28x28 images"


@case("trainers.fmnist --init-from", "a model that takes any image size, (None, None, 1)")
def _(c):
    import contextlib
    import io

    _head_model(None, (None, None, 1)).save(c["root"] / "any.keras")
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_cli(fmnist.main, ["--init-from", c["root"] / "any.keras", "--dry-run"]) == 0
    return "accepted: passes every check (the model takes 28x28 images)"


@case("trainers.tune", "--arch wrn40_2 --width 4,8")
def _(c):
    from amp_tf.cli import tune

    return _cli(tune.main, ["--arch", "wrn40_2", "--width", "4,8", "--out", c["root"] / "never"])


@case("eval.ood --scores", "knn,mahalanobis,amp+knn,amp+mahalanobis on an anchored model")
def _(c):
    got = ood.choose_scores("knn,mahalanobis,amp+knn,amp+mahalanobis", anchored=True)
    assert got == ["knn", "mahalanobis", "amp+knn", "amp+mahalanobis"]
    return "accepted: scored on the anchored features (fitted on the ID training split)"


@case("eval.ood --scores", "knn,mahalanobis,gram,react,temperature_scaling on a vanilla model")
def _(c):
    got = ood.choose_scores("knn,mahalanobis,gram,react,temperature_scaling", anchored=False)
    assert got == ["knn", "mahalanobis", "gram", "react", "temperature_scaling"]
    return "accepted: every detector of amp_tf.detection.detectors for a plain model, fitted on the ID training split"


@case("eval.ood --scores", "ensemble_msp (a detector of a list of models)")
def _(c):
    return expect(ValueError, "ensemble_msp score.*one --model", ood.choose_scores, "ensemble_msp", False)


@case("eval.ood", "--seed -1")
def _(c):
    return _cli(ood.main, ["--model", c["root"] / "none.keras", "--id", "fashion_mnist", "--ood", "digits",
                           "--seed", "-1"])


@case("eval.resize_study", "--ood-folder that does not exist")
def _(c):
    from amp_tf.cli import resize_study

    return _cli(resize_study.main, ["--model", c["root"] / "none.keras", "--id", "fashion_mnist", "--ood-folder",
                                    c["root"] / "no-such-folder"]).replace(str(c["root"]), "<path>")


@case("trainers.tune", "--lr nan,0.1")
def _(c):
    from amp_tf.cli import tune

    return _cli(tune.main, ["--lr", "nan,0.1", "--out", c["root"] / "never"])


@case("trainers.tune", "a search of other settings into the --out of an earlier search")
def _(c):
    import json

    from amp_tf.cli import tune

    out = c["root"] / "tuned"
    (out / "tuner").mkdir(parents=True)
    first = tune.parser().parse_args(["--out", str(out), "--lr", "0.05"])
    (out / tune.SEARCH_FILE).write_text(json.dumps({"settings": tune.search_settings(first)}))
    assert tune.tune_folder(first) == (out, True)  # the same settings: resumed
    return _cli(tune.main, ["--out", out, "--lr", "0.1"]).replace(str(out), "<path>")


@case("train (any model)", "a loss that grows 1000-fold over its first value (raw pixels, lr 0.1)")
def _(c):
    from amp_tf.run.training import DivergenceStop, TrainingDiverged

    stop = DivergenceStop()
    stop.on_train_batch_end(0, {"loss": 2.3})
    return expect(TrainingDiverged, "grew from 2.3 to .*Likely causes: pixels without statistics.*learning rate",
                  stop.on_train_batch_end, 7, {"loss": 9e8})


@case("trainers.* (Ctrl-C)", "Ctrl-C while training")
def _(c):
    from amp_tf.errors import interrupted_line
    from amp_tf.run.runfolder import RunInterrupted

    err = RunInterrupted("runs/cc", "runs/.cc.partial")
    line = interrupted_line(err, fmnist.main, ["--epochs", "3", "--out", "runs/cc", "--overwrite"])
    assert line.endswith("python -m trainers.fmnist --epochs 3 --out runs/cc --resume")
    return line


@case("data.load('folder:<path>')", "32-bit float TIFFs (mode F) with values in [0, 1]")
def _(c):
    from PIL import Image

    folder = c["root"] / "float_tiff"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(c["x"][i, ..., 0].astype(np.float32) / 255.0, mode="F").save(folder / f"{i}.tif")
    got = data.to_numpy(data.load(f"folder:{folder}"))[0]
    np.testing.assert_array_equal(got, c["x"][:4])
    return "scaled by 255 with a warning: the 8-bit images exactly"


def _logged_warnings(fn):
    """`(fn(), [amp_tf's logged warnings])`."""
    import logging

    texts = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: texts.append(record.getMessage())
    logging.getLogger("amp_tf").addHandler(handler)
    try:
        return fn(), texts
    finally:
        logging.getLogger("amp_tf").removeHandler(handler)


def _wide_folder(c, name, pixels, ext):
    """Loads a folder of `pixels` saved as 16-bit PNGs (uint16, ext "png") or 32-bit TIFFs (int32, "tif")."""
    from PIL import Image

    folder = c["root"] / name
    folder.mkdir()
    for i, a in enumerate(pixels):
        Image.fromarray(a).save(folder / f"{i}.{ext}")
        assert Image.open(folder / f"{i}.{ext}").mode == ("I;16" if ext == "png" else "I")
    return _logged_warnings(lambda: data.to_numpy(data.load(f"folder:{folder}"))[0])


@case("data.load('folder:<path>')", "16-bit PNGs holding 8-bit values (a uint8 array saved as uint16)")
def _(c):
    got, told = _wide_folder(c, "png16_low", c["x"][:4, ..., 0].astype(np.uint16), "png")
    np.testing.assert_array_equal(got, c["x"][:4])
    assert len(told) == 1 and "all lie in 0..255" in told[0] and "0.png" in told[0], told
    return "read as they are (0..255) with a warning naming the file: " + told[0].split(": ", 1)[1][:150] + "..."


@case("data.load('folder:<path>')", "32-bit integer TIFFs (mode I) holding 0..255")
def _(c):
    got, told = _wide_folder(c, "tiff_i32", c["x"][:4, ..., 0].astype(np.int32), "tif")
    np.testing.assert_array_equal(got, c["x"][:4])
    assert len(told) == 1 and "8-bit values" in told[0], told
    return "read as they are (0..255), with the same warning"


@case("data.load('folder:<path>')", "32-bit integer TIFFs (mode I) with values up to 102000")
def _(c):
    big = c["x"][:2, ..., 0].astype(np.int32) * 400
    with pytest.raises(data.DataNotFoundError, match=r"0\.tif .*values in \[0, 102000\] are not 16-bit") as info:
        _wide_folder(c, "tiff_i32big", big, "tif")
    return "refused, naming each file: " + re.sub(r"/tmp/\S+", "<path>", str(info.value).split("images: ", 1)[1])[:200]


@case("data.load('folder:<path>')", "a folder of images and a dangling symlink")
def _(c):
    from PIL import Image

    folder = c["root"] / "links"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(c["x"][i, ..., 0]).save(folder / f"{i}.png")
    os.symlink(c["root"] / "gone.png", folder / "link.png")
    with pytest.warns(UserWarning, match=r"link\.png \(a dangling symlink") as w:
        got = data.to_numpy(data.load(f"folder:{folder}"))[0]
    np.testing.assert_array_equal(got, c["x"][:3])
    return "the images load; the link is skipped and named: " + _first_line(w[0].message)


# ------------------------------------------------------------------ the shipped detector
@case("detectors.select_detector", "fewer than 20 ID validation images")
def _(c):
    from amp_tf.detection.detectors import select_detector

    return expect(ValueError, "at least 20", select_detector, c["model"], (c["x"][:100], c["y"][:100]),
                  (c["x"][100:110], c["y"][100:110]))


@case("detectors.select_detector", "no validation OOD images (`val_ood={}`)")
def _(c):
    from amp_tf.detection.detectors import select_detector

    return expect(ValueError, "no validation OOD images", select_detector, c["model"], (c["x"][:100], c["y"][:100]),
                  (c["x"][100:], c["y"][100:]), val_ood={})


@case("detectors.load_detector", "a detector state fitted on another model (other feature width)")
def _(c):
    from amp_tf.detection.detectors import load_detector
    from amp_tf.detection.detectors.shipped import ShippedDetector, score_layer
    from amp_tf.detection.baselines.mahalanobis import Mahalanobis

    maha = Mahalanobis().fit_features(np.random.default_rng(0).normal(size=(50, 7)), np.arange(50) % 10)
    folder = c["root"] / "other_detector"
    ShippedDetector(score_layer("mahalanobis", feature=maha), select_anchors(c["x"], 5), "mahalanobis",
                    threshold=0.0).save(folder)
    return expect(ValueError, "7-wide features, the model's 'features' layer gives", load_detector, folder, c["model"])


@case("files.load_run", "a run folder made before the shipped detector (no detector.json)")
def _(c):
    import shutil
    import warnings

    from amp_tf.run.files import load_run

    run = c["root"] / "old_run"
    run.mkdir()
    shutil.copytree(c["root"] / "serving", run / "serving")
    shutil.copy(c["root"] / "anchored.keras", run / "anchored.keras")
    (run / "job.json").write_text("{}")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loaded = load_run(run)
    out = loaded.predict(c["x"][:4])
    assert loaded.detector is None and out["is_ood"].shape == (4,)
    np.testing.assert_array_equal(out["ood_score"], out["amp_score"])
    msg = next(str(w.message) for w in seen if "no saved detector" in str(w.message))
    return "loads and scores by AMP alone, with the warning: " + _first_line(msg).split(": ", 1)[1]


# ------------------------------------------------------------------ cases: the probe's library doors (issue 30)
# (add this area's cases directly below this line)
def _rooted(c, kind, pattern, fn, *args, **kwargs):
    """`expect`, the file names kept: the test folder is shown as <root>."""
    with pytest.raises(kind, match=pattern) as info:
        fn(*args, **kwargs)
    line = str(info.value).strip().splitlines()[0].replace(str(c["root"]), "<root>")
    return f"{info.type.__name__}: {line if len(line) <= 230 else line[:227] + '...'}"


@case("detectors.get('energy').fit", "a plain model ending in softmax (probabilities, not logits)")
def _(c):
    from amp_tf.detection import detectors

    return expect(ValueError, "detector 'energy': the model: the model ends in a softmax.*activation=None",
                  detectors.get("energy").fit, _head_model("softmax"))


@case("select_anchors", "seed=-1")
def _(c):
    return expect(ValueError, r"^seed: expected an int >= 0", select_anchors, c["x"], 5, seed=-1)


@case("select_anchors", "k=5.7 (not a whole number)")
def _(c):
    return expect(ValueError, r"^k: .*a whole number; got 5.7", select_anchors, c["x"], 5.7)


@case("AnchoredModel.fit", "one-hot labels (N, 10) with the sparse loss")
def _(c):
    return _refused_before_training(c, ValueError, r"^y: one-hot labels of shape \(64, 10\).*y.argmax\(-1\).*"
                                    "CategoricalCrossentropy", c["x"][:64], np.eye(10)[c["y"][:64]])


@case("AnchoredModel.fit", "one-hot labels with CategoricalCrossentropy(from_logits=True)")
def _(c):
    import keras

    model = AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=4), mean=c["mean"], std=c["std"])
    model.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True))
    hist = model.fit(c["x"][:64], np.eye(10)[c["y"][:64]], batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    return "trains (the loss that takes one-hot rows)"


@case("AnchoredModel.fit", "text labels ('c3', ...)")
def _(c):
    return _refused_before_training(c, ValueError, r"^y: labels must be integer class ids.*text labels.*np.unique",
                                    c["x"][:64], np.array([f"c{v}" for v in c["y"][:64]]))


@case("AnchoredModel.fit (tf.data)", "a dataset of images only (no labels)")
def _(c):
    return _refused_before_training(c, ValueError, "^x: the dataset yields images only, no labels",
                                    tf.data.Dataset.from_tensor_slices(c["x"][:64]).batch(32))


@case("AnchoredModel.fit", "120 labels for 128 images")
def _(c):
    return _refused_before_training(c, ValueError, "^y: 120 labels for 128 images", c["x"][:128], c["y"][:120])


@case("AnchoredModel.compile", "SparseCategoricalCrossentropy(from_logits=False) (expects probabilities)")
def _(c):
    import keras

    model = AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=4), mean=c["mean"], std=c["std"])
    return expect(ValueError, r"^loss: SparseCategoricalCrossentropy\(from_logits=False\).*from_logits=True",
                  model.compile, "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=False))


@case("AnchoredModel.compile", "the name 'sparse_categorical_crossentropy' (Keras: from_logits=False)")
def _(c):
    model = AnchoredModel(build_backbone("resnet_small", (28, 28, 1), 10, width=4), mean=c["mean"], std=c["std"])
    model.compile("sgd", "sparse_categorical_crossentropy")
    assert model.loss.get_config()["from_logits"] is True
    return "read as SparseCategoricalCrossentropy(from_logits=True): the model outputs logits"


@case("AnchoredModel", "consistency_every=1.5")
def _(c):
    return expect(ValueError, r"^consistency_every: expected an int >= 0", AnchoredModel,
                  build_backbone("resnet_small", (28, 28, 1), 10, width=4), consistency_every=1.5)


@case("finetune_anchored", "one-hot labels")
def _(c):
    from amp_tf.run.training import finetune_anchored

    return expect(ValueError, r"^y: one-hot labels of shape \(32, 10\).*y.argmax\(-1\)\.$", finetune_anchored,
                  _head_model(None), c["x"][:32], np.eye(10)[c["y"][:32]], epochs=1)


@case("finetune_anchored", "batch_size=0")
def _(c):
    from amp_tf.run.training import finetune_anchored

    return expect(ValueError, r"^batch_size: expected an int >= 1, got 0", finetune_anchored, _head_model(None),
                  c["x"][:32], c["y"][:32], epochs=1, batch_size=0)


@case("finetune_anchored", "learning_rate=0.01 (Keras' spelling; the keyword is lr)")
def _(c):
    from amp_tf.run.training import finetune_anchored

    got = expect(ValueError, r"^finetune_anchored: unknown keyword learning_rate; did you mean lr\? Valid keywords: "
                 ".*batch_size", finetune_anchored, _head_model(None), c["x"][:32], c["y"][:32], epochs=1,
                 learning_rate=0.01)
    return got.split(" Valid keywords:")[0] + " Valid keywords: (the list)"


def _broken_run(c, name, job="{}", detector=None):
    import shutil

    run = c["root"] / name
    run.mkdir()
    (run / "job.json").write_text(job)
    if detector is not None:
        shutil.copytree(c["root"] / "serving", run / "serving")
        shutil.copy(c["root"] / "anchored.keras", run / "anchored.keras")
        (run / "detector.json").write_text(detector)
        np.savez(run / "detector.npz", anchors=np.zeros((5, 28, 28, 1), np.float32))
    return run


@case("files.load_run", "a run whose job.json is garbage")
def _(c):
    from amp_tf.run.files import load_run

    return _rooted(c, ValueError, r"job.json: damaged, not a JSON file.*re-run the job", load_run,
                  _broken_run(c, "bad_job", job="{garbage"))


@case("files.load_run", "a run whose detector.json is cut off")
def _(c):
    from amp_tf.run.files import load_run

    return _rooted(c, ValueError, r"detector.json: damaged, not a JSON file.*refit the detector", load_run,
                  _broken_run(c, "bad_detector", detector='{"name": "amp", "sco'))


@case("TFLiteModel", "a text file named .tflite")
def _(c):
    from amp_tf.serve.litert import TFLiteModel

    (c["root"] / "text.tflite").write_text("not a model")
    return _rooted(c, ValueError, r"^path: .*text.tflite is a text file, not a .tflite", TFLiteModel,
                  c["root"] / "text.tflite")


@case("TFLiteModel", "an empty file")
def _(c):
    from amp_tf.serve.litert import TFLiteModel

    (c["root"] / "empty.tflite").write_bytes(b"")
    return _rooted(c, ValueError, r"^path: .*empty.tflite is empty \(0 bytes\)", TFLiteModel,
                   c["root"] / "empty.tflite")


@case("TFLiteModel", "a .tflite cut in half")
def _(c):
    from amp_tf.serve.litert import TFLiteModel

    whole = Path(_lite(c).path).read_bytes()
    (c["root"] / "half.tflite").write_bytes(whole[:len(whole) // 2])
    return _rooted(c, ValueError, r"^path: .*half.tflite is a damaged .tflite.*export it again", TFLiteModel,
                  c["root"] / "half.tflite")


@case("TFLiteModel", "a .keras model")
def _(c):
    from amp_tf.serve.litert import TFLiteModel

    return _rooted(c, ValueError, r"^path: .*anchored.keras is a zip archive.*keras.models.load_model", TFLiteModel,
                  c["root"] / "anchored.keras")


@case("TFLiteModel", "num_threads=-3")
def _(c):
    from amp_tf.serve.litert import TFLiteModel

    return expect(ValueError, r"^num_threads: expected an int >= 1", TFLiteModel, _lite(c).path, num_threads=-3)


@case("export_tflite", "a path under a file (notes.txt/model.tflite)")
def _(c):
    from amp_tf.serve.export import export_tflite

    (c["root"] / "notes.txt").write_text("mine")
    return _rooted(c, ValueError, r"notes.txt is a file, not a folder; pass a path made of folders", export_tflite,
                  c["pred"], c["root"] / "notes.txt" / "model.tflite", threshold=1.0)


@case("ShippedDetector.save", "into a path that is a file")
def _(c):
    from amp_tf.detection.detectors.shipped import ShippedDetector, score_layer

    (c["root"] / "notes.txt").write_text("mine")
    det = ShippedDetector(score_layer("amp"), select_anchors(c["x"], 5), "amp", threshold=0.0)
    got = _rooted(c, ValueError, r"^folder .*notes.txt is a file, not a folder", det.save, c["root"] / "notes.txt")
    assert (c["root"] / "notes.txt").read_text() == "mine"
    return got


@case("OODMetricsCallback", "ood_sets as a list of arrays (not a dict)")
def _(c):
    return expect(TypeError, r"^ood_sets: expected a dict \{name: images\}", OODMetricsCallback, c["x"][:32],
                  [c["x"][32:64]])


@case("OODMetricsCallback", "batch_size=0 (refused when made, not in fit)")
def _(c):
    return expect(ValueError, r"^batch_size: expected an int >= 1, got 0", OODMetricsCallback, c["x"][:32],
                  {"blur": c["x"][32:64]}, batch_size=0)


# ------------------------------------------------------------------ the table
def _table(rows):
    out = ["# Bad inputs and what you get", "",
           "Generated by `tests/test_bad_inputs.py` (every row is a test that asserts exactly this; "
           "regenerate with `AMP_TF_WRITE_DOCS=1 .venv/bin/python -m pytest -q tests/test_bad_inputs.py`).",
           f"{len(rows)} cases. Images are Fashion-MNIST test images, uint8, as `data.load` gives them.", "",
           "| # | Where | Input | What you get |", "|---:|:---|:---|:---|"]
    for i, (where, what, got) in enumerate(rows, 1):
        got = got.replace("|", "\\|")
        out.append(f"| {i} | {where} | {what} | {got} |")
    return "\n".join(out) + "\n"


def test_every_bad_input_gets_a_clear_answer_and_the_table_is_current(ctx):
    rows = [(where, what, fn(ctx)) for where, what, fn in CASES]
    assert len(rows) >= 40
    for _, _, got in rows:
        assert got and "Traceback" not in got
    text = _table(rows)
    if os.environ.get("AMP_TF_WRITE_DOCS") == "1":
        DOC.write_text(text)
    assert DOC.exists(), "generate docs/bad_inputs.md (see the module docstring)"
    assert DOC.read_text() == text, "docs/bad_inputs.md is out of date: regenerate it (module docstring)"
