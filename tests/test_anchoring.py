import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf.method.anchoring import AnchoredModel, anchor_inputs, permute_batch, replica_seed
from amp_tf.method.augment import PRESETS, ConsistencyAugment, resolve
from tests.helpers import tiny_backbone


def _mean_channels_backbone(c=1):
    """'Logits' = spatial mean of each input channel: exposes what the backbone sees."""
    inp = keras.Input((6, 6, 2 * c))
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(inp))


def _constant_images(n=8, c=1):
    """Constant raw-pixel images with distinct whole-number values 0, 30, ..., 210."""
    vals = np.arange(n, dtype="float32") * 30
    return np.ones((n, 6, 6, c), "float32") * vals[:, None, None, None], vals


@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (20.0, 4.0)])
def test_call_anchors_raw_images_with_clean_residual(mean, std):
    """rows = [(T(c) - mean) / std, (x - c) / std]; mean 0 / std 1 is the identity."""
    x, vals = _constant_images()
    model = AnchoredModel(_mean_channels_backbone(), consistency="color_jitter", mean=mean, std=std)
    for apply_t in (False, True):
        out = model(x, seed=tf.constant([3, 4], tf.int64), apply_consistency=apply_t).numpy()
        residual = out[:, 1] * std  # back to pixel units
        anchors = vals - residual  # clean anchor c = x - (x - c)
        # every anchor is an image of the same batch, the set of anchors is a permutation
        np.testing.assert_allclose(np.sort(anchors), np.sort(vals), atol=1e-4)
        if not apply_t:  # anchor channel = normalised clean c
            np.testing.assert_allclose(out[:, 0], (anchors - mean) / std, atol=1e-4)
    # with T: anchor channel differs from the clean anchor for some samples, residual unchanged
    off = model(x, seed=tf.constant([3, 4], tf.int64), apply_consistency=False).numpy()
    on = model(x, seed=tf.constant([3, 4], tf.int64), apply_consistency=True).numpy()
    np.testing.assert_allclose(on[:, 1], off[:, 1], atol=1e-6)
    assert np.abs(on[:, 0] - off[:, 0]).max() > 1e-3
    # uint8 pixels give the same rows as the same values in float32
    np.testing.assert_allclose(
        model(x.astype("uint8"), seed=tf.constant([3, 4], tf.int64)).numpy(), off, atol=1e-6)


def test_consistency_schedule():
    model = AnchoredModel(tiny_backbone(h=6, w=6), consistency_every=5)
    active = [bool(model.consistency_active(s)) for s in range(11)]
    assert active == [s % 5 == 0 for s in range(11)]
    off = AnchoredModel(tiny_backbone(h=6, w=6), consistency_every=0)
    assert off.consistency_active(0) is False
    none = AnchoredModel(tiny_backbone(h=6, w=6), consistency="none")
    assert none.consistency_active(5) is False


