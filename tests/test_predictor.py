import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf.method.predictor import AnchoredPredictor, select_anchors
from tests.helpers import linear_backbone, linear_logits_numpy, pixel_images, tiny_backbone

STATS = dict(mean=127.5, std=127.5)  # pixel statistics where any will do


def _data(rng, n=12, h=4, w=4, c=1):
    """Raw pixels, float in [0, 255]."""
    return pixel_images(rng, (n, h, w, c))


def _reference(model, x, anchors, reduction, calibration, mean=0.0, std=1.0, eps=1e-6):
    p = linear_logits_numpy(model, x, anchors, mean, std)  # (K, B, N)
    h = p.mean(0)
    std = (1 / (1 + np.exp(-p))).std(0, ddof=1)
    tau = std.mean(-1) if reduction == "mean" else std.sum(-1)
    hc = h / (1 + np.exp(tau))[:, None] if calibration == "exp" else h / np.maximum(tau, eps)[:, None]
    log_sm = hc - np.log(np.exp(hc).sum(-1, keepdims=True))
    return h, tau, hc, -log_sm.mean(-1)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("calibration", ["exp", "divide"])
@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (127.5, 127.5), (90.0, 60.0)])
def test_outputs_match_numpy_reference(rng, reduction, calibration, mean, std):
    """mean 0 / std 1 is the identity (explicitly); the reference normalises."""
    model = linear_backbone()
    if mean == 0.0:  # keep logits moderate in pixel units
        model.layers[-1].kernel.assign(model.layers[-1].kernel / 255.0)
    x = _data(rng)
    anchors = select_anchors(_data(rng, 30), 5, seed=1)
    out = AnchoredPredictor(model, anchors, tau_reduction=reduction, calibration=calibration,
                            mean=mean, std=std).predict(x)
    h, tau, hc, amp = _reference(model, x, anchors, reduction, calibration, mean, std)
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
    x = pixel_images(rng, (7, 8, 8, 1))
    anchors = select_anchors(pixel_images(rng, (20, 8, 8, 1)), 4)
    pred = AnchoredPredictor(model, anchors, mean=100.0, std=50.0)
    tiled = pred.per_anchor_logits(x).numpy()
    xn, cn = (x - 100.0) / 50.0, (anchors - 100.0) / 50.0  # the predictor normalises both
    loop = np.stack([model(np.concatenate([np.broadcast_to(c, x.shape), xn - c], -1)).numpy() for c in cn])
    np.testing.assert_allclose(tiled, loop, atol=1e-5)
    chunked = AnchoredPredictor(model, anchors, max_batch=5, mean=100.0, std=50.0).predict(x)
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
    imgs = pixel_images(rng, (10, 8, 8, 1))
    with pytest.raises(ValueError, match="K >= 2"):
        select_anchors(imgs, 1)
    with pytest.raises(ValueError, match="whole number; got 5.7"):  # never silently 5
        select_anchors(np.zeros((10, 4, 4, 1), "uint8"), 5.7)
    with pytest.raises(ValueError, match="K >= 2"):
        AnchoredPredictor(model, imgs[:1], **STATS)
    with pytest.raises(ValueError, match="shape"):
        AnchoredPredictor(model, imgs[0], **STATS)
    with pytest.raises(ValueError, match="channels|channel"):
        AnchoredPredictor(model, np.repeat(imgs[:3], 3, axis=-1), **STATS)
    with pytest.raises(ValueError, match="tau_reduction"):
        AnchoredPredictor(model, imgs[:3], tau_reduction="median", **STATS)
    with pytest.raises(ValueError, match="calibration"):
        AnchoredPredictor(model, imgs[:3], calibration="log", **STATS)
    pred = AnchoredPredictor(model, imgs[:3], **STATS)
    with pytest.raises(ValueError, match="rank 4|\\(N, H, W, C\\)"):
        pred.predict(imgs[0])
    with pytest.raises(ValueError, match="like the anchors"):
        pred.predict(np.repeat(imgs, 3, axis=-1))
    with pytest.raises(ValueError, match="like the anchors"):
        pred.predict(pixel_images(rng, (2, 9, 9, 1)))
    bad = imgs.copy()
    bad[4, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf.*index 4"):
        pred.predict(bad)
    with pytest.raises(TypeError, match="dtype"):
        pred.predict(np.zeros((2, 8, 8, 1), np.complex64))
    # not raw pixels: already normalised, or divided by 255 (eager and in-graph)
    with pytest.raises(ValueError, match="looks already normalised"):
        pred.predict((imgs - 127.5) / 127.5)
    with pytest.raises(ValueError, match=r"looks like `x / 255`"):
        pred.predict(imgs / 255.0)
    with pytest.raises(ValueError, match="above 255"):
        pred.predict(imgs + 300.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="looks already normalised"):
        pred(tf.constant((imgs - 127.5) / 127.5))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"looks like `x / 255`"):
        pred(tf.constant(imgs / 255.0))
    with pytest.raises(ValueError, match=r"anchors: .*looks like `x / 255`"):
        AnchoredPredictor(model, imgs[:3] / 255.0, **STATS)
    with pytest.raises(ValueError, match="looks already normalised"):
        select_anchors(imgs - 127.5, 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):  # statistics of x / 255
        AnchoredPredictor(model, imgs[:3], mean=0.5, std=0.25)
    with pytest.raises(ValueError, match="empty"):
        pred.predict(imgs[:0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        pred(tf.constant(bad))


def test_keras_round_trip(tmp_path, rng):
    model = tiny_backbone(c=1)
    anchors = select_anchors(pixel_images(rng, (20, 8, 8, 1)), 3)
    pred = AnchoredPredictor(model, anchors, tau_reduction="sum", calibration="divide",
                             mean=80.0, std=70.0)
    inp = keras.Input((8, 8, 1))
    wrapper = keras.Model(inp, pred(inp))
    path = tmp_path / "pred.keras"
    wrapper.save(path)
    loaded = keras.models.load_model(path)
    x = pixel_images(rng, (5, 8, 8, 1))
    a, b = wrapper(x), loaded(x)
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=1e-6, err_msg=key)
    layer = [l for l in loaded.layers if isinstance(l, AnchoredPredictor)][0]
    np.testing.assert_array_equal(layer.anchors.numpy(), anchors)
    assert layer.tau_reduction == "sum" and layer.calibration == "divide"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.normalizer.mean), [80.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.normalizer.std), [70.0])


