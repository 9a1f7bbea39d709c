"""LiteRT export: the `.tflite` gives the SavedModel's answers, with builtin ops only.

Run in the LiteRT interpreter (`ai-edge-litert`) when it is installed, else in
TensorFlow's own `tf.lite.Interpreter` (`TFLiteModel.runtime` says which).
"""
import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf.serve.export import (
    TFLiteModel, empty_message, export_for_serving, export_tflite, rank_message, size_message,
)
from amp_tf.method.predictor import AnchoredPredictor, select_anchors
from tests.helpers import pixel_images, tiny_backbone

MEAN, STD = [70.0], [80.0]
OUTPUTS = {"logits", "probabilities", "predicted_class", "tau", "amp_score", "calibrated_logits",
           "msp", "energy", "ood_score", "is_ood"}
ROOT = Path(__file__).resolve().parents[1]


def op_names(path):
    """The TFLite op names of a `.tflite` (from TensorFlow's model analyzer)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tf.lite.experimental.Analyzer.analyze(model_path=str(path))
    return set(re.findall(r"Op#\d+ (\w+)\(", out.getvalue()))


def assert_same_answers(lite, served, images):
    """amp_score within 1e-4 relative; identical predicted_class and is_ood; every output close."""
    assert set(lite) == OUTPUTS and OUTPUTS <= set(served)
    np.testing.assert_allclose(lite["amp_score"], served["amp_score"], rtol=1e-4)
    np.testing.assert_array_equal(lite["predicted_class"], served["predicted_class"])
    np.testing.assert_array_equal(lite["is_ood"], served["is_ood"])
    for key in OUTPUTS - {"predicted_class", "is_ood"}:
        np.testing.assert_allclose(lite[key], served[key], rtol=1e-4, atol=1e-5, err_msg=key)
        assert lite[key].dtype == np.float32, key
    assert lite["is_ood"].dtype == np.bool_ and lite["predicted_class"].dtype == np.int32
    assert len(lite["amp_score"]) == len(images)


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """A tiny model exported both ways (the .tflite with a fixed batch of 3: padding is exercised)."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("litert")
    train = pixel_images(rng, (40, 8, 8, 1), np.uint8)
    pred = AnchoredPredictor(tiny_backbone(h=8, w=8, c=1, n=4), select_anchors(train, 5), mean=MEAN, std=STD)
    head = export_for_serving(pred, root / "serving", id_images=pixel_images(rng, (60, 8, 8, 1), np.uint8))
    assert export_tflite(head, root / "model.tflite", batch_size=3) is not None
    served = tf.saved_model.load(str(root / "serving"))
    return dict(root=root, pred=pred, head=head, served=served, fn=served.signatures["serving_default"],
                model=TFLiteModel(root / "model.tflite", num_threads=1))


def test_tflite_matches_the_savedmodel_on_256_images(lite):
    images = pixel_images(np.random.default_rng(1), (256, 8, 8, 1), np.uint8)
    got = lite["model"](images)
    want = {k: v.numpy() for k, v in lite["fn"](images=tf.constant(images)).items()}
    assert_same_answers(got, want, images)
    assert 0 < got["is_ood"].sum() < len(images)  # the threshold separates some: the comparison means something


def test_tflite_is_builtin_ops_with_a_fixed_uint8_input(lite):
    model = lite["model"]
    assert model.batch_size == 3 and model.image_shape == (8, 8, 1)
    spec = model.runner.get_input_details()["images"]
    assert spec["dtype"] == np.uint8 and list(spec["shape"]) == [3, 8, 8, 1]
    ops = op_names(lite["root"] / "model.tflite")
    assert "CONV_2D" in ops and "FULLY_CONNECTED" in ops
    assert not any("FLEX" in op or "CUSTOM" in op or "WHILE" in op for op in ops), ops
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        assert model.runtime == "tensorflow"
    else:
        assert model.runtime == "ai_edge_litert"


def test_wrong_inputs_get_the_savedmodel_messages(lite):
    """The same first line as the SavedModel's in-graph check, before the interpreter runs."""
    model, fn, hwc = lite["model"], lite["fn"], (8, 8, 1)
    for bad, message in [(np.zeros((2, 9, 8, 1), np.uint8), size_message(hwc)),
                         (np.zeros((2, 8, 8, 3), np.uint8), size_message(hwc)),
                         (np.zeros((8, 8, 1), np.uint8), rank_message(hwc)),
                         (np.zeros((0, 8, 8, 1), np.uint8), empty_message(hwc))]:
        with pytest.raises(ValueError) as lite_err:
            model(bad)
        assert str(lite_err.value).startswith(message)
        with pytest.raises(tf.errors.InvalidArgumentError) as served_err:
            fn(images=tf.constant(bad))
        assert message in str(served_err.value)
    for floats in (np.zeros((2, 8, 8, 1), np.float32), np.full((2, 8, 8, 1), 0.5)):
        with pytest.raises(TypeError, match=r"^images: expected images of shape \(N, 8, 8, 1\).*got dtype float"):
            model(floats)