def test_permutation_depends_on_seed_and_replica():
    x = tf.range(32)
    a = permute_batch(x, replica_seed(0, 1)).numpy()
    b = permute_batch(x, replica_seed(0, 1)).numpy()
    c = permute_batch(x, replica_seed(0, 2)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(a) == list(range(32))


def test_replicas_draw_different_anchors():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    perms = strategy.run(lambda: permute_batch(tf.range(64), replica_seed(0, 7)))
    p0, p1 = (t.numpy() for t in strategy.experimental_local_results(perms))
    assert sorted(p0) == sorted(p1) == list(range(64))
    assert not np.array_equal(p0, p1)


def _toy_data(rng, n=96, c=1):
    """Raw pixels (float in 0..255) with a learnable class signal."""
    y = rng.integers(0, 4, n)
    x = rng.normal(100.0, 25.0, size=(n, 8, 8, c))
    x[..., 0] += y[:, None, None] * 35.0  # learnable signal
    return np.clip(x, 0, 255).astype("float32"), y


def _compile(model, lr=0.01):
    model.compile(
        keras.optimizers.SGD(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_fit_numpy_and_dataset(rng):
    x, y = _toy_data(rng)
    model = _compile(AnchoredModel(tiny_backbone(), consistency="all", consistency_every=2,
                                   mean=float(x.mean()), std=float(x.std())), lr=0.05)
    hist = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert set(hist.history) >= {"loss", "accuracy"}
    assert all(np.isfinite(hist.history["loss"]))
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    hist = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert model.optimizer.iterations.numpy() == 3 * 6 + 6
    res = model.evaluate(ds, verbose=0, return_dict=True)
    assert "accuracy" in res


def test_arrays_go_through_amp_tf_batches_with_keras_numbers(rng):
    """fit / evaluate / predict on numpy arrays use `array_batches` (tf.data without the autotuner, whose
    teardown stalls each epoch on a small machine): the same steps, numbers and validation as Keras' own."""
    from amp_tf.method import anchoring

    x, y = _toy_data(rng)  # 96 images
    model = _compile(AnchoredModel(tiny_backbone(), mean=float(x.mean()), std=float(x.std())), lr=0.05)
    hist = model.fit(x, y, batch_size=20, epochs=2, verbose=0, validation_data=(x[:30], y[:30]))
    assert model.optimizer.iterations.numpy() == 2 * 5  # ceil(96 / 20): the last batch partial, as Keras
    assert {"loss", "val_loss", "val_accuracy"} <= set(hist.history)
    batches = list(anchoring.array_batches(x, y, 32))  # what evaluate / predict feed: Keras' batches, in order
    assert [len(b[0]) for b in batches] == [32, 32, 32] and x.dtype == batches[0][0].dtype
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    assert np.isfinite(model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["loss"])
    assert model.predict(x[:50], batch_size=32, verbose=0).shape == (50, 4)
    with pytest.raises(ValueError, match="y: 90 labels for 96 images"):
        model.fit(x, y[:90], batch_size=20, verbose=0)
    ds = anchoring.array_batches(x, y, 32, shuffle=True)
    assert not ds.options().autotune.enabled
    first = [b[1].numpy().tolist() for b in ds]
    assert sorted(sum(first, [])) == sorted(y.tolist()) and first != [b[1].numpy().tolist() for b in ds]


def _ds(x, y, batch=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_one_input_contract_for_numpy_tensors_and_tf_data(rng):
    """The same first line for every entry point, before any training step."""
    x, y = _toy_data(rng, n=32)
    model = _compile(AnchoredModel(tiny_backbone(), mean=100.0, std=40.0))
    cases = [
        (lambda xx, yy: (xx, yy), "numpy"),
        (lambda xx, yy: (tf.constant(xx), tf.constant(yy)), "tensors"),
        (lambda xx, yy: (_ds(xx, yy), None), "tf.data"),
    ]
    mistakes = [
        ((x, y + 0.7), r"^y: labels must be whole-number class ids; got non-integer values \(e.g. 3.7\)"),
        ((x, y + 4), r"^y: labels must be class ids in \[0, 4\); got values in \[4, 7\]"),
        ((x / 255.0, y), r"^x: all values are in \[0, 1\] and fractional: this looks like `x / 255`"),
        ((x - 100.0, y), r"^x: contain negative values: this looks already normalised"),
        ((np.zeros((4, 10, 10, 1), "float32"), y[:4]), r"^x: expected \(batch, 8, 8, 1\), got \(4, 10, 10, 1\)"),
        ((x[:0], y[:0]), r"^x: (got an empty array|the dataset is empty)"),
    ]
    for wrap, kind in cases:
        for (xx, yy), pattern in mistakes:
            with pytest.raises(ValueError, match=pattern):
                model.fit(*wrap(xx, yy), verbose=0)
            assert model.optimizer.iterations.numpy() == 0, (kind, pattern)  # refused before any step


def test_tf_data_batches_after_the_first_fail_with_the_message_first(rng):
    x, y = _toy_data(rng, n=32)
    model = _compile(AnchoredModel(tiny_backbone(), mean=100.0, std=40.0))
    late = y.copy()
    late[-1] = 9
    with pytest.raises(ValueError, match=r"^y: labels must be class ids in \[0, 4\).*\(min \d, max 9\)$"):
        model.fit(_ds(x, late), verbose=0)
    frac = y.astype("float32")
    frac[-1] = 2.5
    with pytest.raises(ValueError, match=r"^y: labels must be whole-number class ids"):
        model.fit(_ds(x, frac), verbose=0)
    dark = x.copy()
    dark[-8:] = -1.0
    with pytest.raises(ValueError, match="^images: contain negative values"):
        model.fit(_ds(dark, y), verbose=0)
    hist = model.fit(_ds(x, y.astype("float32")), verbose=0)  # whole-number float labels are labels
    assert np.isfinite(hist.history["loss"][0])


def test_validation_data_is_checked_before_the_first_epoch(rng):
    x, y = _toy_data(rng, n=32)
    model = _compile(AnchoredModel(tiny_backbone(), mean=100.0, std=40.0))
    with pytest.raises(ValueError, match=r"^validation_data images: .*x / 255"):
        model.fit(x, y, validation_data=(x / 255.0, y), verbose=0)
    with pytest.raises(ValueError, match=r"^validation_data labels: labels must be class ids"):
        model.fit(x, y, validation_data=_ds(x, y + 4), verbose=0)
    assert model.optimizer.iterations.numpy() == 0
    with pytest.raises(ValueError, match=r"^x: .*x / 255"):
        model.predict(x / 255.0, verbose=0)


def test_fit_mirrored_two_replicas(rng):
    x, y = _toy_data(rng, n=64)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _compile(AnchoredModel(tiny_backbone(), consistency_every=2, mean=100.0, std=40.0))
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    assert "accuracy" in hist.history


def test_bad_inputs(rng):
    x, y = _toy_data(rng, n=32)
    model = _compile(AnchoredModel(tiny_backbone()))
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 4\)"):
        model.fit(x, y + 3, verbose=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y - 1)).batch(8)
    with pytest.raises(ValueError, match=r"y: labels must be class ids in \[0, 4\)"):
        model.fit(ds, verbose=0)
    # not raw pixels: clear errors up front (fit) and in-graph (call)
    with pytest.raises(ValueError, match="looks already normalised"):
        model.fit((x - 127.5) / 127.5, y, verbose=0)
    with pytest.raises(ValueError, match=r"looks like `x / 255`"):
        model.fit(x / 255.0, y, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="looks already normalised"):
        model((x[:4] - 127.5) / 127.5)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"looks like `x / 255`"):
        model(x[:4] / 255.0)
    with pytest.raises(ValueError, match="2 channels"):
        model(np.zeros((2, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="rank 4"):
        model(np.zeros((2, 8, 8), "float32"))
    odd_in = keras.Input((8, 8, 3))
    odd = keras.Model(odd_in, keras.layers.Dense(2)(keras.layers.Flatten()(odd_in)))
    with pytest.raises(ValueError, match="even channel count"):
        AnchoredModel(odd)
    with pytest.raises(TypeError, match="keras.Model"):
        AnchoredModel("resnet")
    with pytest.raises(ValueError, match="consistency_every"):
        AnchoredModel(tiny_backbone(), consistency_every=-1)
    with pytest.raises(ValueError, match="unknown transform"):
        AnchoredModel(tiny_backbone(), consistency="sharpen")


def test_keras_round_trip(tmp_path, rng):
    x, y = _toy_data(rng, n=32)
    model = _compile(AnchoredModel(tiny_backbone(), consistency="flip+blur", consistency_every=3,
                                   mean=90.0, std=45.0, check_pixels=False, seed=11))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, AnchoredModel)
    assert loaded.consistency_every == 3 and loaded.seed == 11
    assert loaded.augment.names == ("flip", "blur")
    # the statistics and the check flag travel with the model
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.normalizer.mean), [90.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.normalizer.std), [45.0])
    assert loaded.normalizer.check is False
    seed = tf.constant([5, 6], tf.int64)
    np.testing.assert_allclose(model(x[:8], seed=seed), loaded(x[:8], seed=seed), atol=1e-5)
    rows = anchor_inputs(x[:8], x[8:16])
    np.testing.assert_allclose(model.backbone(rows), loaded.backbone(rows), atol=1e-6)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_augment_presets_shape_range_determinism(preset, rng):
    for c in (1, 3):
        x = rng.uniform(-1, 1, (6, 12, 12, c)).astype("float32")
        t = ConsistencyAugment(preset, value_range=(-1.0, 1.0))
        a = t(x, seed=[1, 2]).numpy()
        b = t(x, seed=[1, 2]).numpy()
        assert a.shape == x.shape
        np.testing.assert_array_equal(a, b)
        assert a.min() >= -1.0 - 1e-5 and a.max() <= 1.0 + 1e-5
        if preset == "none":
            np.testing.assert_array_equal(a, x)
        else:
            assert np.abs(a - x).max() > 1e-3
            assert not np.array_equal(a, t(x, seed=[5, 6]).numpy())


