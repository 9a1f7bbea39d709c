"""Presets of the paper's tables (amp_tf.run.presets) on every CLI (--preset / --dry-run), one
tiny real run of the offline preset, and the Table 7 resize study (eval.resize_study) on a
generated folder of real PNG files against a tiny saved model."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from amp_tf.run import presets
from amp_tf.cli import common, ood, resize_study
from amp_tf.cli import cifar, fmnist, imagenet
from tests.helpers import run_cli

TRAINERS = {"trainers.cifar": cifar, "trainers.imagenet": imagenet, "trainers.fmnist": fmnist}


run = run_cli


def dry_run(main, argv, capsys):
    capsys.readouterr()
    code = run(main, list(argv) + ["--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def user_error(main, argv, capsys):
    capsys.readouterr()
    code = run(main, argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


# ------------------------------------------------------------------ registry


def test_registry_names_and_contents():
    names = presets.names()
    for n in ("table2-cifar10", "table2-cifar100", "table3-resnet34-cifar10", "table3-resnet34-cifar100",
              "table4-c10-vs-c100", "table4-c100-vs-c10", "table5-imagenet-c", "table6-scood-cifar10",
              "table6-scood-cifar100", "table7-resize", "table8-ablation", "fmnist-offline"):
        assert n in names
    assert len(names) == len(set(names))
    for n in names:
        p = presets.get(n)
        assert p.trainer in TRAINERS and p.dataset and p.arch and p.ood and p.metrics
        assert set(presets.values(n, "eval")) >= {"id", "ood", "scores"}
    t2 = presets.job("table2-cifar10", "trainers.cifar").train  # Appendix B, CIFAR: a typed TrainConfig
    assert (t2.arch, t2.epochs, t2.lr, t2.weight_decay, t2.lr_milestones, t2.lr_gamma, t2.batch_size,
            t2.consistency_every, t2.warmup_epochs) == ("wrn40_2", 200, 0.1, 5e-4, (60, 120, 160), 0.2, 128, 5, 0.0)
    t5 = presets.job("table5-imagenet-c", "trainers.imagenet")  # Appendix B, ImageNet
    assert (t5.train.arch, t5.train.epochs, t5.train.weight_decay, t5.train.lr_milestones, t5.train.lr_gamma,
            t5.train.consistency_every, t5.data.image_size) == ("resnet50_imagenet", 120, 1e-4, (30, 60, 90), 0.1, 10, 224)
    assert "imagenet2012_corrupted/gaussian_blur_5" in t5.ood
    fm = presets.job("fmnist-offline")  # the main job: the same TrainConfig the trainer's defaults give
    assert (fm.finetune_epochs, fm.data.val_size, fm.train.backbone_kwargs) == (
        presets.FMNIST_RECIPE["finetune_epochs"], 5000, {"width": 16})
    with pytest.raises(ValueError, match="trains with trainers.cifar"):
        presets.job("table2-cifar10", "trainers.fmnist")
    assert presets.get("table4-c10-vs-c100").ood == ("cifar100",)
    assert presets.get("table3-resnet34-cifar100").ood[-1] == "cifar10"
    assert presets.names("resize_study") == ["table7-resize"]


def test_data_env_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv(presets.DATA_ENV, str(tmp_path))
    ood_sets = presets.values("table2-cifar10", "eval")["ood"].split(",")
    assert f"folder:{tmp_path}/iSUN" in ood_sets and "svhn_cropped" in ood_sets
    assert presets.unset_env("table2-cifar10") == []
    monkeypatch.delenv(presets.DATA_ENV)
    assert "folder:$AMP_DATA/iSUN" in presets.values("table2-cifar10", "eval")["ood"]
    assert presets.unset_env("table2-cifar10") == ["AMP_DATA"] and presets.unset_env("fmnist-offline") == []


# --------------------------------------------------------- --preset --dry-run


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_resolves_on_its_clis(name, capsys, tmp_path):
    p = presets.get(name)
    missing = tmp_path / "no_data"  # a dry run loads nothing, so a missing data dir is fine
    cfg = dry_run(TRAINERS[p.trainer].main, ["--preset", name, "--data-dir", missing], capsys)
    assert cfg["preset"] == name and cfg["cli"] == p.trainer and cfg["table"] == p.table
    assert cfg["dataset"] == p.dataset and cfg["arch"] == p.arch == cfg["args"]["arch"]
    assert cfg["ood"] == [presets.expand(o) for o in p.ood]
    flags = presets.flag_values(name)
    for k, v in flags.items():  # the trainer takes every setting it has a flag for
        assert cfg["args"].get(k, v) == v, k
    assert {"epochs", "lr", "lr_milestones", "weight_decay", "num_anchors"} <= set(cfg["args"]) & set(flags)
    cfg = dry_run(ood.main, ["--preset", name], capsys)  # no --model needed for a dry run
    assert cfg["dataset"] == p.dataset == cfg["args"]["id"] and cfg["arch"] == p.arch
    assert cfg["ood"] == [presets.expand(o) for o in p.ood] and cfg["args"]["scores"] == p.scores
    assert cfg["args"]["model"] is None and cfg["paper_metrics"] == list(p.metrics)
    if p.resize_study is not None:
        cfg = dry_run(resize_study.main, ["--preset", name, "--model", "m.keras"], capsys)
        assert cfg["ood"] == [f"resize_{m}" for m in p.resize_study["methods"].split(",")]
        assert cfg["args"]["ood_folder"] == presets.expand(p.resize_study["ood_folder"])


def test_explicit_flags_override_the_preset(capsys):
    cfg = dry_run(cifar.main, ["--preset", "table2-cifar10", "--epochs", "7", "--arch", "resnet18",
                               "--ood", "default,svhn_cropped", "--lr-milestones", "2,4"], capsys)
    a = cfg["args"]
    assert (a["epochs"], a["arch"], a["lr_milestones"]) == (7, "resnet18", "2,4")
    assert (a["lr"], a["weight_decay"], a["dataset"], a["resize"]) == (0.1, 5e-4, "cifar10", "pil_bilinear")
    assert cfg["ood"] == list(cifar.PAPER_OOD)  # 'default' expands; svhn_cropped is in it already
    cfg = dry_run(ood.main, ["--preset", "table8-ablation", "--model", "x.keras", "--num-anchors", "20",
                             "--scores", "amp,msp"], capsys)
    assert (cfg["args"]["num_anchors"], cfg["args"]["scores"], cfg["args"]["id"]) == (20, "amp,msp", "cifar10")
    cfg = dry_run(fmnist.main, ["--preset", "fmnist-offline", "--holdout", "--width", "4"], capsys)
    assert (cfg["dataset"], cfg["ood"], cfg["args"]["width"]) == ("fmnist_holdout_id", ["fmnist_holdout_ood"], 4)
    cfg = dry_run(imagenet.main, [], capsys)  # no preset: the CLI's own defaults
    assert cfg["preset"] is None and cfg["dataset"] == "imagenet2012" and len(cfg["ood"]) == 5


def test_unknown_or_misplaced_preset_errors(capsys):
    for main in (cifar.main, imagenet.main, fmnist.main, ood.main, resize_study.main):
        err = user_error(main, ["--preset", "table9-nope", "--dry-run"], capsys)
        assert "unknown preset 'table9-nope'" in err
        assert all(n in err for n in presets.names())
    err = user_error(cifar.main, ["--preset", "table5-imagenet-c", "--dry-run"], capsys)
    assert "trains with trainers.imagenet" in err and "python -m trainers.imagenet --preset table5-imagenet-c" in err
    err = user_error(fmnist.main, ["--preset", "table2-cifar10"], capsys)
    assert "trains with trainers.cifar" in err
    err = user_error(resize_study.main, ["--preset", "table2-cifar10", "--model", "m.keras"], capsys)
    assert "no resize_study settings" in err and "table7-resize" in err
    capsys.readouterr()
    assert run(ood.main, ["--preset", "table2-cifar10"]) == 2  # --model stays required without --dry-run
    assert "--model" in capsys.readouterr().err


# ------------------------------------------------------ Table 7 resize study


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An anchored resnet_small for Fashion-MNIST (built, not trained); it carries its statistics."""
    from amp_tf import data
    from amp_tf.run.training import TrainConfig, build_model

    root = tmp_path_factory.mktemp("model")
    x, _ = data.to_numpy(data.load("fashion_mnist", "train"), limit=500)
    mean, std = data.channel_stats(x)
    model = build_model(TrainConfig(arch="resnet_small", backbone_kwargs={"width": 4},
                                    mean=tuple(mean.tolist()), std=tuple(std.tolist())), (28, 28, 1), 10)
    model(x[:2])
    model.save(root / "anchored.keras")
    return root / "anchored.keras"


