"""trainers.tune: a KerasTuner search over T, its schedule, lr and width, offline on
Fashion-MNIST with tiny settings (2 trials x 1 epoch), and its argument errors."""
import csv
import json

import pytest

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
    again = run(tune.main, TINY + ["--out", out])  # the same search again: resumed, nothing left to run
    assert "resuming the search" in capsys.readouterr().out
    assert again["trial_id"] == best["trial_id"] and again["score"] == best["score"]
    assert len(list(csv.DictReader(open(out / "trials.csv")))) == 2


def test_the_same_search_resumes_another_is_refused(tmp_path, capsys):
    """--out holding a search: the same settings resume it (the help's '--overwrite: start afresh instead of
    resuming'), other settings are refused naming them, --overwrite starts afresh; nothing is touched."""
    out = tmp_path / "t"
    args = tune.parser().parse_args(["--out", str(out), "--lr", "0.05"])
    assert tune.tune_folder(args) == (out, False)  # new
    (out / "tuner").mkdir(parents=True)
    with pytest.raises(ValueError, match="settings were not recorded.*--overwrite"):
        tune.tune_folder(args)
    (out / tune.SEARCH_FILE).write_text(json.dumps({"settings": tune.search_settings(args)}))
    assert tune.tune_folder(args) == (out, True)
    verbose = tune.parser().parse_args(["--out", str(out), "--lr", "0.05", "--verbose", "0"])
    assert tune.tune_folder(verbose) == (out, True)  # output only: the same search
    other = tune.parser().parse_args(["--out", str(out), "--lr", "0.1", "--epochs", "5"])
    with pytest.raises(ValueError, match=r"other settings \(--epochs 3 there, 5 now; --lr '0.05' there, '0.1' now\)"):
        tune.tune_folder(other)
    assert run(tune.main, ["--out", out, "--lr", "0.1"]) == 2 and "other settings" in capsys.readouterr().err
    other.overwrite = True
    assert tune.tune_folder(other) == (out, False)
    assert sorted(p.name for p in out.iterdir()) == [tune.SEARCH_FILE, "tuner"]


def test_search_space_errors(tmp_path, capsys):
    for flags, msg in ((["--consistency", "all,spin"], "unknown transform"),
                       (["--lr", "0.1,0.2,0.3"], "--lr: expected 'lo,hi'"),
                       (["--width", "a"], "--width: expected a comma list of integers"),
                       (["--max-trials", 0], "--max-trials: expected >= 1"),
                       (["--lr", "nan,0.1"], "--lr: expected a finite learning rate > 0, got nan"),
                       (["--lr", "0.01,inf"], "--lr: expected a finite learning rate > 0, got inf"),
                       (["--weight-decay", -0.1], "--weight-decay: expected a finite value >= 0, got -0.1"),
                       (["--train-limit", -5], "--train-limit: expected an int >= 0 (0 = all training images)"),
                       (["--seed", -1], "--seed: expected an int in 0..4294967295"),
                       (["--arch", "resnet_smal", "--width", 4], "--arch: unknown backbone 'resnet_smal'"),
                       (["--id", "not_a_set"], "unknown data set name 'not_a_set'")):
        capsys.readouterr()
        assert run(tune.main, flags + ["--out", tmp_path / "x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err, err
    assert not (tmp_path / "x").exists()
    space = tune.search_space(tune.parser().parse_args(["--lr", "0.05", "--consistency-every", "5"]))
    assert space["lr"] == (0.05, 0.05) and space["consistency_every"] == [5] and space["width"] == [8, 16, 32]
