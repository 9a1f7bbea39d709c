"""The command-line tools, run in-process on small real data (one subprocess for the
true CLI exit path): trainers.cifar (tfds mock data), trainers.imagenet (a tiny
generated JPEG folder), eval.ood (Fashion-MNIST + the offline OOD sets), and the
user errors each CLI must turn into one clear "error: ..." line with exit code 2."""
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amp_tf.cli import ood
from amp_tf.cli import cifar, common, fmnist, imagenet
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
ANCHORED_KEYS = {f"anchored/{s}" for s in ood.ANCHORED_SCORES}
METRICS = ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_accuracy")


run = run_cli


def user_error(main, argv, capsys):
    """Asserts a clean exit 2 with one 'error: ...' line; returns that message."""
    capsys.readouterr()
    code = run(main, argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def write_images(folder, n, shape, seed=0, ext="png"):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(a[..., 0] if shape[-1] == 1 else a).save(folder / f"{i:03d}.{ext}")
    return folder


def check_report(path, keys, sets, positive="id"):
    rep = json.loads(Path(path).read_text())
    assert set(rep["scores"]) == set(keys)
    assert rep["positive"] == positive
    for key, per_set in rep["scores"].items():
        assert set(per_set) == set(sets), key
        for m in per_set.values():
            assert m["positive"] == positive
            for k in METRICS:
                assert 0.0 <= m[k] <= 1.0, (key, k, m[k])
    assert set(rep["summary"]) == set(keys)
    return rep


# --------------------------------------------------------------------- --help


@pytest.mark.parametrize("module, flags", [
    (cifar, ["--dataset", "--arch", "--strategy", "--train-limit", "--eval-limit", "--ood",
             "--ood-callback-every", "--vanilla", "--resize", "60,120,160", "wrn40_2", "default: 200",
             "svhn_cropped,dtd,places365_small"]),
    (imagenet, ["--data-dir", "--train-folder", "--val-folder", "--image-size", "--arch",
                "resnet50_imagenet", "30,60,90", "default: 120", "default: 0.0001", "--ood"]),
    (ood, ["--model", "--id", "--ood", "--scores", "--positive", "--format", "--num-anchors",
           "--data-dir", "--limit", "--resize", "pil_lanczos", "--channels", "--overwrite"]),
    (fmnist, ["--holdout", "--val-size", "--epochs", "--consistency-every"]),
])
def test_help_lists_flags(module, flags, capsys):
    assert run(module.main, ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ")
    for flag in flags:
        assert flag in out, flag


def test_split_names_keeps_bracketed_commas():
    assert common.split_names("amp, amp[sum,exp],msp,") == ["amp", "amp[sum,exp]", "msp"]
    assert cifar.expand_ood("default,folder:/x") == ["svhn_cropped", "dtd", "places365_small", "folder:/x"]


# --------------------------------------------------------------- trainers.cifar


@pytest.mark.slow
def test_cifar_trainer_on_mock_data(tmp_path, capsys):
    import tensorflow_datasets as tfds

    empty = tmp_path / "empty_ood"
    empty.mkdir()
    out = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=96):
        res = run(cifar.main, [
            "--dataset", "cifar10", "--arch", "resnet_small", "--width", "8", "--epochs", "1",
            "--train-limit", "64", "--val-size", "24", "--eval-limit", "32", "--batch-size", "32", "--download",
            "--ood", f"svhn_cropped,folder:{empty}", "--out", out, "--verbose", "2",
            "--ood-callback-every", "1", "--ood-callback-size", "16"])
    printed = capsys.readouterr().out
    assert isinstance(res, dict), printed
    assert "[OOD] epoch 1: val_ood_auroc=" in printed and "val_ood_blur_proxy_auroc" in printed
    assert f"skipped folder:{empty}: folder {empty} holds no readable images" in printed
    rep = check_report(out / "report.json", ANCHORED_KEYS, ["svhn_cropped"])
    cfg = rep["config"]["train"]["anchored"]
    assert (cfg["lr_milestones"], cfg["lr_gamma"], cfg["consistency_every"], cfg["augment"]) == (
        [60, 120, 160], 0.2, 5, "crop_flip")
    assert rep["skipped_ood_sets"] == {f"folder:{empty}": printed.split(f"skipped folder:{empty}: ")[1].splitlines()[0]}
    assert rep["models"]["anchored"]["params"] > 0
    for f in ("anchored.keras", "job.json", "report.md", "roc_svhn_cropped.png",
              "serving/saved_model.pb", "anchored/tensorboard", "anchored/checkpoints/last.keras"):
        assert (out / f).exists(), f
    stats = rep["data"]  # the model carries them; the report states them
    assert len(stats["mean"]) == 3 and all(s > 0 for s in stats["std"])
    # the serving threshold comes from held-out ID validation images, not the reported test set
    assert rep["data"]["val"] > 0 and "validation" in rep["models"]["anchored"]["serving_threshold_on"]


@pytest.mark.slow
def test_cifar_trainer_vanilla_twin(tmp_path, capsys):
    import tensorflow_datasets as tfds

    out = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=64):
        res = run(cifar.main, [
            "--dataset", "cifar100", "--vanilla", "--arch", "resnet_small", "--width", "4", "--epochs", "1",
            "--train-limit", "32", "--val-size", "20", "--eval-limit", "24", "--batch-size", "16",
            "--download", "--ood", "svhn_cropped", "--out", out, "--verbose", "0", "--no-plots", "--no-backup"])
    assert isinstance(res, dict), capsys.readouterr()
    keys = {f"vanilla/{s}" for s in ("msp", "energy", "odin", "max_logit", "entropy")}
    rep = check_report(out / "report.json", keys, ["svhn_cropped"])
    assert rep["config"]["train"]["vanilla"]["anchored"] is False and rep["id_set"] == "cifar100"
    assert (out / "vanilla.keras").exists() and not (out / "serving").exists()
    assert not list(out.glob("*.png"))


