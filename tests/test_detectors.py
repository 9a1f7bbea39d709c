"""One detector protocol: every registered score and the AMP variants, fit then score, by name;
`fit_all` scores several names with one backbone pass per image set."""
import subprocess
import sys

import numpy as np
import pytest

from amp_tf.detection import detectors
from amp_tf.method import scores
from amp_tf.method.anchoring import AnchoredModel
from amp_tf.models import build_backbone
from amp_tf.method.predictor import AMP_SCORES, AMP_VARIANTS, AnchoredPredictor, amp_variant_name, select_anchors


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


def _predictor_reference(anchored, anchors, x, name):
    """`name` from `AnchoredPredictor.predict` with that variant's reduction and calibration."""
    red, cal = AMP_VARIANTS.get(name, ("mean", "exp"))
    out = AnchoredPredictor.from_model(anchored, anchors, tau_reduction=red, calibration=cal).predict(x)
    return -out["tau"] if name == "neg_tau" else out["amp_score" if name in AMP_VARIANTS else name]


@pytest.mark.parametrize("name", AMP_SCORES)
def test_every_anchored_name_scores_an_anchored_model_like_the_predictor(setup, name):
    x, y, _, anchored = setup
    det = detectors.get(name, num_anchors=3, seed=1).fit(anchored, id_train=(x, y))
    ref = _predictor_reference(anchored, select_anchors(x, 3, seed=1), x[:24], name)
    np.testing.assert_allclose(det.score(x[:24]), ref, rtol=1e-5, atol=1e-6)


def test_amp_names_are_defined_once_and_all_come_from_one_pass(setup):
    x, y, _, anchored = setup
    assert set(detectors.names(anchored=True)) == {*AMP_SCORES, *detectors.FEATURE_NAMES, *detectors.COMBINATIONS}
    assert all(amp_variant_name(*rc) == n for n, rc in AMP_VARIANTS.items()) and len(AMP_VARIANTS) == 4
    anchors = select_anchors(x, 3, seed=1)
    det = detectors.get("amp", anchored=True, anchors=anchors).fit(anchored)
    out = det.score_all(x[:24])
    assert list(out) == [*AMP_SCORES, "predicted_class"]
    for name in ("amp[sum,divide]", "neg_tau"):  # a single-name detector is a view of the same pass
        np.testing.assert_array_equal(detectors.get(name, anchored=True, anchors=anchors).fit(anchored)
                                      .score(x[:24]), out[name])
    ref = AnchoredPredictor.from_model(anchored, anchors).predict(x[:24])
    np.testing.assert_array_equal(out["predicted_class"], ref["predicted_class"])
    sets = detectors.fit_all(["neg_tau", "amp"], anchored, id_train=(x, y), num_anchors=3, seed=1).score(x[:24])
    assert list(sets) == ["neg_tau", "amp", "predicted_class"]  # the order asked for
    np.testing.assert_array_equal(sets["amp"], out["amp"])


def test_fit_all_on_a_plain_model_runs_the_logits_once_and_matches_each_detector(setup):
    x, y, vanilla, _ = setup
    names = ["msp", "energy", "odin", "max_logit", "entropy", "mahalanobis"]
    dets = detectors.fit_all(names, vanilla, id_train=(x[:64], y[:64]), batch_size=16,
                             options={"odin": {"temperature": 10.0, "epsilon": 0.001}})
    assert dets.odin is not None and [d.name for d in dets.logit] == ["msp", "energy", "max_logit", "entropy"]
    out = dets.score(x[:20])
    assert list(out) == [*names, "predicted_class"]
    logits = vanilla.predict(x[:20].astype("float32"), verbose=0)
    np.testing.assert_array_equal(out["predicted_class"], logits.argmax(-1))
    for name in names:
        opts = {"temperature": 10.0, "epsilon": 0.001} if name == "odin" else {}
        single = detectors.get(name, **opts).fit(vanilla, id_train=(x[:64], y[:64])).score(x[:20])
        np.testing.assert_allclose(out[name], single, rtol=1e-5, atol=1e-6)
    only_fitted = detectors.fit_all(["mahalanobis"], vanilla, id_train=(x[:64], y[:64])).score(x[:20])
    np.testing.assert_array_equal(only_fitted["predicted_class"], logits.argmax(-1))
    ens = detectors.fit_all(["ensemble_msp"], [vanilla, vanilla]).score(x[:5])
    assert list(ens) == ["ensemble_msp"]
    with pytest.raises(ValueError, match="options"):
        detectors.fit_all(["msp"], vanilla, options={"odin": {}})
    with pytest.raises(TypeError, match="AnchoredModel"):
        detectors.get("amp", anchored=True).fit(vanilla, id_train=(x, y))


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