def test_uint8_equals_float32_pixels(rng):
    model = tiny_backbone(c=1)
    anchors_u8 = pixel_images(rng, (4, 8, 8, 1), np.uint8)
    x_u8 = pixel_images(rng, (6, 8, 8, 1), np.uint8)
    pred = AnchoredPredictor(model, anchors_u8, mean=100.0, std=50.0)  # uint8 anchors are accepted
    np.testing.assert_array_equal(pred.anchors.numpy(), anchors_u8.astype("float32"))
    from_u8 = pred.predict(x_u8)
    from_f32 = pred.predict(x_u8.astype("float32"))
    for key in from_f32:
        np.testing.assert_allclose(from_u8[key], from_f32[key], atol=1e-6, err_msg=key)
    # the float twin built from float anchors agrees too
    twin = AnchoredPredictor(model, anchors_u8.astype("float32"), mean=100.0, std=50.0)
    np.testing.assert_allclose(twin.predict(x_u8)["amp_score"], from_u8["amp_score"], atol=1e-6)
    # and the scores depend on the input (a constant function would pass the checks above)
    assert np.std(from_u8["amp_score"]) > 0


def test_normalised_or_scaled_input_is_refused(rng):
    model = tiny_backbone(c=1)
    mean, std = 100.0, 50.0
    pred = AnchoredPredictor(model, pixel_images(rng, (3, 8, 8, 1)), mean=mean, std=std)
    x = pixel_images(rng, (4, 8, 8, 1), np.uint8)
    pred.predict(x)  # raw pixels pass
    with pytest.raises(ValueError, match=r"looks like `x / 255`"):
        pred.predict(x / 255.0)
    with pytest.raises(ValueError, match=r"looks already normalised \(\(x - mean\) / std\)"):
        pred.predict((x - mean) / std)
    # check_pixels=False: the user's own preprocessing is taken as is
    free = AnchoredPredictor(model, pixel_images(rng, (3, 8, 8, 1)), mean=mean, std=std,
                             check_pixels=False)
    assert np.all(np.isfinite(free.predict((x - mean) / std)["amp_score"]))


def test_from_model_takes_the_statistics(rng):
    from amp_tf.method.anchoring import AnchoredModel

    model = AnchoredModel(tiny_backbone(c=1), mean=60.0, std=30.0, check_pixels=False)
    anchors = pixel_images(rng, (3, 8, 8, 1))
    pred = AnchoredPredictor.from_model(model, anchors)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pred.normalizer.mean), [60.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pred.normalizer.std), [30.0])
    assert pred.normalizer.check is False
    x = pixel_images(rng, (5, 8, 8, 1))
    direct = AnchoredPredictor(model.backbone, anchors, mean=60.0, std=30.0).predict(x)
    np.testing.assert_allclose(pred.predict(x)["amp_score"], direct["amp_score"], atol=1e-6)
    with pytest.raises(TypeError, match="AnchoredModel"):
        AnchoredPredictor.from_model(model.backbone, anchors)
    # the AnchoredModel itself carries its statistics: the constructor takes them from it
    own = AnchoredPredictor(model, anchors, check_pixels=False)
    np.testing.assert_allclose(own.predict(x)["amp_score"], direct["amp_score"], atol=1e-6)