def test_augment_per_sample_and_names():
    x = np.tile(np.linspace(-1, 1, 16, dtype="float32")[None, None, :, None], (32, 16, 1, 1))
    out = ConsistencyAugment("flip", value_range=(-1.0, 1.0))(x, seed=[0, 1]).numpy()
    flipped = np.array([np.allclose(o, x[0][:, ::-1]) for o in out])
    assert 0 < flipped.sum() < 32  # per-sample decisions
    assert resolve("all") == ("resized_crop", "flip", "color_jitter", "blur", "grayscale")
    assert resolve(["blur"]) == ("blur",)
    with pytest.raises(ValueError, match="value_range"):
        ConsistencyAugment("all", value_range=(1.0, -1.0))


def test_one_vs_two_replicas_same_sgd_step(rng):
    """compute_loss scales per replica: the same global batch gives the same update.

    All images are identical, so every anchor is the same image whatever the
    permutation (the anchored input is [x, 0] on 1 or 2 replicas alike).
    """
    x = np.repeat(rng.uniform(0, 255, size=(1, 8, 8, 1)).astype("float32"), 16, axis=0)
    y = rng.integers(0, 4, 16)
    weights = []
    for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
        strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            model = _compile(AnchoredModel(tiny_backbone(seed=3), consistency_every=0), lr=0.5)
        before = [w.copy() for w in model.backbone.get_weights()]
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        weights.append(model.backbone.get_weights())
    for a, b, w0 in zip(*weights, before):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert any(np.abs(a - w0).max() > 1e-4 for a, w0 in zip(weights[0], before))