def shapes_folder(folder, n, size=64, seed=0):
    """`n` RGB PNG files of random rectangles and ellipses on a random background."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(4):
            x0, y0 = (int(v) for v in rng.integers(0, size - 16, 2))
            box = [x0, y0, x0 + int(rng.integers(4, 24)), y0 + int(rng.integers(4, 24))]
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
        im.save(folder / f"{i:03d}.png")
    return folder


def test_resize_study_on_generated_folder(tiny_model, tmp_path, capsys):
    folder = shapes_folder(tmp_path / "shapes", 20)
    out = tmp_path / "study"
    res = run(resize_study.main, ["--model", tiny_model, "--id", "fashion_mnist", "--ood-folder", folder,
                                  "--channels", "--limit", 64, "--train-limit", 200, "--scores", "amp,msp",
                                  "--no-plots", "--save-images", 4, "--out", out, "--verbose", 0])
    assert isinstance(res, dict), capsys.readouterr()
    names = [f"resize_{m}" for m in resize_study.METHODS]
    rep = json.loads((out / "report.json").read_text())
    assert rep["ood_sets"] == names and rep["id_set"] == "fashion_mnist"
    assert set(rep["scores"]) == {"anchored/amp", "anchored/msp"}
    for per_set in rep["scores"].values():
        assert list(per_set) == names  # one OOD entry per method
        assert all(0.0 <= m["auroc"] <= 1.0 for m in per_set.values())
    study = rep["resize_study"]
    assert study["num_images"] == 20 and study["image_size"] == [28, 28] and study["channels"] == 1
    assert study["mean_abs_pixel_diff"]["resize_pil_nearest"]["resize_pil_lanczos"] > 0
    nearest = np.stack([np.asarray(Image.open(p)) for p in sorted((out / "images/resize_pil_nearest").glob("*.png"))])
    lanczos = np.stack([np.asarray(Image.open(p)) for p in sorted((out / "images/resize_pil_lanczos").glob("*.png"))])
    assert nearest.shape == lanczos.shape == (4, 28, 28)
    assert np.abs(nearest.astype(int) - lanczos.astype(int)).sum() > 0  # the methods give different pixels
    assert "## Resize study" in (out / "report.md").read_text()
    assert not [n for n in resize_study._VARIANTS]  # the in-memory sets are gone after the study


def test_resize_study_user_errors(tiny_model, tmp_path, capsys):
    base = ["--model", tiny_model, "--id", "fashion_mnist", "--out", tmp_path / "x", "--verbose", 0]
    small = tmp_path / "small"
    small.mkdir()
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(small / f"{i}.png")
    err = user_error(resize_study.main, base + ["--ood-folder", small], capsys)
    assert "nothing to resize" in err
    err = user_error(resize_study.main, base + ["--ood-folder", small, "--methods", "pil_box"], capsys)
    assert "unknown resize method(s) pil_box" in err and "pil_lanczos" in err
    err = user_error(resize_study.main, base + ["--ood-folder", small, "--ood", "digits"], capsys)
    assert "--ood: not used" in err
    err = user_error(resize_study.main, base + ["--ood-folder", tmp_path / "missing"], capsys)
    assert err.startswith("error: --ood-folder ") and "missing: no such folder" in err  # before TensorFlow
    assert not Path(tmp_path / "x").exists()
