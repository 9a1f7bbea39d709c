import json
import subprocess
import sys

import numpy as np
import pytest

from amp_tf.serve.export import export_for_serving, threshold_at_tpr
from amp_tf.method.predictor import AnchoredPredictor, select_anchors
from tests.helpers import pixel_images, tiny_backbone

MEAN, STD = [70.0], [80.0]

LOAD_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
fn = loaded.signatures["serving_default"]
images = np.load(sys.argv[2])
out = fn(images=tf.constant(images))
print(json.dumps({
    "inputs": sorted(fn.structured_input_signature[1]),
    "outputs": {k: np.asarray(v).tolist() for k, v in out.items()},
    "amp_tf_imported": "amp_tf" in sys.modules,
}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export shared by the tests that only read it."""
    rng = np.random.default_rng(0)
    tmp_path = tmp_path_factory.mktemp("export")
    model = tiny_backbone(h=8, w=8, c=1, n=4)
    train_u8 = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    pred = AnchoredPredictor(model, select_anchors(train_u8, 5), mean=MEAN, std=STD)
    val_u8 = rng.integers(0, 256, (60, 8, 8, 1), dtype=np.uint8)
    head = export_for_serving(pred, tmp_path / "serving", id_images=val_u8)
    return tmp_path / "serving", head, pred, val_u8


def test_threshold_lets_95_percent_of_id_pass(exported):
    _, head, pred, val_u8 = exported
    out = head(val_u8)
    passed = 1.0 - np.asarray(out["is_ood"]).mean()
    assert passed >= 0.95
    assert passed < 0.95 + 2 / len(val_u8)  # not a looser threshold than needed
    s = np.sort(np.arange(100.0))
    assert threshold_at_tpr(s, 0.95) == 5.0


@pytest.mark.slow
def test_fresh_process_savedmodel_matches_in_process(exported, tmp_path, rng):
    path, head, pred, _ = exported
    images = rng.integers(0, 256, (7, 8, 8, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    res = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(path), str(tmp_path / "x.npy")],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["inputs"] == ["images"]
    assert not got["amp_tf_imported"]
    want = head(images)
    expected = {"logits", "probabilities", "predicted_class", "tau", "amp_score", "is_ood",
                "calibrated_logits", "msp", "energy"}
    assert expected <= set(got["outputs"])
    for key in expected:
        np.testing.assert_allclose(np.asarray(got["outputs"][key], dtype="float64"),
                                   np.asarray(want[key], dtype="float64"), atol=1e-5, err_msg=key)
    # normalisation happens inside: same as the predictor on the raw pixels, and as a
    # predictor with identity statistics fed the normalised images and anchors
    direct = pred.predict(images.astype("float32"))
    np.testing.assert_allclose(got["outputs"]["amp_score"], direct["amp_score"], atol=1e-5)
    from amp_tf.method.predictor import amp_outputs

    xn = (images.astype("float32") - MEAN[0]) / STD[0]
    cn = (pred.anchors.numpy() - MEAN[0]) / STD[0]
    per_anchor = np.stack([np.asarray(pred.backbone(np.concatenate([np.broadcast_to(c, xn.shape), xn - c], -1)))
                           for c in cn])
    ref = amp_outputs(per_anchor)
    np.testing.assert_allclose(got["outputs"]["amp_score"], np.asarray(ref["amp_score"]), atol=1e-4)


def test_savedmodel_checks_shape_in_graph(exported, rng):
    import tensorflow as tf

    path, _, _, _ = exported
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert fn.structured_input_signature[1]["images"].dtype == tf.uint8
    assert fn.structured_input_signature[1]["images"].shape.rank == 4
    want = r"expected images of shape \(N, 8, 8, 1\)"
    for bad, why in [((2, 9, 8, 1), "another size"), ((2, 8, 8, 3), "another size"),
                     ((0, 8, 8, 1), "empty batch"), ((8, 8, 1), r"another rank\. One image without its batch axis"),
                     ((1, 2, 8, 8, 1), "another rank")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=want + ".*" + why):
            fn(images=tf.zeros(bad, tf.uint8))
    assert fn(images=tf.zeros((2, 8, 8, 1), tf.uint8))["amp_score"].shape == (2,)


def test_serving_head_config_round_trip(exported):
    from amp_tf.serve.export import ServingHead

    _, head, _, val_u8 = exported
    clone = ServingHead.from_config(head.get_config())
    assert float(clone.threshold.numpy()) == float(head.threshold.numpy())
    assert clone.predictor.anchor_shape == head.predictor.anchor_shape
    np.testing.assert_allclose(clone.predictor.normalizer.mean.numpy(), MEAN)
    np.testing.assert_allclose(clone.predictor.normalizer.std.numpy(), STD)


def test_export_bad_arguments(tmp_path, rng):
    model = tiny_backbone(h=8, w=8, c=1, n=4)
    pred = AnchoredPredictor(model, pixel_images(rng, (3, 8, 8, 1)), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="exactly one"):
        export_for_serving(pred, tmp_path / "a")
    with pytest.raises(ValueError, match="exactly one"):
        export_for_serving(pred, tmp_path / "a", id_images=pixel_images(rng, (4, 8, 8, 1)), threshold=1.0)
    with pytest.raises(ValueError, match=r"id_images: .*looks like `x / 255`"):
        export_for_serving(pred, tmp_path / "a", id_images=pixel_images(rng, (4, 8, 8, 1)) / 255.0)
    with pytest.raises(ValueError, match=r"id_images: .*looks already normalised"):
        export_for_serving(pred, tmp_path / "a", id_images=pixel_images(rng, (4, 8, 8, 1)) - 127.5)
    with pytest.raises(ValueError, match=r"id_images: expected raw pixels of shape \(N, 8, 8, 1\)"):
        export_for_serving(pred, tmp_path / "a", id_images=pixel_images(rng, (4, 9, 9, 1), np.uint8))
    for tpr in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="tpr"):
            export_for_serving(pred, tmp_path / "a", threshold=1.0, tpr=tpr)
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite"):
            export_for_serving(pred, tmp_path / "a", threshold=bad)
    with pytest.raises(TypeError, match="AnchoredPredictor"):
        export_for_serving(model, tmp_path / "a", threshold=1.0)
    # float pixels are valid ID images (they need not be uint8)
    head = export_for_serving(pred, tmp_path / "b", id_images=pixel_images(rng, (20, 8, 8, 1)))
    assert np.isfinite(float(head.threshold.numpy()))
    assert not (tmp_path / "a").exists()  # no refusal left anything behind


def test_too_few_id_images_are_refused_and_an_unresolved_tpr_warns(tmp_path, rng):
    import warnings

    model = tiny_backbone(h=8, w=8, c=1, n=4)
    pred = AnchoredPredictor(model, pixel_images(rng, (3, 8, 8, 1)), mean=MEAN, std=STD)
    for n in (1, 19):
        with pytest.raises(ValueError, match=rf"id_images: {n} image\(s\) cannot set a serving threshold.*at least 20"):
            export_for_serving(pred, tmp_path / "a", id_images=pixel_images(rng, (n, 8, 8, 1), np.uint8))
    assert not (tmp_path / "a").exists()
    with pytest.warns(UserWarning, match=r"50 images cannot resolve tpr=0.99.*at least 100"):
        head = export_for_serving(pred, tmp_path / "b", id_images=pixel_images(rng, (50, 8, 8, 1), np.uint8),
                                  tpr=0.99)
    assert (tmp_path / "b" / "saved_model.pb").exists() and np.isfinite(float(head.threshold.numpy()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 20 images resolve tpr 0.95: no warning
        export_for_serving(pred, tmp_path / "c", id_images=pixel_images(rng, (20, 8, 8, 1), np.uint8))


def test_a_used_path_is_refused_before_any_work(tmp_path, rng):
    model = tiny_backbone(h=8, w=8, c=1, n=4)
    pred = AnchoredPredictor(model, pixel_images(rng, (3, 8, 8, 1)), mean=MEAN, std=STD)
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"^path: .*used is a folder that is not empty"):
        export_for_serving(pred, used, threshold=1.0)
    assert sorted(p.name for p in used.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="existing file"):
        export_for_serving(pred, tmp_path / "file", threshold=1.0)
    # an empty folder is fine, and nothing but the SavedModel is left beside it
    (tmp_path / "empty").mkdir()
    export_for_serving(pred, tmp_path / "empty", threshold=1.0)
    assert (tmp_path / "empty" / "saved_model.pb").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "used"]


def test_mixed_bfloat16_model_exports_in_float32(tmp_path, rng):
    """issue 18 cause 1: a model trained under mixed_bfloat16 exports (was: bfloat16 threshold crash)."""
    import keras
    import tensorflow as tf

    from amp_tf.serve.export import float32_predictor

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = tiny_backbone(h=8, w=8, c=1, n=4)
        pred = AnchoredPredictor(model, pixel_images(rng, (3, 8, 8, 1)), mean=MEAN, std=STD)
        head = export_for_serving(pred, tmp_path / "serving", id_images=pixel_images(rng, (30, 8, 8, 1), np.uint8))
    finally:
        keras.config.set_dtype_policy(policy)
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert head.compute_dtype == "float32" and head.predictor.backbone.get_layer("stem_conv").compute_dtype == "float32"
    images = pixel_images(rng, (6, 8, 8, 1), np.uint8)
    fn = tf.saved_model.load(str(tmp_path / "serving")).signatures["serving_default"]
    out = fn(images=tf.constant(images))
    assert out["amp_score"].dtype == tf.float32 and out["is_ood"].dtype == tf.bool
    # float32: the same weights as the trained model, computed in float32 (close to the bfloat16 scores)
    want = float32_predictor(pred).predict(images)["amp_score"]
    np.testing.assert_allclose(out["amp_score"].numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(out["amp_score"].numpy(), pred.predict(images)["amp_score"], rtol=0.05)
