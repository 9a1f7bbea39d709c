"""benchmarks.quality.anchored_features: its cache rules (fast) and a --quick run end to end (slow)."""
import json

import pytest

from benchmarks.quality import anchored_features as af


def _settings(**over):
    s = {"train_limit": 600, "val_size": 300, "eval_limit": 100, "fit_limit": 300, "val_ood_size": 100,
         "num_anchors": 3, "weights": [0.0, 0.5, 1.0], "no_near": False,
         "finetune": {"epochs": 2, "lr": 0.1}}
    s.update(over)
    return s


def test_a_cached_seed_is_reused_redone_for_another_code_version_and_refused_for_other_settings(capsys):
    cached = {"code": af.CODE_VERSION, "settings": _settings(), "seed": 0}
    assert af.check_cached(cached, _settings(), "s0.json") is cached
    assert af.check_cached({**cached, "code": "old"}, _settings(), "s0.json") is None
    assert "redoing this seed" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"differ from this run's in weights, finetune \(weights: cached"):
        af.check_cached(cached, _settings(weights=[0.5], finetune={"epochs": 1, "lr": 0.1}), "s0.json")


def test_flags_quick_and_bad_weights(tmp_path):
    args = af.parse_args(["--quick", "--cache", str(tmp_path)])
    assert args.seed_list == [0] and args.train_limit == 600 and args.json == tmp_path / "anchored_features.json"
    assert af.parse_args(["--weights", "0,0.25,1"]).weight_list == [0.0, 0.25, 1.0]
    with pytest.raises(SystemExit):
        af.parse_args(["--weights", "0,2"])


@pytest.mark.slow
def test_quick_runs_end_to_end_and_resumes_from_its_cache(tmp_path, capsys):
    """In-process (the command line's `main`): a fresh interpreter adds only TF's import here."""
    argv = ["--quick", "--cache", str(tmp_path)]
    assert af.main(argv) == 0
    res = json.loads((tmp_path / "anchored_features.json").read_text())
    s = res["summary"]
    for key in ("anchored/amp", "anchored/knn", "anchored/mahalanobis", "vanilla/knn", "vanilla/mahalanobis",
                "vanilla/msp", "vanilla/energy", "anchored/amp+knn[w=0.5]", "anchored/amp+mahalanobis[w=0]"):
        assert key in s["validation"] and key in s["test_groups"], key
    assert set(s["test_groups"]["anchored/amp"]) >= {"near", "far", "covariate", "overall"}
    assert s["selected"] in s["validation"] and res["cpu"] and res["wall_time_s"] > 0
    # w = 1 is AMP up to an increasing affine map: the same metrics
    assert s["validation"]["anchored/amp+knn[w=1]"]["fpr95"] == pytest.approx(s["validation"]["anchored/amp"]["fpr95"])
    capsys.readouterr()
    assert af.main(argv) == 0
    assert "seed 0: cached" in capsys.readouterr().out
    assert json.loads((tmp_path / "anchored_features.json").read_text())["summary"] == s
