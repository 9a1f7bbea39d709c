import json
import subprocess
import sys

import numpy as np
import pytest

from amp_tf.export import export_for_serving, threshold_at_tpr
from amp_tf.predictor import AnchoredPredictor, select_anchors
from tests.helpers import tiny_backbone

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


@pytest.fixture
def exported(tmp_path, rng):
    model = tiny_backbone(h=8, w=8, c=1, n=4)
    train_u8 = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    normed = (train_u8.astype("float32") - MEAN[0]) / STD[0]
    pred = AnchoredPredictor(model, select_anchors(normed, 5))
    val_u8 = rng.integers(0, 256, (60, 8, 8, 1), dtype=np.uint8)
    head = export_for_serving(pred, tmp_path / "serving", MEAN, STD, id_images=val_u8)
    return tmp_path / "serving", head, pred, val_u8


def test_threshold_lets_95_percent_of_id_pass(exported):
    _, head, pred, val_u8 = exported
    out = head(val_u8)
    passed = 1.0 - np.asarray(out["is_ood"]).mean()
    assert passed >= 0.95
    assert passed < 0.95 + 2 / len(val_u8)  # not a looser threshold than needed
    s = np.sort(np.arange(100.0))
    assert threshold_at_tpr(s, 0.95) == 5.0


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
    # normalisation happens inside: same as the predictor on normalised floats
    direct = pred.predict((images.astype("float32") - MEAN[0]) / STD[0])
    np.testing.assert_allclose(got["outputs"]["amp_score"], direct["amp_score"], atol=1e-5)


def test_export_bad_arguments(tmp_path, rng):
    model = tiny_backbone(h=8, w=8, c=1, n=4)
    pred = AnchoredPredictor(model, rng.normal(size=(3, 8, 8, 1)).astype("float32"))
    with pytest.raises(ValueError, match="exactly one"):
        export_for_serving(pred, tmp_path / "a", MEAN, STD)
    with pytest.raises(ValueError, match="uint8"):
        export_for_serving(pred, tmp_path / "a", MEAN, STD, id_images=np.zeros((4, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="std"):
        export_for_serving(pred, tmp_path / "a", MEAN, [0.0], threshold=1.0)
    with pytest.raises(TypeError, match="AnchoredPredictor"):
        export_for_serving(model, tmp_path / "a", MEAN, STD, threshold=1.0)