def test_cifar_trainer_user_errors(tmp_path, capsys):
    err = user_error(cifar.main, ["--ood", "svhn_cropped,not_a_set", "--out", tmp_path / "r"], capsys)
    assert "unknown data set name 'not_a_set'" in err and "svhn_cropped" in err
    start = time.monotonic()
    err = user_error(cifar.main, ["--data-dir", tmp_path / "no_tfds", "--out", tmp_path / "r"], capsys)
    assert time.monotonic() - start < 10
    assert "'cifar10' is not prepared" in err and "--download" in err and "--data-dir" in err
    assert run(cifar.main, ["--arch", "resnet50"]) == 2  # argparse: not a CIFAR choice


# ------------------------------------------------------------ trainers.imagenet


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_imagenet")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for c in range(3):
            d = root / split / f"n0{c}"
            d.mkdir(parents=True)
            for i in range(n):  # class-dependent brightness, so the classes differ
                a = np.clip(rng.normal(60 + 60 * c, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i}.JPEG", format="JPEG")
    write_images(root / "ood", 6, (48, 40, 3), seed=1)
    return root


def test_imagenet_pipeline_shapes():
    import tensorflow as tf

    img = tf.constant(np.random.default_rng(0).integers(0, 256, (48, 64, 3)), tf.uint8)
    crop = imagenet.train_transform(img, tf.constant([1, 2], tf.int64), 28)
    val = imagenet.val_transform(img, 28)
    assert crop.shape == (28, 28, 3) and val.shape == (28, 28, 3)
    assert 0.0 <= float(tf.reduce_min(crop)) and float(tf.reduce_max(crop)) <= 255.0
    again = imagenet.train_transform(img, tf.constant([1, 2], tf.int64), 28)
    assert np.array_equal(crop.numpy(), again.numpy())  # stateless: same seed, same crop
    other = imagenet.train_transform(img, tf.constant([1, 3], tf.int64), 28)
    assert not np.array_equal(crop.numpy(), other.numpy())
    gray = imagenet.val_transform(tf.zeros((30, 30, 1), tf.uint8), 28)
    assert gray.shape == (28, 28, 3)


@pytest.mark.slow
def test_imagenet_trainer_on_tiny_folder(tiny_imagenet, tmp_path, capsys):
    out = tmp_path / "run"
    res = run(imagenet.main, [
        "--train-folder", tiny_imagenet / "train", "--val-folder", tiny_imagenet / "val",
        "--arch", "resnet_small", "--width", "8", "--image-size", "28", "--epochs", "1",
        "--batch-size", "8", "--data-dir", tmp_path / "no_tfds", "--verbose", "0", "--no-plots",
        "--ood", f"default,folder:{tiny_imagenet / 'ood'}", "--out", out])
    printed = capsys.readouterr().out
    assert isinstance(res, dict), printed
    for i in range(1, 6):
        assert f"skipped imagenet2012_corrupted/gaussian_blur_{i}: " in printed
    rep = check_report(out / "report.json", ANCHORED_KEYS, [f"folder:{tiny_imagenet / 'ood'}"])
    assert rep["config"]["steps_per_epoch"] == 3  # 24 images // 8
    cfg = rep["config"]["train"]
    assert (cfg["lr_milestones"], cfg["lr_gamma"], cfg["consistency_every"], cfg["weight_decay"]) == (
        [30, 60, 90], 0.1, 10, 1e-4)
    assert 0.0 <= rep["models"]["anchored"]["id_accuracy"] <= 1.0
    for f in ("anchored.keras", "job.json", "serving/saved_model.pb", "report.md"):
        assert (out / f).exists(), f
    assert not list(out.glob("*.png"))  # --no-plots
    assert rep["config"]["train"]["mean"] == pytest.approx(imagenet.IMAGENET_MEAN)


def test_imagenet_trainer_user_errors(tiny_imagenet, tmp_path, capsys):
    err = user_error(imagenet.main, ["--train-folder", tiny_imagenet / "train", "--out", tmp_path], capsys)
    assert "--val-folder" in err
    err = user_error(imagenet.main, ["--data-dir", tmp_path / "no_tfds", "--out", tmp_path], capsys)
    assert "'imagenet2012' is not prepared" in err and "ILSVRC2012_img_train.tar" in err
    err = user_error(imagenet.main, ["--train-folder", tiny_imagenet / "ood", "--val-folder",
                                     tiny_imagenet / "val", "--out", tmp_path], capsys)
    assert "one subfolder per class" in err


# --------------------------------------------------------------------- eval.ood


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """An anchored and a vanilla resnet_small for Fashion-MNIST (built, not trained: the CLI
    is under test here), saved as the trainers save them; they carry their statistics."""
    from amp_tf import data
    from amp_tf.training import TrainConfig, build_model

    root = tmp_path_factory.mktemp("models")
    x, _ = data.to_numpy(data.load("fashion_mnist", "train"), limit=1000)
    mean, std = data.channel_stats(x)
    for anchored in (True, False):
        cfg = TrainConfig(arch="resnet_small", anchored=anchored, backbone_kwargs={"width": 4},
                          mean=tuple(mean.tolist()), std=tuple(std.tolist()))
        model = build_model(cfg, (28, 28, 1), 10)
        model(x[:2])
        model.save(root / f"{'anchored' if anchored else 'vanilla'}.keras")
    return root


def test_eval_anchored_md(saved_models, tmp_path, capsys):
    out = tmp_path / "a"
    res = run(ood.main, ["--model", saved_models / "anchored.keras", "--id", "fashion_mnist",
                         "--ood", "digits,fmnist_blur_3", "--limit", 100, "--out", out, "--verbose", 0])
    printed = capsys.readouterr().out
    assert isinstance(res, dict)
    rep = check_report(out / "report.json", ANCHORED_KEYS, ["digits", "fmnist_blur_3"])
    assert rep["config"]["num_anchors"] == 5
    assert 0.0 <= rep["models"]["anchored"]["id_accuracy"] <= 1.0
    assert printed.startswith("# anchored.keras: fashion_mnist (ID)") and "`anchored/amp[sum,exp]`" in printed
    for f in ("report.md", "roc_digits.png", "densities_anchored_amp.png", "auroc_vs_corruption.png"):
        assert (out / f).exists(), f


def test_eval_anchored_csv_positive_ood(saved_models, tmp_path, capsys):
    lone = tmp_path / "lone"  # a copy alone in its folder: the model carries its statistics
    lone.mkdir()
    (lone / "m.keras").write_bytes((saved_models / "anchored.keras").read_bytes())
    out = tmp_path / "c"
    run(ood.main, ["--model", lone / "m.keras", "--id", "fashion_mnist", "--ood", "digits,fmnist_blur_3",
                   "--scores", "amp,amp[sum,exp]", "--positive", "ood", "--format", "csv", "--limit", 100,
                   "--num-anchors", 3, "--train-limit", 500, "--no-plots", "--out", out, "--verbose", 0])
    printed = capsys.readouterr().out
    rep = check_report(out / "report.json", {"anchored/amp", "anchored/amp[sum,exp]"},
                       ["digits", "fmnist_blur_3"], positive="ood")
    csv_text = (out / "report.csv").read_text()
    rows = list(csv.reader(io.StringIO(csv_text)))
    assert rows[0] == ["score", "ood_set", "metric", "value"]
    assert {(r[0], r[1]) for r in rows[1:]} == {(k, s) for k in ("anchored/amp", "anchored/amp[sum,exp]")
                                                for s in ("digits", "fmnist_blur_3", "mean")}
    auroc = [float(r[3]) for r in rows[1:] if r[2] == "auroc"]
    assert len(auroc) == 6 and all(0.0 <= v <= 100.0 for v in auroc)  # csv shows percent
    assert printed == csv_text
    assert not list(out.glob("*.png")) and not (out / "report.md").exists()


def test_eval_vanilla_json(saved_models, tmp_path, capsys):
    out = tmp_path / "v"
    run(ood.main, ["--model", saved_models / "vanilla.keras", "--id", "fashion_mnist",
                   "--ood", "digits,fmnist_blur_3", "--scores", "msp,energy,odin,amp", "--format", "json",
                   "--limit", 100, "--no-plots", "--out", out, "--verbose", 0])
    printed = json.loads(capsys.readouterr().out)
    keys = {"vanilla/msp", "vanilla/energy", "vanilla/odin", "vanilla/amp"}
    rep = check_report(out / "report.json", keys, ["digits", "fmnist_blur_3"])
    assert set(printed["scores"]) == keys and printed["best"] == rep["best"]
    assert rep["model_kind"] == "vanilla" and rep["config"]["num_anchors"] is None


def test_eval_resize_and_channels(saved_models, tmp_path, capsys):
    model = saved_models / "anchored.keras"
    base = ["--model", model, "--id", "fashion_mnist", "--limit", 50, "--no-plots", "--verbose", 0]
    big = write_images(tmp_path / "gray32", 12, (32, 32, 1))
    err = user_error(ood.main, base + ["--ood", f"folder:{big}", "--out", tmp_path / "x"], capsys)
    assert "32x32" in err and "28x28" in err and "--resize" in err
    run(ood.main, base + ["--ood", f"folder:{big}", "--resize", "pil_bicubic", "--out", tmp_path / "r"])
    check_report(tmp_path / "r" / "report.json", ANCHORED_KEYS, [f"folder:{big}"])
    rgb = write_images(tmp_path / "rgb28", 12, (28, 28, 3))
    err = user_error(ood.main, base + ["--ood", f"folder:{rgb}", "--out", tmp_path / "x"], capsys)
    assert "3 channel(s)" in err and "--channels" in err
    run(ood.main, base + ["--ood", f"folder:{rgb}", "--channels", "--out", tmp_path / "ch"])
    check_report(tmp_path / "ch" / "report.json", ANCHORED_KEYS, [f"folder:{rgb}"])
    assert not (tmp_path / "x").exists()  # errors come before any output is written


def test_eval_user_errors(saved_models, tmp_path, capsys):
    model = saved_models / "anchored.keras"
    base = ["--id", "fashion_mnist", "--limit", 50, "--out", tmp_path / "x", "--verbose", 0]
    err = user_error(ood.main, ["--model", model, "--ood", "digits,no_such_set"] + base, capsys)
    assert "unknown data set name 'no_such_set'" in err and "fashion_mnist" in err and "folder:<path>" in err
    start = time.monotonic()
    err = user_error(ood.main, ["--model", model, "--ood", "svhn_cropped", "--data-dir", tmp_path / "empty"]
                     + base, capsys)
    assert time.monotonic() - start < 10
    assert "'svhn_cropped' is not prepared" in err and "--download" in err and "--data-dir" in err
    empty = tmp_path / "no_images"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    err = user_error(ood.main, ["--model", model, "--ood", f"folder:{empty}"] + base, capsys)
    assert "holds no readable images" in err and "notes.txt" in err
    bad = tmp_path / "x.keras"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    err = user_error(ood.main, ["--model", bad, "--ood", "digits"] + base, capsys)
    assert str(bad) in err and "expected a .keras file" in err
    err = user_error(ood.main, ["--model", tmp_path / "missing.keras", "--ood", "digits"] + base, capsys)
    assert "no such file" in err
    err = user_error(ood.main, ["--model", model, "--ood", "digits", "--scores", "amp,odin"] + base, capsys)
    assert "unknown score(s) odin" in err and "amp[sum,divide]" in err and "neg_tau" in err
    err = user_error(ood.main, ["--model", saved_models / "vanilla.keras", "--ood", "digits",
                                "--scores", "neg_tau"] + base, capsys)
    valid = err.split("for a vanilla model; valid: ")[1].split(", or all")[0].split(", ")
    assert {"amp", "energy", "entropy", "max_logit", "msp", "odin"} <= set(valid) and "neg_tau" not in valid
    err = user_error(ood.main, ["--model", model, "--ood", "digits", "--num-anchors", 1] + base, capsys)
    assert "--num-anchors" in err and "K >= 2" in err
    assert not (tmp_path / "x").exists()
    # never into a training run's folder, nor a non-empty folder without --overwrite
    run_like = tmp_path / "run"
    run_like.mkdir()
    (run_like / "job.json").write_text("{}")
    err = user_error(ood.main, ["--model", model, "--ood", "digits", "--id", "fashion_mnist", "--limit", 50,
                                "--out", run_like, "--verbose", 0], capsys)
    assert "training run's folder" in err
    used = tmp_path / "used"
    used.mkdir()
    (used / "report.md").write_text("old")
    err = user_error(ood.main, ["--model", model, "--ood", "digits", "--id", "fashion_mnist", "--limit", 50,
                                "--out", used, "--verbose", 0], capsys)
    assert "--overwrite" in err and (used / "report.md").read_text() == "old"


@pytest.mark.slow
def test_eval_cli_exit_code_in_a_subprocess(tmp_path):
    """The one subprocess: `python -m eval.ood` on a non-model file exits 2 with one error line."""
    bad = tmp_path / "x.keras"
    bad.write_bytes(b"\x00not a zip archive" * 100)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("AMP_TF_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "eval.ood", "--model", str(bad), "--id", "fashion_mnist",
                           "--ood", "digits", "--out", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"error: --model {bad} is not a Keras model file" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_backup_arg():
    import argparse

    ns = argparse.Namespace(no_backup=False, backup_dir=None)
    assert common.backup_arg(ns, "anchored") is True
    ns.backup_dir = "/tmp/bk"
    assert common.backup_arg(ns, "anchored") == "/tmp/bk/anchored"
    ns.no_backup = True
    assert common.backup_arg(ns, "anchored") is False