def test_names_are_a_static_table_that_matches_the_registry(setup):
    import amp_tf.detection.baselines  # noqa: F401  (registers the baselines)

    assert set(scores.names()) <= set(detectors.names())
    assert set(detectors.names()) == set(detectors.KINDS) | set(scores.names())
    assert set(detectors.names(anchored=True)) == {"amp", "amp[sum,exp]", "amp[mean,divide]", "amp[sum,divide]",
                                                   "msp", "energy", "neg_tau", "knn", "mahalanobis",
                                                   "amp+knn", "amp+mahalanobis"}
    assert "neg_tau" not in detectors.names(anchored=False) and "mahalanobis" in detectors.names(anchored=False)


@pytest.mark.slow
def test_names_do_not_depend_on_what_was_imported():
    code = ("from amp_tf import detectors; a = detectors.names(); import amp_tf.detection.baselines; "
            "b = detectors.names(); print(len(a), len(b)); assert a == b")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["23", "23"]


def test_each_name_refuses_the_model_kind_it_is_not_listed_for(setup):
    x, y, vanilla, anchored = setup
    for name in detectors.names(anchored=False):
        if name not in detectors.names(anchored=True):
            with pytest.raises(TypeError, match="scores a (plain classifier|list of models).*got an AnchoredModel"):
                detectors.get(name).fit(anchored, id_train=(x, y), id_val=(x, y))
    with pytest.raises(TypeError, match="takes? a single model|scores a plain classifier, got a list"):
        detectors.get("energy").fit([vanilla, vanilla])
    with pytest.raises(ValueError, match="does not score an AnchoredModel"):
        detectors.get("max_logit", anchored=True)


@pytest.mark.parametrize("name", ["energy", "max_logit", "mahalanobis", "amp", "odin"])
def test_after_valid_images_a_wrong_size_is_still_refused(setup, name):
    x, y, vanilla, anchored = setup
    model = anchored if name == "amp" else vanilla
    det = detectors.get(name).fit(model, id_train=(x[:64], y[:64]))
    assert det.score(x[:8]).shape == (8,)  # the compiled forward is cached now
    with pytest.raises(ValueError, match=r"images: expected \(batch, 16, 16, 1\), got \(2, 20, 20, 1\)"):
        det.score(np.zeros((2, 20, 20, 1), np.uint8))
    with pytest.raises(ValueError, match=r"images: expected \(batch, 16, 16, 1\), got \(2, 16, 16, 3\)"):
        det.score(np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="empty array"):
        det.score(np.zeros((0, 16, 16, 1), np.uint8))


def test_fit_checks_the_id_images_against_the_model(setup):
    x, y, vanilla, anchored = setup
    with pytest.raises(ValueError, match=r"id_train images: expected \(batch, 16, 16, 1\)"):
        detectors.get("mahalanobis").fit(vanilla, id_train=(np.zeros((8, 28, 28, 1), np.uint8), y[:8]))
    with pytest.raises(ValueError, match=r"id_train images: .*x / 255"):
        detectors.get("amp").fit(anchored, id_train=(x / 255.0, y))


def _anchored_features_reference(anchored, anchors, x, layer="features"):
    """Mean over the anchors of the backbone's pooled `layer` on `[c, x - c]` (normalised), by hand."""
    import keras

    bb = anchored.backbone
    ext = keras.Model(bb.inputs, bb.get_layer(layer).output)
    norm = lambda v: (np.asarray(v, np.float32) - 120.0) / 70.0  # noqa: E731  (the model's mean / std)
    xs, cs = norm(x), norm(anchors)
    return np.mean([ext.predict(np.concatenate([np.broadcast_to(c, xs.shape), xs - c], -1), verbose=0)
                    for c in cs], axis=0)