def test_crop_resize_matches_tf_crop_and_resize(rng):
    from amp_tf.method.augment import crop_resize

    x = rng.normal(size=(5, 12, 10, 3)).astype("float32")
    y0 = rng.uniform(0, 0.5, 5)
    x0 = rng.uniform(0, 0.5, 5)
    boxes = np.stack([y0, x0, y0 + rng.uniform(0.3, 0.5, 5), x0 + rng.uniform(0.3, 0.5, 5)], 1).astype("float32")
    ref = tf.image.crop_and_resize(x, boxes, tf.range(5), (12, 10)).numpy()
    np.testing.assert_allclose(crop_resize(tf.constant(x), tf.constant(boxes)).numpy(), ref, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("jit,mixed", [(True, False), (False, True)])
def test_fit_with_xla_and_mixed_precision(rng, jit, mixed):
    from amp_tf.method.predictor import AnchoredPredictor
    from amp_tf.run.training import TrainConfig, train

    x, y = _toy_data(rng, n=64)
    x = np.repeat(np.repeat(x, 3, axis=1), 3, axis=2)[:, :28, :28]  # 28x28 for resnet_small
    cfg = TrainConfig(arch="resnet_small", epochs=1, batch_size=16, backbone_kwargs={"width": 4},
                      jit_compile=jit, mixed_precision=mixed, consistency_every=1)
    try:
        model, hist = train(cfg, x, y, 4, verbose=0)
        assert np.isfinite(hist.history["loss"][0])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model.normalizer.mean), [x.mean()], rtol=1e-2)
        out = AnchoredPredictor.from_model(model, x[:3]).predict(x[:4])
        assert out["logits"].dtype == np.float32 and out["tau"].dtype == np.float32
        assert np.all(np.isfinite(out["amp_score"]))
    finally:
        keras.mixed_precision.set_global_policy("float32")