def test_export_tflite_refuses_before_any_work(lite, tmp_path):
    pred, head = lite["pred"], lite["head"]
    (tmp_path / "taken.tflite").write_bytes(b"mine")
    with pytest.raises(ValueError, match="existing file"):
        export_tflite(head, tmp_path / "taken.tflite")
    assert (tmp_path / "taken.tflite").read_bytes() == b"mine"
    with pytest.raises(ValueError, match="batch_size"):
        export_tflite(head, tmp_path / "a.tflite", batch_size=0)
    with pytest.raises(ValueError, match="carries its threshold"):
        export_tflite(head, tmp_path / "a.tflite", threshold=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        export_tflite(pred, tmp_path / "a.tflite")
    with pytest.raises(TypeError, match="AnchoredPredictor"):
        export_tflite(pred.backbone, tmp_path / "a.tflite", threshold=1.0)
    pool = AnchoredPredictor(pred.backbone, pixel_images(np.random.default_rng(2), (8, 8, 8, 1)), mean=MEAN,
                             std=STD, anchor_mode="per_image", num_anchors=3)
    with pytest.raises(ValueError, match="anchor_mode='per_image'.*anchor_mode='fixed'"):
        export_tflite(pool, tmp_path / "a.tflite", threshold=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.tflite"]
    with pytest.raises(ValueError, match="not a file"):
        TFLiteModel(tmp_path / "missing.tflite")


@pytest.mark.slow
def test_resnet_small_with_fused_batchnorm_at_batch_1(tmp_path):
    """The main job's architecture (fused BatchNorm, residual adds) at batch 1, folded and tiled."""
    from amp_tf.method.anchoring import AnchoredModel
    from amp_tf.serve.folded import FoldedAnchoredPredictor
    from amp_tf.models import build_backbone

    rng = np.random.default_rng(3)
    backbone = build_backbone("resnet_small", (28, 28, 1), 10, width=4, anchored=True)
    for layer in backbone.layers:  # trained-looking statistics, so BatchNorm is not an identity
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    model = AnchoredModel(backbone, mean=73.0, std=90.0)
    x = pixel_images(rng, (256 + 40, 28, 28, 1), np.uint8)
    images, val = x[:256], x[256:]
    for kind, cls in [("tiled", AnchoredPredictor), ("folded", FoldedAnchoredPredictor)]:
        pred = cls(model, select_anchors(val, 5))
        head = export_for_serving(pred, tmp_path / kind, id_images=val)
        export_tflite(head, tmp_path / f"{kind}.tflite")
        served = tf.saved_model.load(str(tmp_path / kind))
        want = {k: v.numpy() for k, v in served.signatures["serving_default"](images=tf.constant(images)).items()}
        got = TFLiteModel(tmp_path / f"{kind}.tflite", num_threads=1)(images)
        assert_same_answers(got, want, images)
        assert "FUSED_BATCH_NORM" not in str(op_names(tmp_path / f"{kind}.tflite"))


@pytest.mark.slow
def test_mixed_bfloat16_model_exports_to_tflite(tmp_path):
    """issue 18 cause 1 on LiteRT: bfloat16 has no TFLite kernels; the export computes in float32."""
    rng = np.random.default_rng(4)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        pred = AnchoredPredictor(tiny_backbone(h=8, w=8, c=1, n=4), pixel_images(rng, (3, 8, 8, 1)),
                                 mean=MEAN, std=STD)
        head = export_for_serving(pred, tmp_path / "serving", id_images=pixel_images(rng, (40, 8, 8, 1), np.uint8))
        export_tflite(head, tmp_path / "model.tflite")
    finally:
        keras.config.set_dtype_policy(policy)
    assert keras.config.dtype_policy().name == policy.name
    images = pixel_images(rng, (16, 8, 8, 1), np.uint8)
    served = tf.saved_model.load(str(tmp_path / "serving"))
    want = {k: v.numpy() for k, v in served.signatures["serving_default"](images=tf.constant(images)).items()}
    assert_same_answers(TFLiteModel(tmp_path / "model.tflite")(images), want, images)


@pytest.mark.slow
def test_the_export_litert_example_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "export_litert.py"), "--tiny",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "verdicts agree on all" in res.stdout
    assert (tmp_path / "out" / "serving" / "saved_model.pb").exists()
    assert (tmp_path / "out" / "model.tflite").stat().st_size > 0
