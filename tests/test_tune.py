import pytest
"""trainers.tune: a KerasTuner search over T, its schedule, lr and width, offline on
Fashion-MNIST with tiny settings (2 trials x 1 epoch), and its argument errors."""
import csv
import json

from amp_tf.cli import tune


def run(main, argv):
    try:
        return main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code


TINY = ["--max-trials", 2, "--epochs", 1, "--train-limit", 512, "--width", 4, "--val-size", 256,
        "--ood-size", 128, "--verbose", 0]


@pytest.mark.slow
def test_random_search_two_trials(tmp_path, capsys):
    out = tmp_path / "tune"
    best = run(tune.main, TINY + ["--out", out])
    printed = capsys.readouterr().out
    assert isinstance(best, dict), printed
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == 2
    for r in rows:
        assert r["status"] == "COMPLETED"
        assert 0.0 <= float(r["val_ood_auroc"]) <= 1.0  # the objective
        assert 0.0 <= float(r["val_accuracy"]) <= 1.0
        assert r["width"] == "4" and r["consistency"] in ("none", "jitter_blur", "flip_grayscale",
                                                          "resized_crop", "all")
        assert int(r["consistency_every"]) in (1, 2, 5, 10) and 0.01 <= float(r["lr"]) <= 0.3
    md = (out / "trials.md").read_text()
    assert md.startswith("# Trials (2), objective `val_ood_auroc` (max)") and md.count("| COMPLETED |") == 2
    assert (out / "tuner").is_dir()
    saved = json.loads((out / "best.json").read_text())
    assert saved["score"] == max(float(r["val_ood_auroc"]) for r in rows)
    assert saved["hyperparameters"] == best["hyperparameters"]
    assert saved["train_config"]["anchored"] and saved["train_config"]["backbone_kwargs"] == {"width": 4}
    assert f"best trial {saved['trial_id']}: val_ood_auroc = " in printed and '"consistency_every"' in printed


def test_search_space_errors(tmp_path, capsys):
    for flags, msg in ((["--consistency", "all,spin"], "unknown transform"),
                       (["--lr", "0.1,0.2,0.3"], "--lr: expected 'lo,hi'"),
                       (["--width", "a"], "--width: expected a comma list of integers"),
                       (["--max-trials", 0], "--max-trials: expected >= 1"),
                       (["--id", "not_a_set"], "unknown data set name 'not_a_set'")):
        capsys.readouterr()
        assert run(tune.main, flags + ["--out", tmp_path / "x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err, err
    assert not (tmp_path / "x").exists()
    space = tune.search_space(tune.parser().parse_args(["--lr", "0.05", "--consistency-every", "5"]))
    assert space["lr"] == (0.05, 0.05) and space["consistency_every"] == [5] and space["width"] == [8, 16, 32]
