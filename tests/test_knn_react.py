"""Tests for the KNN (Sun et al. 2022) and ReAct (Sun et al. 2021) baselines,
against hand-computed values on a tiny model with hand-set weights."""
import keras
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

import amp_tf.detection.baselines as bl
from amp_tf.detection import detectors
from amp_tf.method import scores
from amp_tf.detection.baselines.knn import KNN, normalize
from amp_tf.detection.baselines.react import ReAct, final_dense
from amp_tf.models import build_backbone

# final Dense layer: logits = h W2 + b2
W2 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, -1, 0.5]], dtype="float32")
B2 = np.array([0, 1, -1], dtype="float32")


def tiny_model(scale=1.0, dropout=False):
    """Input(2, 2) -> Flatten -> Dense(4, relu, "features") -> Dense(3):
    features = relu(scale * x.reshape(4)), logits = features @ W2 + B2."""
    inp = keras.Input((2, 2))
    h = keras.layers.Flatten()(inp)
    h = keras.layers.Dense(4, activation="relu", name="features")(h)
    if dropout:
        h = keras.layers.Dropout(0.5, name="head_dropout")(h)
    out = keras.layers.Dense(3, name="logits")(h)
    m = keras.Model(inp, out)
    eye = scale * np.eye(4, dtype="float32")
    m.get_layer("features").set_weights([eye, np.zeros(4, "float32")])
    m.get_layer("logits").set_weights([W2, B2])
    return m


def rows(*vectors):
    """Input batch (N, 2, 2) whose features are relu(vector)."""
    return np.asarray(vectors, dtype="float32").reshape(-1, 2, 2)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


# bank: normalised features e1, e2, (e1+e2)/sqrt2, e3, e1 (a duplicate direction)
BANK = rows([1, 0, 0, 0], [0, 2, 0, 0], [3, 3, 0, 0], [0, 0, 5, 0], [4, 0, 0, 0])
QUERIES = rows([2, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 7], [-1, -1, -1, -1])
R = np.sqrt(2 - np.sqrt(2))  # |e1 - (e1+e2)/sqrt2|
S2 = np.sqrt(2)  # distance between orthogonal unit vectors
# expected k-th neighbour distance, rows = queries, columns = k = 1..5
EXPECTED = np.array([
    [0, 0, R, S2, S2],       # e1: two copies of e1, then the diagonal, then e2 and e3
    [0, R, R, R, S2],        # diagonal: itself, e1, e2, e1 copy, then e3
    [S2, S2, S2, S2, S2],    # e4 is orthogonal to the whole bank
    [1, 1, 1, 1, 1],         # dead ReLUs: zero feature, distance 1 to every unit vector
])


# --------------------------------------------------------------------------- #
# KNN
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_knn_hand_computed(model, k):
    knn = scores.get("knn", k=k).fit(model, BANK)
    np.testing.assert_allclose(knn.bank_, normalize(BANK.reshape(5, 4)), atol=1e-12)
    np.testing.assert_allclose(knn(QUERIES), -EXPECTED[:, k - 1], atol=1e-6)


def test_knn_k1_is_nearest_normalised_distance_and_scale_invariant(model, rng):
    bank = rng.uniform(-1, 2, size=(40, 2, 2)).astype("float32")
    x = rng.uniform(-1, 2, size=(9, 2, 2)).astype("float32")
    feats = lambda a: normalize(np.maximum(a.reshape(len(a), 4), 0))  # noqa: E731
    knn = KNN(k=1, batch_size=4).fit(model, bank)
    np.testing.assert_allclose(knn(x), -cdist(feats(x), feats(bank)).min(1), atol=1e-6)
    k7 = KNN(k=7).fit(model, bank)
    np.testing.assert_allclose(k7(x), -np.sort(cdist(feats(x), feats(bank)), 1)[:, 6], atol=1e-6)
    scaled = KNN(k=7).fit(tiny_model(scale=3.0), bank)  # features x3: same scores
    np.testing.assert_allclose(scaled(x), k7(x), atol=1e-6)
    np.testing.assert_allclose(k7.score_features(5 * feats(x)), k7(x), atol=1e-12)


def test_knn_subsample_and_default_k(model, rng):
    bank = rng.uniform(0.1, 1, size=(20, 2, 2)).astype("float32")
    full = normalize(bank.reshape(20, 4))
    a = KNN(k=2, max_train=6, seed=1).fit(model, bank)
    b = KNN(k=2, max_train=6, seed=1).fit(model, bank)
    assert a.bank_.shape == (6, 4)
    np.testing.assert_array_equal(a.bank_, b.bank_)
    assert all(np.abs(full - r).max(1).min() < 1e-6 for r in a.bank_)  # rows of the full bank
    with pytest.warns(UserWarning, match="k=5"):
        d = KNN().fit(model, BANK)  # default k=50 > 5 rows: capped, with a warning
    assert d.k is None and d.k_ == 5
    np.testing.assert_allclose(d(QUERIES), -EXPECTED[:, 4], atol=1e-6)