@pytest.mark.parametrize("name", ["knn", "mahalanobis"])
def test_feature_detectors_on_an_anchored_model_fit_the_baseline_on_mean_anchored_features(setup, name):
    import amp_tf.detection.baselines as bl

    x, y, _, anchored = setup
    opts = {"k": 5} if name == "knn" else {}
    det = detectors.get(name, num_anchors=3, seed=1, **opts).fit(anchored, id_train=(x[:64], y[:64]))
    assert type(det.inner).__name__ == "AnchoredFeatureDetector"
    anchors = select_anchors(x[:64], 3, seed=1)
    f_train = _anchored_features_reference(anchored, anchors, x[:64])
    f_test = _anchored_features_reference(anchored, anchors, x[64:90])
    np.testing.assert_allclose(det.inner.amp.score_all(x[64:90])["features"], f_test, rtol=1e-4, atol=1e-5)
    ref = (bl.KNN(k=5) if name == "knn" else bl.Mahalanobis()).fit_features(f_train, y[:64])
    np.testing.assert_allclose(det.score(x[64:90]), ref.score_features(f_test), rtol=1e-3, atol=1e-4)
    # the same detector by name on the vanilla kind stays the plain baseline
    assert type(detectors.get(name, anchored=False)).__name__ == "FittedDetector"


def test_fit_all_shares_one_anchored_pass_between_amp_features_and_the_combination(setup):
    x, y, _, anchored = setup
    names = ["amp", "knn", "mahalanobis", "amp+knn"]
    tr, va = (x[:64], y[:64]), (x[64:], y[64:])
    dets = detectors.fit_all(names, anchored, id_train=tr, id_val=va, num_anchors=3, seed=1,
                             options={"knn": {"k": 5}, "amp+knn": {"w": 0.25}})
    out = dets.score(x[:20])
    assert list(out) == [*names, "predicted_class"] and dets.amp.feature_layer == "features"
    plain_amp = detectors.get("amp", anchored=True, num_anchors=3, seed=1).fit(anchored, id_train=tr)
    np.testing.assert_allclose(out["amp"], plain_amp.score(x[:20]), rtol=1e-5, atol=1e-6)
    for name, opts in (("knn", {"k": 5}), ("mahalanobis", {})):
        single = detectors.get(name, anchored=True, num_anchors=3, seed=1, **opts).fit(anchored, id_train=tr)
        np.testing.assert_allclose(out[name], single.score(x[:20]), rtol=1e-5, atol=1e-6)
    comb = detectors.get("amp+knn", num_anchors=3, seed=1, k=5, w=0.25).fit(anchored, id_train=tr, id_val=va)
    np.testing.assert_allclose(out["amp+knn"], comb.score(x[:20]), rtol=1e-5, atol=1e-6)
    # w * z(amp) + (1 - w) * z(knn), z from the ID validation images
    val = dets.score(x[64:])
    z = lambda s, ref: (s - ref.mean()) / ref.std()  # noqa: E731
    np.testing.assert_allclose(out["amp+knn"], 0.25 * z(out["amp"], val["amp"]) + 0.75 * z(out["knn"], val["knn"]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(val["amp+knn"].mean(), 0.0, atol=1e-6)


def test_feature_and_combined_detectors_refuse_what_they_cannot_do(setup):
    x, y, vanilla, anchored = setup
    with pytest.raises(TypeError, match="AMP needs an AnchoredModel"):
        detectors.get("amp+knn").fit(vanilla, id_train=(x, y), id_val=(x, y))
    with pytest.raises(ValueError, match="id_val"):
        detectors.get("amp+knn", k=5).fit(anchored, id_train=(x, y))
    with pytest.raises(ValueError, match="w must be in"):
        detectors.get("amp+mahalanobis", w=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        detectors.get("mahalanobis", anchored=True, epsilon=0.001)
    with pytest.raises(TypeError, match="unknown options"):
        detectors.get("knn", anchored=True, kk=3)
    with pytest.raises(ValueError, match="labels"):
        detectors.get("mahalanobis", anchored=True).fit(anchored, id_train=x)
