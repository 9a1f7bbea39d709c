import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import log_softmax, logsumexp, softmax

from amp_tf.method import scores

LOGIT_SCORES = ["amp", "msp", "energy", "max_logit", "entropy"]


def np_ref(name, z, T=1.0):
    z = np.asarray(z, dtype=np.float64)
    if name == "amp":
        return -np.mean(log_softmax(z / T, axis=-1), axis=-1)
    if name == "msp":
        return softmax(z / T, axis=-1).max(-1)
    if name == "energy":
        return T * logsumexp(z / T, axis=-1)
    if name == "max_logit":
        return z.max(-1)
    if name == "entropy":
        p = softmax(z / T, axis=-1)
        return np.sum(p * log_softmax(z / T, axis=-1), axis=-1)
    raise KeyError(name)


@pytest.fixture
def logits(rng):
    return rng.normal(0.0, 3.0, size=(64, 10))


def test_amp_equals_mean_negative_log_softmax(logits):
    got = scores.to_numpy(scores.amp(logits))
    ref = -np.mean(log_softmax(logits, axis=-1), axis=-1)
    assert got.shape == (64,)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    # identity: logsumexp - mean
    np.testing.assert_allclose(got, logsumexp(logits, -1) - logits.mean(-1), atol=1e-6)


def test_amp_uniform_is_log_n_minimum_and_peaked_is_large(logits):
    n = 10
    uniform = np.full((3, n), 2.5)
    np.testing.assert_allclose(scores.to_numpy(scores.amp(uniform)), np.log(n), atol=1e-6)
    # log N is the minimum over all logits
    assert np.all(scores.to_numpy(scores.amp(logits)) >= np.log(n) - 1e-9)
    peaked = np.zeros((1, n))
    peaked[0, 0] = 10.0
    a = float(scores.to_numpy(scores.amp(peaked))[0])
    assert a > 9.0  # ~ (N-1)/N * 10 + log N - tiny
    np.testing.assert_allclose(a, np_ref("amp", peaked)[0], atol=1e-9)


@pytest.mark.parametrize("name", LOGIT_SCORES)
def test_logit_scores_match_numpy(name, logits):
    got = scores.to_numpy(scores.get(name)(logits))
    assert got.dtype == np.float64  # float64 in -> float64 out
    np.testing.assert_allclose(got, np_ref(name, logits), rtol=1e-7, atol=1e-6)


@pytest.mark.parametrize("name", ["amp", "msp", "energy", "entropy"])
def test_temperature(name, logits):
    got = scores.to_numpy(scores.get(name)(logits, temperature=2.5))
    np.testing.assert_allclose(got, np_ref(name, logits, T=2.5), atol=1e-6)


@pytest.mark.parametrize("name", LOGIT_SCORES)
def test_float32_and_int_inputs(name, logits):
    got32 = scores.to_numpy(scores.get(name)(logits.astype(np.float32)))
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, np_ref(name, logits.astype(np.float32)), rtol=1e-5, atol=1e-4)
    zi = np.array([[3, 0, 1], [1, 1, 1]])
    np.testing.assert_allclose(scores.to_numpy(scores.get(name)(zi)), np_ref(name, zi), atol=1e-5)


@pytest.mark.parametrize("name", LOGIT_SCORES)
def test_higher_is_in_distribution(name):
    peaked = np.array([[8.0, 0.0, 0.0, 0.0, 0.0]])
    flat = np.array([[1.0, 1.0, 1.0, 1.0, 1.0]])
    s = scores.get(name)
    assert float(scores.to_numpy(s(peaked))[0]) > float(scores.to_numpy(s(flat))[0])


