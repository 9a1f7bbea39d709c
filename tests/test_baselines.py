"""Tests for amp_tf.detection.baselines: Mahalanobis, Gram matrices, temperature scaling,
MC dropout, deep ensembles, their registration and scoring through `amp_tf.detection.detectors`."""
import warnings

import keras
import numpy as np
import pytest
from scipy.special import softmax

import amp_tf.detection.baselines as bl
from amp_tf.detection import detectors
from amp_tf.method import scores
from amp_tf.detection.baselines import _common
from amp_tf.detection.baselines.gram import deviation
from amp_tf.models import build_backbone


# --------------------------------------------------------------------------- #
# models
# --------------------------------------------------------------------------- #
def vector_model(num_classes=3, seed=0):
    """Input(2) -> identity Dense "features" -> Dense "logits": features == inputs."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((2,))
    f = keras.layers.Dense(2, kernel_initializer="identity", bias_initializer="zeros",
                           name="features")(inp)
    out = keras.layers.Dense(num_classes, name="logits")(f)
    return keras.Model(inp, out)


def conv_model(seed=0, num_classes=3):
    """Two conv blocks with ReLU outputs named *_out (the Gram default layers)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", name="stem_conv")(inp)
    h = keras.layers.ReLU(name="block1_out")(h)
    h = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="block2_conv")(h)
    h = keras.layers.ReLU(name="block2_out")(h)
    f = keras.layers.GlobalAveragePooling2D(name="features")(h)
    out = keras.layers.Dense(num_classes, name="logits")(f)
    return keras.Model(inp, out)


def dropout_bn_model(seed=0, rate=0.5):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,))
    h = keras.layers.Dense(16, name="dense")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Dropout(rate, name="drop")(h)
    out = keras.layers.Dense(3, name="logits")(h)
    m = keras.Model(inp, out)
    bn = m.get_layer("bn")  # non-trivial moving statistics
    bn.moving_mean.assign(np.linspace(-1, 1, 16).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2, 16).astype("float32"))
    return m


@pytest.fixture(scope="module")
def small_resnet():
    return build_backbone("resnet_small", (8, 8, 1), 3, anchored=False, width=4, dropout=0.3)


def blobs(rng, n=60):
    """Three 2-D Gaussian classes with different shapes."""
    means = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    y = np.arange(n) % 3
    x = means[y] + rng.normal(size=(n, 2)) * np.array([1.0, 0.5])
    return x.astype("float32"), y


# --------------------------------------------------------------------------- #
# Mahalanobis
# --------------------------------------------------------------------------- #
def maha_by_hand(x, y, q):
    x, q = np.asarray(x, np.float64), np.asarray(q, np.float64)
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    cov = sum((x[y == c] - means[c]).T @ (x[y == c] - means[c]) for c in range(3)) / len(x)
    prec = np.linalg.inv(cov)
    d = np.stack([np.einsum("nd,de,ne->n", q - m, prec, q - m) for m in means], axis=1)
    return means, cov, prec, d


