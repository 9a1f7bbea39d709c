import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf.predictor import AnchoredPredictor, select_anchors
from tests.helpers import linear_backbone, linear_logits_numpy, tiny_backbone


def _data(rng, n=12, h=4, w=4, c=1):
    return rng.normal(size=(n, h, w, c)).astype("float32")


def _reference(model, x, anchors, reduction, calibration, eps=1e-6):
    p = linear_logits_numpy(model, x, anchors)  # (K, B, N)
    h = p.mean(0)
    std = (1 / (1 + np.exp(-p))).std(0, ddof=1)
    tau = std.mean(-1) if reduction == "mean" else std.sum(-1)
    hc = h / (1 + np.exp(tau))[:, None] if calibration == "exp" else h / np.maximum(tau, eps)[:, None]
    log_sm = hc - np.log(np.exp(hc).sum(-1, keepdims=True))
    return h, tau, hc, -log_sm.mean(-1)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("calibration", ["exp", "divide"])
def test_outputs_match_numpy_reference(rng, reduction, calibration):
    model = linear_backbone()
    x = _data(rng)
    anchors = select_anchors(_data(rng, 30), 5, seed=1)
    out = AnchoredPredictor(model, anchors, tau_reduction=reduction, calibration=calibration).predict(x)
    h, tau, hc, amp = _reference(model, x, anchors, reduction, calibration)
    np.testing.assert_allclose(out["logits"], h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["tau"], tau, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["calibrated_logits"], hc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["amp_score"], amp, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["predicted_class"], h.argmax(-1))
    # msp / energy are on the calibrated logits
    sm = np.exp(hc) / np.exp(hc).sum(-1, keepdims=True)
    np.testing.assert_allclose(out["msp"], sm.max(-1), rtol=1e-4)
    np.testing.assert_allclose(out["energy"], np.log(np.exp(hc).sum(-1)), rtol=1e-4, atol=1e-5)


def test_tiled_equals_python_loop_and_chunking(rng):
    model = tiny_backbone(c=1)
    x = rng.normal(size=(7, 8, 8, 1)).astype("float32")
    anchors = select_anchors(rng.normal(size=(20, 8, 8, 1)).astype("float32"), 4)
    pred = AnchoredPredictor(model, anchors)
    tiled = pred.per_anchor_logits(x).numpy()
    loop = np.stack([model(np.concatenate([np.broadcast_to(c, x.shape), x - c], -1)).numpy() for c in anchors])
    np.testing.assert_allclose(tiled, loop, atol=1e-5)
    chunked = AnchoredPredictor(model, anchors, max_batch=5).predict(x)
    full = pred.predict(x)
    for key in full:
        np.testing.assert_allclose(chunked[key], full[key], atol=1e-5, err_msg=key)


def test_select_anchors_deterministic_and_distinct(rng):
    imgs = np.arange(50, dtype="float32").reshape(50, 1, 1, 1) * np.ones((1, 2, 2, 1), "float32")
    a = select_anchors(imgs, 10, seed=3)
    b = select_anchors(imgs, 10, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len({float(v) for v in a[:, 0, 0, 0]}) == 10
    assert not np.array_equal(a, select_anchors(imgs, 10, seed=4))


def test_bad_inputs_raise(rng):
    model = tiny_backbone(c=1)
    imgs = rng.normal(size=(10, 8, 8, 1)).astype("float32")
    with pytest.raises(ValueError, match="k >= 2|at least 2"):
        select_anchors(imgs, 1)
    with pytest.raises(ValueError, match="K >= 2"):
        AnchoredPredictor(model, imgs[:1])
    with pytest.raises(ValueError, match="shape"):
        AnchoredPredictor(model, imgs[0])
    with pytest.raises(ValueError, match="channels|channel"):
        AnchoredPredictor(model, np.repeat(imgs[:3], 3, axis=-1))
    with pytest.raises(ValueError, match="tau_reduction"):
        AnchoredPredictor(model, imgs[:3], tau_reduction="median")
    with pytest.raises(ValueError, match="calibration"):
        AnchoredPredictor(model, imgs[:3], calibration="log")
    pred = AnchoredPredictor(model, imgs[:3])
    with pytest.raises(ValueError, match="rank 4|\\(N, H, W, C\\)"):
        pred.predict(imgs[0])
    with pytest.raises(ValueError, match="like the anchors"):
        pred.predict(np.repeat(imgs, 3, axis=-1))
    with pytest.raises(ValueError, match="like the anchors"):
        pred.predict(rng.normal(size=(2, 9, 9, 1)).astype("float32"))
    bad = imgs.copy()
    bad[4, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf.*index 4"):
        pred.predict(bad)
    with pytest.raises(TypeError, match="dtype"):
        pred.predict(np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        pred.predict(imgs[:0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        pred(tf.constant(bad))


def test_keras_round_trip(tmp_path, rng):
    model = tiny_backbone(c=1)
    anchors = select_anchors(rng.normal(size=(20, 8, 8, 1)).astype("float32"), 3)
    pred = AnchoredPredictor(model, anchors, tau_reduction="sum", calibration="divide")
    inp = keras.Input((8, 8, 1))
    wrapper = keras.Model(inp, pred(inp))
    path = tmp_path / "pred.keras"
    wrapper.save(path)
    loaded = keras.models.load_model(path)
    x = rng.normal(size=(5, 8, 8, 1)).astype("float32")
    a, b = wrapper(x), loaded(x)
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=1e-6, err_msg=key)
    layer = [l for l in loaded.layers if isinstance(l, AnchoredPredictor)][0]
    np.testing.assert_array_equal(layer.anchors.numpy(), anchors)
    assert layer.tau_reduction == "sum" and layer.calibration == "divide"