@pytest.mark.parametrize("name", LOGIT_SCORES)
def test_scores_inside_tf_function(name, logits):
    fn = scores.get(name)

    @tf.function(input_signature=[tf.TensorSpec([None, 10], tf.float32)])
    def graph_score(z):
        return fn(z)

    z = tf.constant(logits, tf.float32)
    out = graph_score(z)
    assert isinstance(out, tf.Tensor) and out.shape == (64,)
    np.testing.assert_allclose(out.numpy(), np_ref(name, logits.astype(np.float32)), rtol=1e-5, atol=1e-4)
    # eager tf tensor input too
    np.testing.assert_allclose(scores.to_numpy(fn(z)), out.numpy(), atol=1e-6)


def test_bad_logits_shape():
    with pytest.raises(ValueError, match="batch, num_classes"):
        scores.amp(np.zeros(5))


def _tiny_model(seed=0):
    """Takes raw pixels (0..255): rescaled to [-1, 1] in the model."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    h = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    h = keras.layers.Dense(8, activation="tanh")(h)
    out = keras.layers.Dense(4)(h)
    return keras.Model(inp, out)


def test_odin_eps0_T1_equals_msp(rng):
    model = _tiny_model()
    x = rng.uniform(0, 255, size=(37, 6)).astype("float32")
    got = scores.odin(model, x, temperature=1.0, epsilon=0.0, batch_size=16)
    ref = scores.to_numpy(scores.msp(model.predict(x, verbose=0)))
    assert isinstance(got, np.ndarray) and got.shape == (37,)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_odin_perturbation_matches_manual_and_raises_msp(rng):
    model = _tiny_model(1)
    x = rng.uniform(0, 255, size=(20, 6)).astype("float32")
    x[:, 0], x[:, 1] = 0.0, 255.0  # pixels on the range ends: the step is clipped there
    T, eps = 1000.0, 0.01
    got = scores.get("odin")(model, x, temperature=T, epsilon=eps, batch_size=8)
    assert got.shape == (20,)
    # manual reference on the whole batch
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        z = model(xt) / T
        loss = -tf.reduce_sum(tf.reduce_max(tf.nn.log_softmax(z), axis=-1))
    g = tape.gradient(loss, xt).numpy()
    # the step is in pixel units (eps in [0, 1] units) and the image stays in [0, 255]
    x_tilde = np.clip(x - 255.0 * eps * np.sign(g), 0.0, 255.0)
    assert np.any(x_tilde[:, :2] != x[:, :2] - 255.0 * eps * np.sign(g[:, :2]))  # clipping acted
    ref = softmax(model.predict(x_tilde, verbose=0).astype(np.float64) / T, axis=-1).max(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # the step increases the temperature-scaled MSP
    base = scores.odin(model, x, temperature=T, epsilon=0.0)
    assert np.all(got >= base - 1e-7) and np.mean(got > base) > 0.5
    # a plain function works as logits_fn
    got_fn = scores.odin(lambda v: model(v), x, temperature=T, epsilon=eps)
    np.testing.assert_allclose(got_fn, got, rtol=1e-6)
    # T = 1 (large score changes): the clipped pixel-unit step, not the unclipped one
    got1 = scores.odin(model, x, temperature=1.0, epsilon=0.05)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = -tf.reduce_sum(tf.reduce_max(tf.nn.log_softmax(model(xt)), axis=-1))
    step = 255.0 * 0.05 * np.sign(tape.gradient(loss, xt).numpy())
    msp1 = lambda v: softmax(model.predict(v, verbose=0).astype(np.float64), axis=-1).max(-1)
    np.testing.assert_allclose(got1, msp1(np.clip(x - step, 0.0, 255.0)), rtol=1e-5)
    assert np.max(np.abs(got1 - msp1(x - step))) > 1e-4


def test_registry():
    ns = scores.names()
    for n in LOGIT_SCORES + ["odin"]:
        assert n in ns
    assert ns == sorted(ns)
    assert scores.get("odin").needs_model and not scores.get("amp").needs_model
    assert set(scores.names(needs_model=False, needs_fit=False)) >= set(LOGIT_SCORES)
    assert "odin" not in scores.names(needs_model=False)
    s = scores.get("amp")
    assert isinstance(s, scores.Score) and s.name == "amp" and "Eq. 2" in s.reference
    assert scores.get(s) is s
    with pytest.raises(ValueError, match="known scores: .*amp"):
        scores.get("no_such_score")
    with pytest.raises(ValueError, match="already registered"):
        scores.register("amp")(lambda z: z)


def test_fitted_score_registration():
    name = "_test_class_mean"

    class ClassMean(scores.FittedScore):
        def fit(self, features, labels):
            f = np.asarray(features, float)
            self.means_ = np.stack([f[labels == c].mean(0) for c in np.unique(labels)])
            self.fitted = True
            return self

        def score(self, features):
            self._check_fitted()
            d = ((np.asarray(features)[:, None, :] - self.means_) ** 2).sum(-1)
            return -d.min(1) * self.config.get("scale", 1.0)

    try:
        scores.register(name, reference="toy")(ClassMean)
        assert name in scores.names(needs_fit=True)
        assert name not in scores.names(needs_fit=False)
        s = scores.get(name, scale=2.0)
        assert isinstance(s, scores.FittedScore) and s.needs_fit and s.name == name
        assert scores.get(name) is not s  # fresh instance each time
        with pytest.raises(RuntimeError, match="not fitted"):
            s(np.zeros((1, 2)))
        feats = np.array([[0.0, 0.0], [0.2, 0.0], [5.0, 5.0], [5.2, 5.0]])
        s.fit(feats, np.array([0, 0, 1, 1]))
        out = s(np.array([[0.1, 0.0], [2.5, 2.5]]))
        assert out[0] > out[1]
        np.testing.assert_allclose(out[0], 0.0)
    finally:
        scores.REGISTRY.pop(name, None)


def test_fit_all_takes_the_logits_from_odins_first_pass(rng):
    """One forward pass fewer per image: every logit score still equals its definition."""
    from amp_tf.detection import detectors

    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    x = rng.integers(0, 256, size=(19, 4, 4, 1)).astype("uint8")
    out = detectors.fit_all(("msp", "energy", "odin", "max_logit"), model, batch_size=8).score(x)
    logits = model.predict(x.astype("float32"), verbose=0)
    np.testing.assert_array_equal(out["predicted_class"], logits.argmax(-1))
    np.testing.assert_allclose(out["max_logit"], logits.max(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["energy"], logsumexp(logits, axis=-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["odin"], scores.odin(model, x, batch_size=8), rtol=1e-6)
    no_odin = detectors.fit_all(("msp",), model, batch_size=8).score(x)
    np.testing.assert_allclose(no_odin["msp"], out["msp"], rtol=1e-6)


def test_the_scoring_layers_import_downwards_only():
    """scores <- baselines <- detectors (predictor and inference below): no module of a lower layer
    imports a higher one, at module or function level, nor by `importlib.import_module`."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "amp_tf"

    def imports(path):
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                out.update([node.module] + [f"{node.module}.{a.name}" for a in node.names])
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                out.update(a.value for a in node.args if isinstance(a, ast.Constant))
        return {m for m in out if m.startswith("amp_tf")}

    def hits(mods, *banned):
        return sorted(m for m in mods if any(m == b or m.startswith(b + ".") for b in banned))

    above = ("amp_tf.detection.baselines", "amp_tf.detection.detectors", "amp_tf.detection.evaluation")
    for low in ("scores.py", "inference.py", "predictor.py"):
        assert hits(imports(root / "method" / low), *above) == [], low
    for path in (root / "detection" / "baselines").glob("*.py"):
        assert hits(imports(path), "amp_tf.detection.detectors", "amp_tf.detection.evaluation") == [], path.name
    for path in (root / "detection" / "detectors").glob("*.py"):
        assert hits(imports(path), "amp_tf.detection.baselines._common", "amp_tf.detection.evaluation") == [], path.name

