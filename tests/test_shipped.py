"""The shipped detector (issue: ship the validation-selected detector): selection, saved state, exports.

* `select_detector` fits every candidate and picks the lowest validation-OOD FPR95; it refuses
  bad input before any fitting;
* the saved state (`detector.json` / `detector.npz`) loads in a fresh interpreter and scores the
  same; a state made for another model is refused, naming both;
* the in-graph score (`ShippedScore`) equals the candidate's numpy score;
* the anchored Gram (`gram`, `amp+gram`): the in-graph score equals a numpy float64 reference of the
  formula (Gram row sums of the anchored rows, mean over the anchors, deviation from the ranges of
  AMP's predicted class); its state saves, loads and scores the same; a Gram state made for another
  model is refused;
* on a committed converged model, pure noise (uniform and Gaussian) is flagged OOD by the shipped
  SavedModel and `.tflite`, which agree on 256 test images; so do the exports of `amp+mahalanobis+gram`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from amp_tf.detection import detectors
from amp_tf.method.anchoring import AnchoredModel
from amp_tf.detection.detectors.selection import candidate_scorer
from amp_tf.models import build_backbone

ROOT = Path(__file__).resolve().parents[1]
CONVERGED = ROOT / "benchmarks/results/converged_models/a43ca4358a/seed0/fashion_mnist-anchored.keras"


def _tiny(width=4, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return AnchoredModel(build_backbone("resnet_small", (12, 12, 1), 3, width=width), mean=(100.0,), std=(60.0,))


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (160, 12, 12, 1)).astype("uint8")
    y = rng.integers(0, 3, 160)
    model = _tiny()
    model(x[:2])
    det = detectors.select_detector(model, (x[:100], y[:100]), (x[100:], y[100:]), num_anchors=3, val_ood_size=40)
    return model, det, x, y


def test_selection_picks_the_lowest_validation_fpr95(tiny):
    _, det, _, _ = tiny
    rows = det.candidates
    assert det.name == rows[0]["name"] and det.options == rows[0]["options"]
    fprs = [r["val_fpr95"] for r in rows]
    assert fprs == sorted(fprs)
    names = {r["name"] for r in rows}
    assert {"amp", "amp[sum,exp]", "knn", "mahalanobis", "gram", "amp+knn", "amp+mahalanobis", "amp+gram",
            "amp+mahalanobis+gram"} <= names
    assert {r["options"].get("w") for r in rows if r["name"] == "amp+knn"} == {0.25, 0.5, 0.75}
    assert {r["options"].get("w") for r in rows if r["name"] == "amp+gram"} == {0.25, 0.5, 0.75}
    triples = {tuple(r["options"]["weights"]) for r in rows if r["name"] == "amp+mahalanobis+gram"}
    assert len(triples) == 21 and all(min(t) > 0 and abs(sum(t) - 1) < 1e-12 for t in triples)
    assert len(rows) == 46 + 4 * 21
    assert det.info["gram"] == {"layers": det.fitted["amp"].gram_layers_, "max_order": 5}
    assert det.threshold is not None and 0.0 < det.tpr < 1.0


def test_threshold_lets_tpr_of_the_validation_images_pass(tiny):
    _, det, x, _ = tiny
    s = det.score(x[100:])
    assert np.mean(s >= det.threshold) >= det.tpr
    assert np.mean(s > det.threshold) < det.tpr  # the largest such threshold


@pytest.mark.parametrize("kind", ["mahalanobis", "knn", "gram", "amp+mahalanobis", "amp+knn", "amp+gram",
                                  "amp[sum,divide]", "amp+mahalanobis+gram"])
def test_in_graph_score_equals_the_candidates_numpy_score(tiny, kind):
    """`ShippedScore` (what the exports run) against the float64 numpy detectors of the selection."""
    from amp_tf.detection.detectors.selection import candidate_layer
    from amp_tf.detection.detectors.shipped import ShippedDetector

    model, det, x, _ = tiny
    opts = det.fitted["family_best"].get(kind, {})
    one = ShippedDetector(candidate_layer(det.fitted, kind, opts), det.anchors, kind, opts).attach(model)
    want = candidate_scorer(det)(x[:40])[kind]
    np.testing.assert_allclose(one.score(x[:40]), want, rtol=1e-4, atol=1e-4 * (np.std(want) + 1e-12))


def _gram_detector(det, model, kind="amp+gram"):
    from amp_tf.detection.detectors.selection import candidate_layer
    from amp_tf.detection.detectors.shipped import ShippedDetector

    opts = det.fitted["family_best"].get(kind, {})
    return ShippedDetector(candidate_layer(det.fitted, kind, opts), det.anchors, kind, opts).attach(model)


def _numpy_gram_reference(model, det, images):
    """The anchored Gram score in float64 numpy, written from the formula: for every anchor c the
    backbone's maps F (positions x C) of the Gram layers on [c, x - c] (normalised), the row sums of
    G^p = F^p F^p^T (the C x C matrix) with the signed p-th root, p = 1..5; the mean over the anchors;
    minus the summed deviation from the [min, max] of the class of the mean logits."""
    import keras

    from amp_tf.detection.baselines.gram import deviation

    est = det.fitted["gram"].estimator
    bb = model.backbone
    ext = keras.Model(bb.inputs[0], [bb.get_layer(n).output for n in est.layers_] + [bb.outputs[0]])
    mean, std = (keras.ops.convert_to_numpy(v).astype(np.float64) for v in (model.normalizer.mean,
                                                                              model.normalizer.std))
    x = (images.astype(np.float64) - mean) / std
    feats, logits = [], []
    for c in (det.anchors.astype(np.float64) - mean) / std:
        res = ext(np.concatenate([np.broadcast_to(c, x.shape), x - c], -1).astype(np.float32), training=False)
        vals = []
        for f in res[:-1]:
            f = np.asarray(f, np.float64).reshape(len(x), -1, f.shape[-1])
            for p in range(1, est.max_order + 1):
                g = np.einsum("bkc,bkd->bcd", f ** p, f ** p).sum(-1)
                vals.append(np.sign(g) * np.abs(g) ** (1.0 / p))
        feats.append(np.concatenate(vals, 1))
        logits.append(np.asarray(res[-1], np.float64))
    v, pred = np.mean(feats, 0), np.mean(logits, 0).argmax(-1)
    return -deviation(v, est.mins_[pred], est.maxs_[pred], est.eps).sum(1)


def test_in_graph_gram_equals_a_numpy_reference_of_the_formula(tiny):
    model, det, x, _ = tiny
    one = _gram_detector(det, model, "gram")
    images = np.concatenate([x[100:140], 255 - x[100:120]])  # ID validation images and their inversions
    want = _numpy_gram_reference(model, det, images)
    assert (want < 0).sum() >= 10  # the ranges are left by some images
    np.testing.assert_allclose(one.score(images), want, rtol=1e-4, atol=1e-4 * (np.std(want) + 1e-12))
    np.testing.assert_allclose(det.fitted["gram"].score(images), want, rtol=1e-4,
                               atol=1e-4 * (np.std(want) + 1e-12))


@pytest.mark.parametrize("kind", ["amp+gram", "amp+mahalanobis+gram"])
def test_a_gram_state_saves_loads_and_scores_the_same(tiny, tmp_path, kind):
    model, det, x, _ = tiny
    one = _gram_detector(det, model, kind)
    one.threshold = -1.0
    one.save(tmp_path)
    again = detectors.load_detector(tmp_path, model)
    assert again.label == one.label and again.score_layer.get_config() == one.score_layer.get_config()
    for k, v in one.score_layer.state().items():
        np.testing.assert_array_equal(again.score_layer.state()[k], v)
    images = np.concatenate([x[100:132], 255 - x[100:116]])
    want, got = one.predict(images), again.predict(images)
    np.testing.assert_allclose(got["ood_score"], want["ood_score"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got["is_ood"], want["is_ood"])
    other = _tiny(width=8)
    other(np.zeros((1, 12, 12, 1), "uint8"))
    with pytest.raises(ValueError, match=r"holds \d+ Gram features \(layers .*orders 1\.\.5\), the model gives \d+"):
        detectors.load_detector(tmp_path, other)


def test_saved_state_loads_in_a_fresh_interpreter_and_scores_the_same(tiny, tmp_path):
    model, det, x, _ = tiny
    model.save(tmp_path / "anchored.keras")
    det.save(tmp_path)
    np.save(tmp_path / "x.npy", x[:16])
    code = ("import sys, json, numpy as np, keras, amp_tf\n"
            "from amp_tf.detection.detectors import load_detector\n"
            "p = sys.argv[1]\n"
            "m = keras.saving.load_model(p + '/anchored.keras')\n"
            "d = load_detector(p, m)\n"
            "out = d.predict(np.load(p + '/x.npy'))\n"
            "print(json.dumps({'name': d.name, 'label': d.label, 'threshold': d.threshold,"
            " 'score': out['ood_score'].tolist(), 'is_ood': out['is_ood'].tolist()}))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    want = det.predict(x[:16])
    assert got["name"] == det.name and got["label"] == det.label and got["threshold"] == pytest.approx(det.threshold)
    np.testing.assert_allclose(got["score"], want["ood_score"], rtol=1e-5, atol=1e-6)
    assert got["is_ood"] == want["is_ood"].tolist()


def test_a_state_for_another_model_is_refused_naming_both(tiny, tmp_path):
    from amp_tf.detection.detectors.shipped import ShippedDetector, score_layer

    _, det, _, _ = tiny
    maha = det.fitted["features"]["mahalanobis"].estimator
    ShippedDetector(score_layer("mahalanobis", feature=maha), det.anchors, "mahalanobis", threshold=0.0).save(tmp_path)
    other = _tiny(width=8)
    other(np.zeros((1, 12, 12, 1), "uint8"))
    with pytest.raises(ValueError, match=r"holds \d+-wide features, the model's 'features' layer gives \d+"):
        detectors.load_detector(tmp_path, other)


def test_missing_state_says_it_falls_back_to_amp(tmp_path):
    with pytest.raises(FileNotFoundError, match="decides by AMP alone.*select_detector"):
        detectors.load_detector(tmp_path)


def test_bad_selection_input_is_refused_before_any_fitting(tiny):
    model, _, x, y = tiny
    with pytest.raises(ValueError, match="at least 20"):
        detectors.select_detector(model, (x[:100], y[:100]), (x[100:110], y[100:110]))
    with pytest.raises(ValueError, match="no validation OOD images"):
        detectors.select_detector(model, (x[:100], y[:100]), (x[100:], y[100:]), val_ood={})
    with pytest.raises(ValueError, match="no validation OOD images"):
        detectors.select_detector(model, (x[:100], y[:100]), (x[100:], y[100:]), val_ood={"a": x[:0]})
    with pytest.raises(ValueError, match="labels"):
        detectors.select_detector(model, x[:100], (x[100:], y[100:]))
    with pytest.raises(ValueError, match=r"id_train images: .*x / 255"):
        detectors.select_detector(model, (x[:100] / 255.0, y[:100]), (x[100:], y[100:]))
    with pytest.raises(ValueError, match=r"id_val images: .*already normalised"):
        detectors.select_detector(model, (x[:100], y[:100]), ((x[100:] - 100.0) / 60.0, y[100:]))
    with pytest.raises(TypeError, match="AnchoredModel"):
        detectors.select_detector(model.backbone, (x[:100], y[:100]), (x[100:], y[100:]))


# ------------------------------------------------------------------ a converged model: noise, LiteRT
@pytest.fixture(scope="module")
def shipped_exports(tmp_path_factory):
    import keras

    from amp_tf.serve.export import TFLiteModel, export_for_serving, export_tflite
    from amp_tf.run.pipeline import load_id

    model = keras.saving.load_model(CONVERGED, compile=False)
    d = load_id("fashion_mnist", val_size=400, train_limit=3000, eval_limit=256)
    det = detectors.select_detector(model, (d.x_train, d.y_train), (d.x_val, d.y_val), fit_limit=2000,
                                    val_ood_size=400)
    out = tmp_path_factory.mktemp("shipped")
    head = export_for_serving(det, out / "serving")
    export_tflite(head, out / "model.tflite")
    served = tf.saved_model.load(str(out / "serving"))
    return det, served, TFLiteModel(out / "model.tflite"), d


@pytest.fixture(scope="module")
def gram_exports(shipped_exports, tmp_path_factory):
    """The exports of `amp+mahalanobis+gram` (its validation-best options) fitted by the same selection: the
    Gram features and the pooled features from one backbone call, both terms in the graph."""
    from amp_tf.serve.export import TFLiteModel, export_for_serving, export_tflite
    from amp_tf.detection.metrics import threshold_at_tpr

    det, _, _, d = shipped_exports
    one = _gram_detector(det, det.fitted["amp"].model, "amp+mahalanobis+gram")
    one.threshold = threshold_at_tpr(one.score(d.x_val), 0.95)
    out = tmp_path_factory.mktemp("shipped_gram")
    head = export_for_serving(one, out / "serving")
    export_tflite(head, out / "model.tflite")
    return one, tf.saved_model.load(str(out / "serving")), TFLiteModel(out / "model.tflite"), d


def _noise(kind, seed, n=32):
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        x = rng.integers(0, 256, (n, 28, 28, 1))
    else:
        x = np.rint(rng.normal(127.5, 64.0, (n, 28, 28, 1)))
    return np.clip(x, 0, 255).astype("uint8")


@pytest.mark.parametrize("kind,seed", [("uniform", 0), ("gaussian", 1), ("uniform", 7), ("gaussian", 12)])
def test_pure_noise_is_flagged_ood_by_the_shipped_exports(shipped_exports, kind, seed):
    det, served, lite, _ = shipped_exports
    x = _noise(kind, seed)
    out = served.signatures["serving_default"](images=tf.constant(x))
    assert out["is_ood"].numpy().all(), (det.label, out["ood_score"].numpy().max(), det.threshold)
    assert lite(x)["is_ood"].all()


def test_litert_matches_the_saved_model_and_both_name_the_detector(shipped_exports):
    det, served, lite, d = shipped_exports
    x = d.x_test[:256]
    want = {k: v.numpy() for k, v in served.signatures["serving_default"](images=tf.constant(x)).items()}
    got = lite(x)
    np.testing.assert_allclose(got["ood_score"], want["ood_score"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["is_ood"], want["is_ood"])
    np.testing.assert_array_equal(got["predicted_class"], want["predicted_class"])
    info = {k: v.numpy() for k, v in served.signatures["detector"]().items()}
    assert info["name"].decode() == det.name and info["label"].decode() == det.label
    assert lite.detector["name"] == det.name and lite.detector["threshold"] == pytest.approx(det.threshold)
    assert float(info["threshold"]) == pytest.approx(det.threshold)


def test_litert_matches_the_saved_model_for_amp_plus_mahalanobis_plus_gram(gram_exports, shipped_exports):
    """The Gram features in float32 through TFLite builtins, beside the Mahalanobis term: the same scores as
    the SavedModel."""
    det, served, lite, d = gram_exports
    x = d.x_test[:256]
    gram = shipped_exports[0].fitted["gram"].score(x)
    assert np.isfinite(gram).all() and (gram < 0).mean() > 0.2, np.mean(gram < 0)  # the Gram term takes part
    want = {k: v.numpy() for k, v in served.signatures["serving_default"](images=tf.constant(x)).items()}
    np.testing.assert_allclose(want["ood_score"], det.score(x), rtol=1e-4, atol=1e-5)
    assert np.isfinite(want["ood_score"]).all() and want["is_ood"].any() and not want["is_ood"].all()
    got = lite(x)
    np.testing.assert_allclose(got["ood_score"], want["ood_score"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["is_ood"], want["is_ood"])
    np.testing.assert_array_equal(got["predicted_class"], want["predicted_class"])
    assert lite.detector["name"] == "amp+mahalanobis+gram" and lite.detector["label"] == det.label


def test_the_three_term_combination_is_the_weighted_sum_of_the_validation_z_scores(tiny):
    """`amp+mahalanobis+gram` = w_a z(amp) + w_m z(mahalanobis) + w_g z(gram), each z from the mean and std of
    that score on the ID validation images, the weights those the selection chose for the family."""
    _, det, x, _ = tiny
    opts = det.fitted["family_best"]["amp+mahalanobis+gram"]
    run = candidate_scorer(det)
    val, got = run(x[100:]), run(x[:40])
    want = sum(w * (got[t] - val[t].mean()) / val[t].std()
               for t, w in zip((opts["amp_score"], "mahalanobis", "gram"), opts["weights"]))
    np.testing.assert_allclose(got["amp+mahalanobis+gram"], want, rtol=1e-9, atol=1e-9)
    assert len(opts["weights"]) == 3 and abs(sum(opts["weights"]) - 1) < 1e-12


def test_gram_order_0_selects_without_any_gram_candidate(tiny):
    """The cheap-serving choice the README names: no Gram features fitted, no candidate that needs them."""
    model, _, x, y = tiny
    det = detectors.select_detector(model, (x[:100], y[:100]), (x[100:], y[100:]), num_anchors=3, val_ood_size=40,
                                    gram_order=0)
    names = {r["name"] for r in det.candidates}
    assert {"amp", "mahalanobis", "amp+mahalanobis"} <= names and not any("gram" in n for n in names)
    assert not det.score_layer.uses_gram() and det.info["gram"] is None