def test_a_bare_backbone_without_statistics_is_refused(rng):
    """No silent 127.5 / 127.5: mean and std are given, taken from the model, or identity on request."""
    model = tiny_backbone(c=1)
    anchors = pixel_images(rng, (3, 8, 8, 1))
    for kwargs, given in [({}, "neither"), ({"mean": 60.0}, "mean only"), ({"std": 30.0}, "std only")]:
        with pytest.raises(ValueError, match=r"^mean/std: .*from_model.*mean=0, std=1.*Got " + given):
            AnchoredPredictor(model, anchors, **kwargs)
    identity = AnchoredPredictor(model, anchors, mean=0, std=1)
    np.testing.assert_allclose(identity.normalizer.mean.numpy(), [0.0])
    np.testing.assert_allclose(identity.normalizer.std.numpy(), [1.0])
    # a saved predictor carries its statistics: the config round trip needs none
    clone = AnchoredPredictor.from_config(identity.get_config())
    np.testing.assert_allclose(clone.normalizer.std.numpy(), [1.0])


# ------------------------------------------------------------------ anchor strategies
def _pool_setup():
    from amp_tf.method.anchoring import AnchoredModel

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (120, 8, 8, 1)).astype("uint8")
    model = AnchoredModel(tiny_backbone(), mean=90.0, std=60.0)
    model(x[:2])
    return model, x


def test_per_image_anchors_depend_on_the_image_only():
    model, x = _pool_setup()
    pool = select_anchors(x, 30, seed=1)
    pred = AnchoredPredictor.from_model(model, pool, anchor_mode="per_image", num_anchors=5, anchor_seed=3)
    assert pred.num_anchors == 5
    idx = pred.anchor_indices(x[:16]).numpy()
    assert idx.shape == (16, 5) and all(len(set(r)) == 5 for r in idx) and idx.max() < 30
    assert len({tuple(sorted(r)) for r in idx}) > 1  # different images, different anchors
    a = pred.predict(x[:16])["amp_score"]
    b = pred.predict(x[:16][::-1], batch_size=5)["amp_score"][::-1]  # other order, other batches
    np.testing.assert_allclose(a, b, rtol=1e-5)
    for i in (0, 7):  # equals the fixed predictor with that image's own anchors
        ref = AnchoredPredictor.from_model(model, pool[idx[i]]).predict(x[i:i + 1])["amp_score"][0]
        assert a[i] == pytest.approx(ref, rel=1e-5)
    other = AnchoredPredictor.from_model(model, pool, anchor_mode="per_image", num_anchors=5, anchor_seed=4)
    assert not np.array_equal(other.anchor_indices(x[:16]).numpy(), idx)  # the seed matters


def test_per_image_config_round_trip_and_errors():
    model, x = _pool_setup()
    pool = select_anchors(x, 30, seed=1)
    pred = AnchoredPredictor.from_model(model, pool, anchor_mode="per_image", num_anchors=4, anchor_seed=2)
    want = pred.predict(x[:10])["amp_score"]
    back = AnchoredPredictor.from_config(pred.get_config())
    back(x[:2].astype("float32"))
    back.set_weights(pred.get_weights())
    np.testing.assert_allclose(back.predict(x[:10])["amp_score"], want, rtol=1e-6)
    with pytest.raises(ValueError, match="2 <= K <= 30"):
        AnchoredPredictor.from_model(model, pool, anchor_mode="per_image", num_anchors=31)
    with pytest.raises(ValueError, match="anchor_mode"):
        AnchoredPredictor.from_model(model, pool, anchor_mode="random")


def test_class_stratified_anchor_selection():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 4, 4, 1)).astype("uint8")
    labels = np.repeat(np.arange(10), 20)
    for k in (10, 13):
        chosen = select_anchors(x, k, seed=5, labels=labels)
        rows = {bytes(c.astype("uint8").tobytes()): i for i, c in enumerate(x)}
        classes = labels[[rows[bytes(c.astype("uint8").tobytes())] for c in chosen]]
        counts = np.bincount(classes, minlength=10)
        assert counts.min() >= 1 and counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(select_anchors(x, 10, seed=5, labels=labels),
                                  select_anchors(x, 10, seed=5, labels=labels))
    with pytest.raises(ValueError, match="labels"):
        select_anchors(x, 5, labels=labels[:10])
