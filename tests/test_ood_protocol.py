"""benchmarks.quality.ood (the reduced-scale protocol): its per-seed cache rules and settings (fast), the ensemble
from stored logits, and a tiny run end to end with --resume (slow)."""
import json

import numpy as np
import pytest

from benchmarks.quality import ood

PROTOCOL = ["--num-seeds", "5", "--train-limit", "10000", "--eval-limit", "500", "--fit-limit", "5000",
            "--anchor-draws", "10", "--select-grid", "weight_decay_mode=decoupled,coupled;consistency_mode=per_sample,"
            "official"]


def test_settings_hold_what_moves_a_seed_and_not_the_run_flags(tmp_path):
    a = ood.parse_args(PROTOCOL + ["--json", str(tmp_path / "ood_protocol.json"), "--resume"])
    assert a.cache == tmp_path / "ood_protocol"  # the --json path without .json
    assert not set(ood.RUN_FLAGS) & set(a.settings) and "settings" not in a.settings
    assert (a.settings["train_limit"], a.settings["eval_limit"], a.settings["anchor_draws"]) == (10000, 500, 10)
    assert a.settings["select_grid"].startswith("weight_decay_mode=") and a.settings["seed"] == 0
    more = ood.parse_args(PROTOCOL[2:] + ["--num-seeds", "7", "--json", str(tmp_path / "x.json")])
    assert more.settings == a.settings  # more seeds resume the same run
    assert ood.parse_args(PROTOCOL + ["--fit-limit", "4000"]).settings != a.settings
    q = ood.parse_args(["--quick"])
    assert q.cache.parts[-3:] == ("runs", "ood-quick", "seeds") and q.settings["epochs"] == 1
    assert ood.parse_args(["--quick", "--cache", str(tmp_path / "c")]).cache == tmp_path / "c"


def test_resume_with_other_settings_is_refused_before_any_work(tmp_path, capsys):
    stored = ood.parse_args(PROTOCOL).settings
    ood.SeedCache(tmp_path, stored, ood.CODE_VERSION).save(0, {"x": 1})
    with pytest.raises(SystemExit) as err:
        ood.main(PROTOCOL + ["--cache", str(tmp_path), "--resume", "--width", "7", "--eval-limit", "9"])
    assert err.value.code == 2
    msg = capsys.readouterr().err
    assert "width: stored 16, now 7" in msg and "eval_limit: stored 500, now 9" in msg


def test_a_cache_without_resume_is_refused_and_so_is_a_stale_training_selection(tmp_path, capsys):
    a = ood.parse_args(PROTOCOL)
    ood.SeedCache(tmp_path, a.settings, ood.CODE_VERSION).save(0, {"x": 1})
    with pytest.raises(SystemExit) as err:
        ood.main(PROTOCOL + ["--cache", str(tmp_path)])
    assert err.value.code == 2 and "pass --resume" in capsys.readouterr().err
    # the --select-grid choice is cached like a seed: one made with other settings is refused too
    other = tmp_path / "other"
    ood.SeedCache(other / "select_training", {**a.settings, "width": 4}, ood.CODE_VERSION).save(0, {"selected": {}})
    with pytest.raises(SystemExit) as err:
        ood.main(PROTOCOL + ["--cache", str(other), "--resume"])
    assert err.value.code == 2 and "width: stored 4, now 16" in capsys.readouterr().err


def test_the_ensemble_from_stored_logits_is_the_ensemble_of_the_models():
    import keras

    from amp_tf.detection import baselines as bl
    from amp_tf.method.inference import model_logits
    from benchmarks.harness.model_store import pack, unpack
    from benchmarks.quality.converged_scoring import ensemble_scores

    x = np.random.default_rng(0).normal(0, 1, (20, 6, 6, 1)).astype("float32")
    members = []
    for seed in (1, 2, 3):
        keras.utils.set_random_seed(seed)
        members.append(keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]))
    by_set, probs = ensemble_scores([{"id": unpack(pack(model_logits(m, x)))} for m in members])
    want = bl.ensemble_scores(members, x)
    assert probs["id"].shape == (3, 20, 4) and set(by_set["id"]) == {f"ensemble_{k}" for k in want}
    for k, v in want.items():  # float16 logits: equal up to that rounding
        np.testing.assert_allclose(by_set["id"][f"ensemble_{k}"], v, rtol=2e-3, atol=2e-3, err_msg=k)


@pytest.mark.slow  # trains 2 seeds x (vanilla + anchored) + a 2-point selection grid on tiny data
def test_tiny_run_then_resume(tmp_path, capsys):
    """A tiny run scores the anchored model by select_detector (every candidate a row, the selection recorded,
    the shipped row named), keeps each seed's rows in its seed file only; --resume reuses the seeds and the
    training selection (nothing trained) and writes the same results."""
    out = tmp_path / "p.json"
    argv = ["--num-seeds", "2", "--no-near", "--train-limit", "400", "--eval-limit", "40", "--fit-limit", "150",
            "--val-ood-size", "40", "--val-size", "200", "--epochs", "1", "--finetune-epochs", "1", "--width", "4",
            "--anchor-draws", "2", "--select-grid", "weight_decay_mode=decoupled,coupled", "--verbose", "0",
            "--json", str(out)]

    def run(*extra):
        capsys.readouterr()
        ood.main(argv + list(extra))
        return capsys.readouterr().out

    first = run()
    assert first.count("selecting the shipped detector") == 2 and "select {" in first
    res = json.loads(out.read_text())
    cache = tmp_path / "p"
    assert sorted(p.name for p in cache.iterdir()) == ["seed0.json", "seed1.json", "select_training"]
    picked = [s["models"]["anchored"] for s in res["per_seed"]]
    for p in picked:
        assert p["selected"] in p["val_fpr95"] and f"anchored/{p['selected']}" in res["rows"]
        assert {"amp", "amp[mean,divide]", "knn", "mahalanobis"} <= set(p["val_fpr95"])
    shipped = res["selection"]["shipped"]
    assert shipped["library_per_seed"] == [p["selected"] for p in picked]
    assert f"anchored/{shipped['selected']}" in res["groups"] and res["selection"]["variant"]["selected"]
    for key in ("anchored/amp", "anchored/msp", "anchored/amp+mahalanobis", "anchored/knn", "vanilla/gram",
                "vanilla/knn", "ensemble/ensemble_msp"):
        assert key in res["rows"], key
    assert "(shipped)" in out.with_suffix(".md").read_text() and len(res["anchor_draws"]["draws"]) == 2
    assert all("rows" not in s and "vanilla_logits" not in s for s in res["per_seed"])  # only in the seed files
    seed0 = json.loads((cache / "seed0.json").read_text())["result"]
    assert seed0["rows"]["anchored/amp"] and seed0["anchor_draws"] and "vanilla_logits" in seed0
    assert res["models"]["ensemble"]["members"] == 2
    again = run("--resume")
    assert "reusing seeds [0, 1]" in again and "(reused from" in again
    assert "trained " not in again and "selecting the shipped detector" not in again
    res2 = json.loads(out.read_text())
    assert res2["rows"] == res["rows"] and res2["selection"] == res["selection"]
