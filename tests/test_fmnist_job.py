"""The main job end to end on a subset of the real offline data; report.json checked field by field."""
import json

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import tiny_main_job

pytestmark = pytest.mark.slow  # an end-to-end run of the main job

METRICS = {"fpr95", "auroc", "aupr_in", "aupr_out", "detection_accuracy"}
FAR = ["digits", "font_letters", "skimage_patches"]
COVARIATE = [f"fmnist_{k}_{lv}" for k in ("blur", "jpeg", "contrast", "pixelate") for lv in range(1, 6)]
NEAR = ["fmnist_holdout_ood", "fmnist_holdout2_ood"]
OOD = FAR + COVARIATE + NEAR
ANCHORED = {"amp", "amp[sum,exp]", "amp[mean,divide]", "amp[sum,divide]", "msp", "energy", "neg_tau",
            "knn", "mahalanobis", "amp+knn", "amp+mahalanobis", "gram", "amp+gram", "amp+mahalanobis+gram"}
VANILLA = {"msp", "energy", "odin", "max_logit", "entropy", "react", "knn", "mahalanobis", "gram"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_main_job(tmp_path_factory)  # shared with tests/test_load_anywhere.py


def test_report_json_has_every_field(run):
    rep = json.loads((run / "report.json").read_text())
    for key in ("title", "id_set", "ood_sets", "positive", "seed", "wall_time_s", "versions", "config",
                "models", "scores", "summary", "shipped", "data"):
        assert key in rep, key
    assert rep["id_set"] == "fashion_mnist" and rep["ood_sets"] == OOD
    assert rep["positive"] == "id" and rep["seed"] == 0 and rep["wall_time_s"] > 0
    assert set(rep["timings_s"]) == {"train", "select", "score", "save_and_export", "near_ood"}  # + report (logged)
    assert sum(rep["timings_s"].values()) <= rep["wall_time_s"] + 1 and rep["cpu_time_s"] > 0
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
    # the shipped detector: chosen on validation (its row is in the report, its figures are validation ones)
    shipped = rep["shipped"]
    assert shipped["key"] in rep["scores"] and shipped["name"] in rep["shipped"]["family_val_fpr95"]
    assert 0.0 <= shipped["val_fpr95"] <= 1.0 and shipped["val_fpr95"] == min(shipped["family_val_fpr95"].values())
    assert isinstance(rep["data"]["serving_threshold"], float)
    assert rep["data"]["serving_threshold"] == pytest.approx(shipped["threshold"])
    assert "best" not in rep
    # the group table: a mean per group, and overall = the mean of the group means (not of the sets)
    g = rep["groups"]["anchored/amp"]
    assert set(g) == {"near", "far", "covariate", "overall"}
    per_set = rep["scores"]["anchored/amp"]
    for name, members in (("near", NEAR), ("far", FAR), ("covariate", COVARIATE)):
        assert g[name]["fpr95"] == pytest.approx(np.mean([per_set[s]["fpr95"] for s in members]))
    assert g["overall"]["fpr95"] == pytest.approx(np.mean([g[n]["fpr95"] for n in ("near", "far", "covariate")]))
    # each near split has its own twin models
    assert {"anchored@fmnist_holdout_id", "vanilla@fmnist_holdout2_id"} <= set(rep["models"])
    assert rep["config"]["train"]["anchored"]["anchored"] is True
    assert rep["config"]["train"]["vanilla"]["anchored"] is False
    # the statistics travel in the models (raw pixels in); the report states them and the split sizes
    assert rep["data"]["train"] == 768 and rep["data"]["val"] == 200 and rep["data"]["test"] == 120
    assert rep["config"]["train"]["anchored"]["mean"] == pytest.approx(rep["data"]["mean"])
    assert "validation" in rep["models"]["anchored"]["serving_threshold_on"]


def test_the_run_went_through_the_main_jobs_preset(run):
    """The shared tiny main job runs through `--preset fmnist-offline` (tests/helpers.py)."""
    from amp_tf.run import presets

    rep = json.loads((run / "report.json").read_text())
    assert rep["ood_sets"] == list(presets.get("fmnist-offline").ood) + NEAR  # --near adds its group
    vanilla, anchored = rep["config"]["train"]["vanilla"], rep["config"]["train"]["anchored"]
    assert (vanilla["epochs"], vanilla["backbone_kwargs"]) == (1, {"width": 4})  # the explicit flags win
    assert (anchored["backbone_kwargs"], anchored["consistency_every"]) == ({"width": 4}, 5)  # the preset's T
    assert rep["args"]["preset"] == "fmnist-offline"


def test_run_folder_files(run):
    for f in ("report.md", "anchored.keras", "vanilla.keras", "job.json", "auroc_vs_corruption.png",
              "roc_digits.png", "densities_anchored_amp.png", "densities_vanilla_msp.png",
              "serving/saved_model.pb", "model.tflite", "anchored/checkpoints/last.keras"):
        assert (run / f).exists(), f
    assert any((run / "anchored" / "tensorboard").rglob("events.out.tfevents*"))
    md = (run / "report.md").read_text()
    assert "positive = ID" in md and "anchored/amp" in md and "vanilla/odin" in md
    assert md.index("## OOD groups") < md.index("## Models") < md.index("## Summary")  # leads with the groups
    assert (run / "near_fmnist_holdout_id" / "anchored").is_dir()
    assert not (run / "normalization.json").exists()  # the models carry their statistics
    assert not run.with_name(f".{run.name}.partial").exists()  # renamed into place when complete


def test_saved_models_take_raw_pixels(run):
    import keras

    from amp_tf import data

    x, _ = data.to_numpy(data.load("fashion_mnist", "test"), limit=64)
    vanilla = keras.models.load_model(run / "vanilla.keras")
    anchored = keras.models.load_model(run / "anchored.keras")
    np.testing.assert_allclose(vanilla.predict(x, verbose=0), vanilla.predict(x.astype("float32"), verbose=0),
                               atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="x / 255"):
        vanilla(x.astype("float32") / 255.0)
    with pytest.raises(ValueError, match="already normalised"):
        anchored.fit((x - 73.0) / 90.0, np.zeros(len(x), "int64"), epochs=1, verbose=0)


def test_serving_signature(run):
    loaded = tf.saved_model.load(str(run / "serving"))
    fn = loaded.signatures["serving_default"]
    assert list(fn.structured_input_signature[1]) == ["images"]
    out = fn(images=tf.zeros([3, 28, 28, 1], tf.uint8))
    for key in ("logits", "probabilities", "predicted_class", "tau", "amp_score", "is_ood"):
        assert key in out, key
    assert out["logits"].shape == (3, 10) and out["is_ood"].dtype == tf.bool
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected images of shape \(N, 28, 28, 1\)"):
        fn(images=tf.zeros([2, 32, 32, 1], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
        fn(images=tf.zeros([0, 28, 28, 1], tf.uint8))
