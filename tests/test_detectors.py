"""One detector protocol: every registered score and the AMP variants, fit then score, by name."""
import numpy as np
import pytest

from amp_tf import detectors, scores
from amp_tf.anchoring import AnchoredModel
from amp_tf.evaluation import anchored_scorer
from amp_tf.models import build_backbone
from amp_tf.predictor import select_anchors


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 16, 16, 1)).astype("uint8")
    y = rng.integers(0, 4, 96)
    vanilla = build_backbone("resnet_small", (16, 16, 1), 4, anchored=False, width=4)
    anchored = AnchoredModel(build_backbone("resnet_small", (16, 16, 1), 4, width=4), mean=120.0, std=70.0)
    anchored(x[:2])
    return x, y, vanilla, anchored


@pytest.mark.parametrize("name", ["msp", "energy", "max_logit", "entropy", "amp", "odin", "mahalanobis",
                                  "gram", "knn", "react", "temperature_scaling", "mc_dropout_msp"])
def test_every_vanilla_detector_fits_and_scores_by_name(setup, name):
    x, y, vanilla, _ = setup
    opts = {"k": 5} if name == "knn" else {"num_passes": 3} if name.startswith("mc_dropout") else {}
    if name.startswith("mc_dropout"):  # needs a model with dropout
        vanilla = build_backbone("resnet_small", (16, 16, 1), 4, anchored=False, width=4, dropout=0.3)
    det = detectors.get(name, **opts).fit(vanilla, id_train=(x[:64], y[:64]), id_val=(x[64:], y[64:]))
    s = det.score(x[:20])
    assert s.shape == (20,) and np.all(np.isfinite(s))
    if name in ("msp", "energy", "max_logit", "entropy"):  # the same numbers as the function on logits
        ref = scores.to_numpy(scores.get(name)(vanilla.predict(x[:20].astype("float32"), verbose=0)))
        np.testing.assert_allclose(s, ref, rtol=1e-5)


def test_ensemble_detector_takes_a_list(setup):
    x, y, vanilla, _ = setup
    other = build_backbone("resnet_small", (16, 16, 1), 4, anchored=False, width=4)
    s = detectors.get("ensemble_entropy").fit([vanilla, other]).score(x[:10])
    assert s.shape == (10,)


@pytest.mark.parametrize("name", ["amp", "amp[sum,exp]", "amp[mean,divide]", "amp[sum,divide]", "neg_tau"])
def test_amp_variants_equal_the_evaluation_scorer(setup, name):
    x, y, _, anchored = setup
    det = detectors.get(name, num_anchors=3, seed=1).fit(anchored, id_train=(x, y))
    ref = anchored_scorer(anchored, select_anchors(x, 3, seed=1))(x[:24])[name]
    np.testing.assert_allclose(det.score(x[:24]), ref, rtol=1e-5, atol=1e-6)


def test_per_image_anchors_through_the_protocol(setup):
    x, y, _, anchored = setup
    det = detectors.get("amp", anchor_mode="per_image", num_anchors=3, pool_size=20).fit(anchored, id_train=(x, y))
    a = det.score(x[:12])
    np.testing.assert_allclose(det.score(x[:12][::-1])[::-1], a, rtol=1e-5)


def test_clear_errors(setup):
    x, y, vanilla, anchored = setup
    with pytest.raises(ValueError, match="unknown detector 'maha'"):
        detectors.get("maha")
    with pytest.raises(RuntimeError, match="call fit"):
        detectors.get("msp").score(x)
    with pytest.raises(ValueError, match="id_train"):
        detectors.get("mahalanobis").fit(vanilla)
    with pytest.raises(TypeError, match="AnchoredModel"):
        detectors.get("amp[sum,divide]").fit(vanilla, id_train=(x, y))
    assert set(detectors.names()) >= {"amp", "knn", "react", "odin", "neg_tau", "ensemble_msp"}