def test_knn_errors(model):
    with pytest.raises(ValueError, match="larger than the feature bank"):
        KNN(k=6).fit(model, BANK)
    with pytest.raises(ValueError, match="positive integer"):
        KNN(k=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        KNN(k=1)(QUERIES)
    no_features = keras.Sequential([keras.Input((2, 2)), keras.layers.Flatten(),
                                    keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="features"):
        KNN(k=1).fit(no_features, BANK)


# --------------------------------------------------------------------------- #
# ReAct
# --------------------------------------------------------------------------- #
# validation activations relu(.) = 0, 1, 2, 3, 4, 5, 6, 10: the 90th percentile
# (linear interpolation) is at position 0.9 * 7 = 6.3 -> 6 + 0.3 * (10 - 6) = 7.2
X_VAL = rows([-1, 1, 2, 3], [4, 5, 6, 10])


def energy(z):
    return np.log(np.sum(np.exp(np.asarray(z, dtype=np.float64)), axis=-1))


def test_react_hand_computed(model):
    react = scores.get("react").fit(model, X_VAL)
    assert react.percentile == 90 and react.threshold_ == pytest.approx(7.2)
    assert ReAct(percentile=50).fit(model, X_VAL).threshold_ == pytest.approx(3.5)
    x = rows([1, 2, 3, 8], [1, 2, 3, 4])
    # h = [1, 2, 3, 8] -> clipped [1, 2, 3, 7.2]; logits h~ W2 + B2 by hand:
    clipped = [1 + 7.2, 2 - 7.2 + 1, 3 + 0.5 * 7.2 - 1]  # [8.2, -4.2, 5.6]
    plain = [1 + 8, 2 - 8 + 1, 3 + 4 - 1]  # [9, -5, 6]
    below = [1 + 4, 2 - 4 + 1, 3 + 2 - 1]  # [5, -1, 4]: nothing clipped
    s = react(x)
    np.testing.assert_allclose(s, [energy(clipped), energy(below)], rtol=1e-6)
    np.testing.assert_allclose(s[0] - energy(plain), energy(clipped) - energy(plain), atol=1e-6)
    assert s[0] < energy(plain)  # clipping the large activation lowers the score
    plain_energy = scores.to_numpy(scores.energy(model.predict(x, verbose=0)))
    assert s[1] == pytest.approx(plain_energy[1], rel=1e-6)
    np.testing.assert_allclose(react.logits_from_features([[1, 2, 3, 8]]), [clipped], atol=1e-12)


def test_react_p100_is_plain_energy(model, rng):
    react = ReAct(percentile=100).fit(model, X_VAL)
    assert react.threshold_ == pytest.approx(10.0)  # the largest ID activation
    x = rng.uniform(-2, 9.5, size=(6, 2, 2)).astype("float32")
    np.testing.assert_allclose(react(x), energy(model.predict(x, verbose=0)), rtol=1e-6)
    assert react(rows([0, 0, 0, 12]))[0] == pytest.approx(logsumexp([10, -9, 4]))


def test_react_final_dense_and_errors(model):
    assert final_dense(model).name == "logits"
    drop = tiny_model(dropout=True)  # Dropout between features and logits is allowed
    np.testing.assert_allclose(ReAct().fit(drop, X_VAL)(X_VAL), ReAct().fit(model, X_VAL)(X_VAL))
    resnet = build_backbone("resnet_small", (8, 8, 1), 3, anchored=False, width=4, dropout=0.3)
    assert final_dense(resnet).name == "logits"

    inp = keras.Input((2, 2))
    h = keras.layers.Dense(4, name="features")(keras.layers.Flatten()(inp))
    extra = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(5)(h)))
    with pytest.raises(ValueError, match="convention"):
        ReAct().fit(extra, X_VAL)
    not_dense = keras.Model(inp, keras.layers.Activation("tanh")(h))
    with pytest.raises(ValueError, match="convention"):
        ReAct().fit(not_dense, X_VAL)
    no_features = keras.Sequential([keras.Input((2, 2)), keras.layers.Flatten(),
                                    keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="'features'"):
        ReAct().fit(no_features, X_VAL)
    with pytest.raises(RuntimeError, match="not fitted"):
        ReAct()(X_VAL)
    with pytest.raises(ValueError, match="percentile"):
        ReAct(percentile=0)


# --------------------------------------------------------------------------- #
# registry and the detector protocol
# --------------------------------------------------------------------------- #
def test_registered_and_scored_as_detectors(model):
    assert {"knn", "react"} <= set(bl.NAMES)
    assert {"knn", "react"} <= set(scores.names(needs_model=True, needs_fit=True))
    assert isinstance(scores.get("knn", k=3), bl.KNN) and bl.KNN.fit_on == "train"
    assert isinstance(scores.get("react"), bl.ReAct) and bl.ReAct.fit_on == "val"
    y = np.zeros(5, int)
    sets = {"id": QUERIES[:2], "ood": QUERIES[2:]}
    knn = detectors.get("knn", k=3).fit(model, id_train=(BANK, y))
    np.testing.assert_allclose(knn.score(sets["id"]), -EXPECTED[:2, 2], atol=1e-6)
    np.testing.assert_allclose(knn.score(sets["ood"]), -EXPECTED[2:, 2], atol=1e-6)
    # react is fitted on the validation split: c = 7.2 from X_VAL, not from BANK
    react = detectors.get("react").fit(model, id_train=(BANK, y), id_val=(X_VAL, y[:2]))
    assert react.score(rows([1, 2, 3, 8]))[0] == pytest.approx(energy([8.2, -4.2, 5.6]), rel=1e-6)
