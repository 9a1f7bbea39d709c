"""benchmarks.quality.converged: flags, the scores, the stored logits, and --quick end to end (slow)."""
import json
import types

import numpy as np
import pytest

from benchmarks.harness import model_store
from benchmarks.quality import converged


def test_settings_exclude_run_flags_and_quick_overrides():
    a = converged.parse_args(["--seeds", "3,4", "--resume", "--json", "/tmp/x.json"])
    assert a.seed_list == [3, 4] and a.settings["width"] == converged.RECIPE["width"]
    assert not {"seeds", "resume", "json", "md", "cache", "models"} & set(a.settings)
    q = converged.parse_args(["--quick", "--width", "4"])
    assert q.settings["width"] == 4 and q.settings["epochs"] == 1 and q.seed_list == [0, 1]
    assert "converged-quick" in str(q.cache) and q.json.name == "converged_quick.json"
    full = converged.parse_args([])
    assert full.vanilla_dir != q.vanilla_dir and full.anchored_dir != q.anchored_dir  # models cached per settings
    other_ft = converged.parse_args(["--finetune-lr", "0.001"])  # a new fine-tuning reuses the vanilla models
    assert other_ft.vanilla_dir == full.vanilla_dir and other_ft.anchored_dir != full.anchored_dir
    assert converged.parse_args(["--width", "8"]).vanilla_dir != full.vanilla_dir


def test_bad_flags_are_refused():
    for argv in (["--seeds", "a"], ["--epochs", "0"], ["--finetune-t", "none"]):
        with pytest.raises(SystemExit):
            converged.parse_args(argv)


def test_resume_with_other_settings_is_refused_before_any_work(tmp_path, capsys):
    converged.SeedCache(tmp_path, converged.parse_args([]).settings, converged.CODE_VERSION).save(0, {"x": 1})
    with pytest.raises(SystemExit) as err:
        converged.main(["--cache", str(tmp_path), "--resume", "--width", "7", "--eval-limit", "9"])
    assert err.value.code == 2
    msg = capsys.readouterr().err
    assert f"width: stored {converged.RECIPE['width']}, now 7" in msg and "eval_limit: stored 1000, now 9" in msg


def test_pack_round_trip_is_float16():
    x = np.random.default_rng(0).normal(0, 8, (7, 10)).astype("float32")
    y = model_store.unpack(json.loads(json.dumps(model_store.pack(x))))
    assert y.shape == x.shape and np.allclose(x, y, rtol=1e-3, atol=1e-2)


@pytest.mark.slow  # trains two models
def test_scores_match_the_detectors():
    """The anchored rows are select_detector's candidates (their validation FPR95 recomputed from the test-time
    scorer), one pass per set; MC dropout's shared passes equal `detectors.get(...)` per set."""
    from amp_tf.data.corruptions import validation_ood_sets
    from amp_tf.detection import detectors
    from amp_tf.detection.metrics import ood_metrics
    from amp_tf.method.predictor import AMP_SCORES, select_anchors
    from amp_tf.run.pipeline import IDData
    from amp_tf.run.training import TrainConfig, finetune_anchored, train

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 28, 28, 1)).astype("uint8")
    y = np.arange(96) % 10
    cfg = TrainConfig(anchored=False, epochs=1, batch_size=32, backbone_kwargs={"width": 4, "dropout": 0.2})
    van, _ = train(cfg, x, y, 10, verbose=0, backup=False)
    anc, _ = finetune_anchored(van, x, y, epochs=1, batch_size=32, lr=0.01, verbose=0, backup=False)
    d = IDData("t", x, y, x[:40], y[:40], x[:30], y[:30], 10)
    a = types.SimpleNamespace(num_anchors=3, fit_limit=60, mc_passes=3, val_ood_size=30)
    sets = {"s": x[:40], "t": x[50:70]}
    det = converged.select_anchored(anc, d, a, seed=1)
    score = converged.candidate_scorer(det)
    amp = {k: score(v) for k, v in sets.items()}
    labels = [r["label"] for r in sorted(det.candidates, key=lambda r: r["order"])]
    assert len(labels) == len(set(labels)) and set(AMP_SCORES) | {"knn", "mahalanobis"} <= set(labels)
    assert set(amp["s"]) == set(labels) | {"amp+knn", "amp+mahalanobis", "predicted_class"} | (
        {"amp+gram", "amp+mahalanobis+gram"} if "gram" in labels else set())
    assert det.label in labels and len(score(x[:40], 7)["amp"]) == 7 and len(score(x[:40], 7)["predicted_class"]) == 40
    info = converged.selection_info(det)
    assert list(info["val_fpr95"]) == labels and info["selected"] == det.label
    # the test-time scorer gives exactly the scores select_detector chose on (its validation table)
    val = score(d.x_val)
    ood = {k: score(v) for k, v in validation_ood_sets(d.x_val[:30], seed=1).items()}
    for n in labels:
        want = float(np.mean([ood_metrics(val[n], o[n])["fpr95"] for o in ood.values()]))
        assert info["val_fpr95"][n] == pytest.approx(want, abs=1e-9), n
    alone = detectors.get("mahalanobis", anchored=True, anchors=select_anchors(x, 3, seed=1)).fit(
        anc, id_train=(x[:60], y[:60]))
    np.testing.assert_allclose(amp["t"]["mahalanobis"], alone.score(x[50:70]), rtol=1e-4)
    van_scores = converged.vanilla_scores(van, d, sets, a, seed=1)
    for k, images in sets.items():
        assert set(converged.VANILLA) < set(van_scores[k])
        for name in ("mc_dropout_msp", "mc_dropout_entropy", "mc_dropout_variance"):
            want = detectors.get(name, num_passes=3, seed=1).fit(van).score(images)
            np.testing.assert_allclose(van_scores[k][name], want, rtol=1e-6, err_msg=f"{k} {name}")


