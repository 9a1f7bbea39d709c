"""The main job end to end on a subset of the real offline data; report.json checked field by field."""
import json

import numpy as np
import pytest
import tensorflow as tf

from trainers import fmnist

METRICS = {"fpr95", "auroc", "aupr_in", "aupr_out", "detection_accuracy"}
OOD = ["digits", "fmnist_blur_1", "fmnist_blur_2", "fmnist_blur_3", "fmnist_blur_4", "fmnist_blur_5"]
ANCHORED = {"amp", "amp[sum,exp]", "amp[mean,divide]", "amp[sum,divide]", "msp", "energy", "neg_tau"}
VANILLA = {"msp", "energy", "odin", "max_logit", "entropy"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fmnist")
    fmnist.main(["--train-limit", "768", "--eval-limit", "120", "--val-size", "200", "--epochs", "1",
                 "--batch-size", "64", "--width", "4", "--verbose", "0", "--out", str(out)])
    return out


def test_report_json_has_every_field(run):
    rep = json.loads((run / "report.json").read_text())
    for key in ("title", "id_set", "ood_sets", "positive", "seed", "wall_time_s", "versions", "config",
                "models", "scores", "summary", "best"):
        assert key in rep, key
    assert rep["id_set"] == "fashion_mnist" and rep["ood_sets"] == OOD
    assert rep["positive"] == "id" and rep["seed"] == 0 and rep["wall_time_s"] > 0
    assert {"amp_tf", "tensorflow", "keras", "python"} <= set(rep["versions"])
    for name in ("anchored", "vanilla"):
        m = rep["models"][name]
        assert 0.0 <= m["id_accuracy"] <= 1.0 and m["params"] > 0 and m["train_time_s"] > 0
    expected = {f"anchored/{s}" for s in ANCHORED} | {f"vanilla/{s}" for s in VANILLA}
    assert set(rep["scores"]) == expected
    for key, per_set in rep["scores"].items():
        assert set(per_set) == set(OOD), key
        for metrics in per_set.values():
            assert METRICS <= set(metrics)
            assert all(0.0 <= metrics[k] <= 1.0 for k in METRICS)
        mean = rep["summary"][key]
        np.testing.assert_allclose(mean["auroc"], np.mean([per_set[s]["auroc"] for s in OOD]), atol=1e-5)
    assert set(rep["best"]) >= METRICS
    assert rep["config"]["train"]["anchored"]["anchored"] is True
    assert rep["config"]["train"]["vanilla"]["anchored"] is False


def test_run_folder_files(run):
    for f in ("report.md", "anchored.keras", "vanilla.keras", "normalization.json", "auroc_vs_blur.png",
              "roc_digits.png", "densities_anchored_amp.png", "densities_vanilla_msp.png",
              "serving/saved_model.pb", "anchored/checkpoints/last.keras"):
        assert (run / f).exists(), f
    assert any((run / "anchored" / "tensorboard").rglob("events.out.tfevents*"))
    md = (run / "report.md").read_text()
    assert "positive = ID" in md and "anchored/amp" in md and "vanilla/odin" in md


def test_serving_signature(run):
    loaded = tf.saved_model.load(str(run / "serving"))
    fn = loaded.signatures["serving_default"]
    assert list(fn.structured_input_signature[1]) == ["images"]
    out = fn(images=tf.zeros([3, 28, 28, 1], tf.uint8))
    for key in ("logits", "probabilities", "predicted_class", "tau", "amp_score", "is_ood"):
        assert key in out, key
    assert out["logits"].shape == (3, 10) and out["is_ood"].dtype == tf.bool