def test_mahalanobis_matches_hand_computation(rng):
    x, y = blobs(rng)
    q = np.array([[0.1, 0.2], [3.5, -0.4], [20.0, -15.0], [-30.0, 40.0]], "float32")
    maha = scores.get("mahalanobis").fit(vector_model(), x, y)
    means, cov, prec, d = maha_by_hand(x, y, q)
    np.testing.assert_allclose(maha.means_, means, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(maha.covariance_, cov, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maha.precision_, prec, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(maha.distances(q), d, rtol=1e-4, atol=1e-4)
    s = maha(q)
    assert s.shape == (4,)
    np.testing.assert_allclose(s, -d.min(axis=1), rtol=1e-4, atol=1e-4)
    # ID points score higher than far-away points
    s_id = maha(x)
    assert s_id.min() > s[2:].max()
    # one-hot labels give the same fit
    np.testing.assert_allclose(
        bl.Mahalanobis().fit(vector_model(), x, np.eye(3)[y]).means_, maha.means_)


def test_mahalanobis_ridge_regularises_covariance(rng):
    x, y = blobs(rng)
    maha = bl.Mahalanobis(ridge=0.1).fit(vector_model(), x, y)
    cov = maha.covariance_
    ref = np.linalg.inv(cov + 0.1 * np.trace(cov) / 2 * np.eye(2))
    np.testing.assert_allclose(maha.precision_, ref, rtol=1e-6)


def test_mahalanobis_perturbation(rng):
    # pixel-scale blobs (a 255 * eps step is small against their spread); the last query
    # sits next to 0 near class 2 (mean x ~ -2), so its pixel-unit step would cross 0: clipped
    x, y = blobs(rng)
    x = 10.0 * x
    q = np.array([[5.0, 4.0], [30.0, 10.0], [10.0, 30.0], [1.0, 40.0]], "float32")
    maha = bl.Mahalanobis().fit(vector_model(), x, y)
    # eps = 0 is exactly no perturbation, whichever way it is given
    np.testing.assert_array_equal(bl.Mahalanobis(epsilon=0.0).fit(vector_model(), x, y)(q),
                                  maha(q))
    np.testing.assert_array_equal(maha(q, epsilon=0.0), maha(q))
    eps = 0.01
    # features == inputs: grad_x d_c^ = 2 Sigma^-1 (x - mu_c^), step against its sign,
    # in pixel units (eps is in [0, 1] image units) and clipped to [0, 255]
    d = maha.distances(q)
    c = d.argmin(axis=1)
    grad = 2 * (q - maha.means_[c]) @ maha.precision_
    unclipped = q - 255.0 * eps * np.sign(grad)
    x_tilde = np.clip(unclipped, 0.0, 255.0)
    assert np.any(x_tilde != unclipped)  # the clipping is exercised
    np.testing.assert_allclose(maha.perturb(q, eps), x_tilde, atol=1e-5)
    pert = maha(q, epsilon=eps)
    np.testing.assert_allclose(pert, -maha.distances_from_features(x_tilde).min(1),
                               rtol=1e-4, atol=1e-4)
    assert np.all(pert > maha(q))  # moved towards the closest class
    # the default epsilon is used when none is given
    np.testing.assert_allclose(bl.Mahalanobis(epsilon=eps).fit(vector_model(), x, y)(q), pert,
                               rtol=1e-6)


def test_mahalanobis_on_image_model_and_spatial_layer(rng, small_resnet):
    x = rng.uniform(0, 255, size=(24, 8, 8, 1)).astype("float32")  # raw pixels
    y = np.arange(24) % 3
    maha = bl.Mahalanobis().fit(small_resnet, x, y)
    assert maha.means_.shape == (3, 16)
    s = maha(x)
    assert s.shape == (24,) and np.all(np.isfinite(s)) and np.all(s <= 0)
    spatial = bl.Mahalanobis(layer="stage1_block1_out").fit(small_resnet, x, y)
    assert spatial.means_.shape == (3, 4)  # spatial mean of the 4-channel map
    with pytest.raises(ValueError, match="no layer named"):
        bl.Mahalanobis(layer="nope").fit(small_resnet, x, y)
    with pytest.raises(RuntimeError, match="not fitted"):
        bl.Mahalanobis()(x)


# --------------------------------------------------------------------------- #
# Gram matrices
# --------------------------------------------------------------------------- #
def test_gram_deviation_hand_values():
    np.testing.assert_allclose(deviation([1.5, 1.0, 4.0], 1.0, 4.0, eps=0.0), [0, 0, 0])
    # below: (mn - v)/|mn|, above: (v - mx)/|mx|
    np.testing.assert_allclose(deviation([0.5, 6.0], 1.0, 4.0, eps=0.0), [0.5, 0.5])
    np.testing.assert_allclose(deviation([-3.0, 1.0], -2.0, -1.0, eps=0.0), [0.5, 2.0])
    # eps guard: mn == 0 stays finite
    assert deviation(-1.0, 0.0, 1.0, eps=1e-6) == pytest.approx(1e6)
    np.testing.assert_allclose(deviation([0.5], 1.0, 4.0, eps=1.0), [0.25])


def _gram_rows_by_hand(fmap, p):
    f = np.asarray(fmap, np.float64).reshape(-1, fmap.shape[-1]) ** p  # (positions, C)
    g = (f.T @ f).sum(axis=1)  # row sums of the C x C Gram matrix
    return np.sign(g) * np.abs(g) ** (1.0 / p)


def test_gram_features_match_hand_computation(rng):
    model = conv_model()
    x = rng.normal(size=(5, 6, 6, 1)).astype("float32")
    assert bl.default_gram_layers(model) == ["block1_out", "block2_out"]
    g = bl.Gram(max_order=3).fit(model, x)
    maps = keras.Model(model.input, [model.get_layer("block1_out").output,
                                     model.get_layer("block2_out").output]).predict(x, verbose=0)
    pred, vals = g.gram_features(x)
    assert vals.shape == (5, 3 * 3 + 3 * 4)
    np.testing.assert_array_equal(pred, model.predict(x, verbose=0).argmax(-1))
    for i in range(5):
        ref = np.concatenate([_gram_rows_by_hand(m[i], p) for m in maps for p in (1, 2, 3)])
        np.testing.assert_allclose(vals[i], ref, rtol=1e-5)
    # per predicted class min/max
    for c in np.unique(pred):
        np.testing.assert_array_equal(g.mins_[c], vals[pred == c].min(0))
        np.testing.assert_array_equal(g.maxs_[c], vals[pred == c].max(0))
    # upper-triangular entries
    gu = bl.Gram(layers=["block2_out"], max_order=2, reduction="upper").fit(model, x)
    _, up = gu.gram_features(x)
    f = maps[1][0].reshape(-1, 4).astype(np.float64) ** 2
    iu = np.triu_indices(4)
    ref = np.sqrt((f.T @ f)[iu])
    assert up.shape == (5, 2 * 10)
    np.testing.assert_allclose(up[0, 10:], ref, rtol=1e-5)


def test_gram_training_samples_score_zero_shifted_inputs_negative(rng):
    model = conv_model()
    x = rng.uniform(0, 1, size=(32, 6, 6, 1)).astype("float32")
    g = scores.get("gram").fit(model, x)
    s = g(x)
    assert s.shape == (32,)
    np.testing.assert_allclose(s, 0.0, atol=1e-9)
    shifted = g(3.0 * x + 1.0)
    assert np.all(shifted < 0)
    np.testing.assert_allclose(shifted, -g.deviations(3.0 * x + 1.0))
    # a few fresh ID-like samples deviate less than the shifted ones
    assert g(rng.uniform(0, 1, size=(16, 6, 6, 1)).astype("float32")).mean() > shifted.mean()


def test_gram_default_layers_of_backbones():
    r = build_backbone("resnet_small", (8, 8, 1), 3, anchored=False, width=4)
    assert bl.default_gram_layers(r) == [
        "stem_relu", "stage1_block1_out", "stage2_block1_out", "stage3_block1_out"]
    w = build_backbone("wrn40_2", (8, 8, 1), 3, anchored=False)
    layers = bl.default_gram_layers(w)
    assert len(layers) == 19 and layers[0] == "stage1_block1_add" and layers[-1] == "final_relu"


# --------------------------------------------------------------------------- #
# Temperature scaling
# --------------------------------------------------------------------------- #
def test_temperature_scaling_recovers_overconfidence(rng):
    n, k = 20000, 10
    true = rng.normal(0.0, 2.0, size=(n, k))
    y = np.argmax(true + rng.gumbel(size=(n, k)), axis=1)  # y ~ softmax(true)
    z = 5.0 * true
    ts = scores.get("temperature_scaling").fit(logits=z, labels=y)
    assert ts.temperature == pytest.approx(5.0, rel=0.1)
    assert ts.nll_after_ < ts.nll_before_
    s = ts(logits=z[:50])
    np.testing.assert_allclose(s, softmax(z[:50] / ts.temperature, axis=-1).max(-1), rtol=1e-10)
    # fitted on logits: a positional batch is logits too
    np.testing.assert_allclose(ts(z[:50]), s)


def test_temperature_scaling_with_model(rng):
    model = vector_model()
    x = rng.normal(size=(200, 2)).astype("float32")
    y = rng.integers(0, 3, 200)
    ts = bl.TemperatureScaling().fit(model, x, y)
    z = model.predict(x, verbose=0)
    ref = bl.TemperatureScaling().fit(logits=z, labels=y)
    assert ts.temperature == pytest.approx(ref.temperature, rel=1e-5)
    np.testing.assert_allclose(ts(x), ref(logits=z), rtol=1e-5)
    with pytest.raises(ValueError):
        bl.TemperatureScaling().fit(model, x, y, logits=z, labels=y)


# --------------------------------------------------------------------------- #
# MC dropout
# --------------------------------------------------------------------------- #
def test_predictive_scores_hand_values():
    probs = np.array([[[0.6, 0.4]], [[0.2, 0.8]]])  # 2 passes, 1 sample, 2 classes
    s = _common.predictive_scores(probs)
    mean = np.array([0.4, 0.6])
    assert s["msp"][0] == pytest.approx(0.6)
    assert s["entropy"][0] == pytest.approx(np.sum(mean * np.log(mean)))
    assert s["variance"][0] == pytest.approx(-0.04)  # Var = 0.2^2 for both classes


def test_mc_dropout_only_dropout_is_stochastic(rng):
    model = dropout_bn_model()
    x = rng.normal(size=(32, 4)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    mc = bl.MCDropout(model, num_passes=5, seed=1)
    assert mc.mc_model.get_layer("bn") is model.get_layer("bn")  # shared, not copied
    probs = mc.probs(x)
    assert probs.shape == (5, 32, 3)
    assert np.abs(probs[0] - probs[1]).max() > 1e-3  # passes differ
    s = mc.scores(x)
    assert np.all(s["variance"] < 0)  # variance > 0
    np.testing.assert_array_equal(mc.probs(x), probs)  # seeded: reproducible
    # BatchNorm moving statistics (and all weights) untouched
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the plain model is still deterministic (its Dropout was not modified)
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    # registered functions use the same passes
    np.testing.assert_allclose(scores.get("mc_dropout_entropy")(model, x, num_passes=5, seed=1),
                               s["entropy"])
    # sanity of the check above: model(x, training=True) *does* move BN statistics
    model(x, training=True)
    assert not np.array_equal(before[2], model.get_layer("bn").moving_mean.numpy())


def test_mc_dropout_on_backbone_keeps_bn(rng, small_resnet):
    x = rng.integers(0, 256, size=(8, 8, 8, 1)).astype("uint8")  # raw pixels
    before = [w.copy() for w in small_resnet.get_weights()]
    s = bl.mc_dropout_scores(small_resnet, x, num_passes=3, seed=0)
    assert set(s) == {"msp", "entropy", "variance"} and np.all(s["variance"] < 0)
    for a, b in zip(before, small_resnet.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_mc_dropout_without_dropout_raises(rng):
    with pytest.raises(ValueError, match="dropout"):
        bl.MCDropout(vector_model())
    with pytest.raises(ValueError, match="dropout"):
        scores.get("mc_dropout_msp")(vector_model(), rng.normal(size=(4, 2)))


# --------------------------------------------------------------------------- #
# Deep ensembles
# --------------------------------------------------------------------------- #
def test_ensemble_identical_members(rng):
    model = vector_model(seed=0)
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    x = rng.normal(size=(20, 2)).astype("float32")
    s = bl.ensemble_scores([model, twin, model], x)
    np.testing.assert_allclose(s["variance"], 0.0, atol=1e-12)
    z = model.predict(x, verbose=0)
    np.testing.assert_allclose(s["msp"], scores.to_numpy(scores.msp(z)), rtol=1e-6)
    np.testing.assert_allclose(s["entropy"], scores.to_numpy(scores.entropy(z)), rtol=1e-5)


def test_ensemble_different_members(rng):
    a, b = vector_model(seed=0), vector_model(seed=1)
    x = rng.normal(size=(20, 2)).astype("float32")
    s = bl.ensemble_scores([a, b], x)
    assert np.all(s["variance"] < 0)
    pa = softmax(a.predict(x, verbose=0).astype(np.float64), -1)
    pb = softmax(b.predict(x, verbose=0).astype(np.float64), -1)
    np.testing.assert_allclose(s["msp"], ((pa + pb) / 2).max(-1), rtol=1e-6)
    np.testing.assert_allclose(s["variance"], -(((pa - pb) / 2) ** 2).mean(-1), rtol=1e-5)
    np.testing.assert_allclose(scores.get("ensemble_variance")([a, b], x), s["variance"])
    with pytest.raises(TypeError, match="list"):
        scores.get("ensemble_msp")(a, x)


# --------------------------------------------------------------------------- #
# registry and the detector protocol
# --------------------------------------------------------------------------- #
def test_all_baselines_registered():
    names = scores.names()
    for n in bl.NAMES:
        assert n in names
    assert tuple(bl.NAMES) == scores.BASELINE_NAMES  # the registry's list of what this package registers
    assert set(scores.names(needs_fit=True)) >= {"mahalanobis", "gram", "temperature_scaling"}
    assert {"mahalanobis", "gram"} <= set(scores.names(needs_model=True, needs_fit=True))
    for n in bl.mc_dropout.NAMES + bl.ensemble.NAMES:
        assert n in scores.names(needs_model=True, needs_fit=False)
    assert "odin" in names  # ODIN lives in amp_tf.method.scores, not duplicated
    assert isinstance(scores.get("gram", max_order=2), bl.Gram)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("ensemble") else n
                                  for n in bl.NAMES])  # the ensemble trains its members
def test_every_baseline_fits_and_scores_as_a_detector(name, rng, small_resnet):
    x_train = rng.uniform(0, 255, size=(30, 8, 8, 1)).astype("float32")  # raw pixels
    y_train = np.arange(30) % 3
    x_val, y_val = x_train[:12], y_train[:12]
    sets = {"id": x_train[:7], "ood": rng.integers(200, 256, size=(5, 8, 8, 1)).astype("uint8")}
    models = small_resnet
    kwargs = {}
    if name.startswith("ensemble_"):
        other = build_backbone("resnet_small", (8, 8, 1), 3, anchored=False, width=4)
        models = [small_resnet, other]
    if name.startswith("mc_dropout_"):
        kwargs = {"num_passes": 3, "seed": 0}
    if name == "knn":
        kwargs = {"k": 5}  # fewer than the default k=50 training samples
    det = detectors.get(name, **kwargs).fit(models, id_train=(x_train, y_train), id_val=(x_val, y_val))
    out = {k: det.score(v) for k, v in sets.items()}
    assert set(out) == {"id", "ood"}
    assert out["id"].shape == (7,) and out["ood"].shape == (5,)
    assert all(np.all(np.isfinite(v)) for v in out.values())


def test_detectors_generic_and_errors(rng, small_resnet):
    x = rng.uniform(0, 255, size=(10, 8, 8, 1)).astype("float32")  # raw pixels
    y = np.arange(10) % 3
    msp = detectors.get("msp", anchored=False).fit(small_resnet)
    np.testing.assert_allclose(
        msp.score(x), scores.to_numpy(scores.msp(small_resnet.predict(x, verbose=0))), rtol=1e-6)
    with pytest.warns(UserWarning, match="validation"):
        detectors.get("temperature_scaling").fit(small_resnet, id_train=(x, y))
    with pytest.raises(ValueError, match="fitted"):
        detectors.get("mahalanobis").fit(small_resnet)
    with pytest.raises(TypeError, match="scores a plain classifier, got a list of models"):
        detectors.get("mahalanobis").fit([small_resnet], id_train=(x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detectors.get("temperature_scaling").fit(small_resnet, id_train=(x, y), id_val=(x, y)).score(x)
    # raw pixels in: already-normalised images are refused up front (the detector checks the whole array)
    with pytest.raises(ValueError, match="^images: .*already normalised"):
        msp.score(x / 127.5 - 1.0)
    # uint8 pixels give the same scores as the same pixels in float32
    xu = x.astype("uint8")
    np.testing.assert_allclose(msp.score(xu), msp.score(xu.astype("float32")), rtol=1e-6)