def test_a_new_scoring_reuses_the_committed_models():
    """CODE_VERSION names the split results, MODEL_VERSION the anchored models: the committed models' folders."""
    a = converged.parse_args([])
    assert (a.vanilla_dir.name, a.anchored_dir.name) == ("be6f4dc45f", "a43ca4358a")
    assert converged.digest(a.settings) != a.anchored_dir.name


@pytest.mark.slow
def test_quick_end_to_end_then_resume(tmp_path, capsys):
    """--quick trains, scores and reports; a second run with --resume reuses both seeds (no training).

    In-process (the command line's `main`) on a smaller --quick: the fresh-interpreter path of a run is
    the main job's (tests/test_resume.py); here the cache and report logic is what is checked.
    """
    out = tmp_path / "q.json"
    argv = ["--quick", "--no-near", "--train-limit", "500", "--eval-limit", "40", "--fit-limit", "150",
            "--val-ood-size", "40", "--acc-limit", "100", "--cache", str(tmp_path / "c"),
            "--models", str(tmp_path / "m"), "--json", str(out), "--verbose", "0"]

    def run(*extra):
        capsys.readouterr()
        assert converged.main(argv + list(extra)) == 0
        return capsys.readouterr().out

    first = run()
    assert first.count("scoring the anchored model") == first.count("scoring the vanilla model") == 2  # 2 seeds
    res = json.loads(out.read_text())
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["seed0.json", "seed1.json"]
    for key in ("anchored/amp", "vanilla/gram", "vanilla/knn", "vanilla/mc_dropout_msp", "vanilla/odin",
                "ensemble/ensemble_msp"):
        assert key in res["rows"], key
    assert {"far", "covariate"} <= set(res["groups"]["anchored/amp"]) and res["models"]["ensemble"]["members"] == 2
    assert "AMP (selected)" in out.with_suffix(".md").read_text()
    picked = res["per_seed"][0]["models"]["anchored"]
    assert picked["selected"] in picked["val_fpr95"] and f"anchored/{picked['selected']}" in res["rows"]
    assert res["selection"]["shipped"]["library_per_seed"][0] == picked["selected"]
    again = run("--resume")
    assert "reusing seeds [0, 1]" in again and "vanilla (" not in again and "scoring" not in again
    assert json.loads(out.read_text())["rows"]["anchored/amp"] == res["rows"]["anchored/amp"]
    # A seed that spans sessions: its models (with their training time) and split results are kept, so a
    # run that lost the seed files trains and scores nothing again, and states the seed's full cost.
    models = sorted((tmp_path / "m").rglob("*.keras"))
    assert len(models) == 4 and all(m.with_suffix(".json").exists() for m in models)
    seed0 = json.loads((tmp_path / "c" / "seed0.json").read_text())["result"]
    assert seed0["wall_s"] == round(sum(v[0] for v in seed0["timing"].values()), 1) > 0
    for f in (tmp_path / "c").iterdir():
        f.unlink()
    parts = run("--resume")
    assert parts.count("-result-") == 2 and "reusing seeds []" in parts
    assert json.loads(out.read_text())["rows"] == res["rows"]
    assert json.loads((tmp_path / "c" / "seed0.json").read_text())["result"]["wall_s"] == seed0["wall_s"]
