"""The typed job (amp_tf.config): TF-free, presets and flags agree on it, and the pipeline runs a streamed
ID set (StreamedIDData) through the same scoring as an in-memory one."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amp_tf.run import presets
from amp_tf.config import DataConfig, JobConfig, TrainConfig, job_from_settings
from amp_tf.run.flags import Parser, add_training_flags, train_config

ROOT = Path(__file__).resolve().parents[1]


def test_config_flags_and_presets_import_no_tensorflow():
    code = ("import sys; sys.argv = ['amp-fmnist']; import amp_tf.config, amp_tf.run.flags, amp_tf.run.presets, "
            "amp_tf.errors; print(sorted({'tensorflow', 'keras', 'numpy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_flags_and_settings_make_the_same_train_config():
    """A recipe through the flags (a trainer) and through job_from_settings (a preset, a benchmark)."""
    recipe = dict(presets.FMNIST_RECIPE)
    p = Parser(add_help=False)
    add_training_flags(p, recipe)
    from_flags = train_config(p.parse_args([]), backbone_kwargs={"width": recipe["width"]})
    job = job_from_settings(recipe)
    assert job.train == from_flags
    assert (job.data.val_size, job.finetune_epochs, job.num_anchors) == (5000, recipe["finetune_epochs"], 5)
    assert presets.job("fmnist-offline").train == from_flags


def test_a_presets_flags_and_its_job_come_from_its_settings():
    """One source: a trainer's flag defaults (`flag_values`) make exactly the preset's JobConfig; no
    JobConfig is ever turned back into flags."""
    from amp_tf.cli import common

    assert not hasattr(common, "job_flags")
    for name in presets.names("train"):
        assert job_from_settings(presets.flag_values(name)) == presets.job(name), name
    flags = presets.flag_values("table2-cifar10")
    assert "svhn_cropped" in flags["ood"].split(",") and flags["lr_milestones"] == "60,120,160"
    assert isinstance(JobConfig().train, TrainConfig) and isinstance(JobConfig().data, DataConfig)


def test_streamed_id_data_scores_like_arrays():
    """score_models over a tf.data stream of batches gives the arrays' numbers (ID and OOD)."""
    import tensorflow as tf

    from amp_tf.run.pipeline import IDData, StreamedIDData, score_models
    from amp_tf.run.training import build_model

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 12, 12, 1)).astype("uint8")
    y = rng.integers(0, 3, 60)
    d = IDData("toy", x[:30], y[:30], x[30:45], y[30:45], x[45:], y[45:], 3)
    cfg = TrainConfig(arch="resnet_small", backbone_kwargs={"width": 4}, mean=tuple(d.mean.tolist()),
                      std=tuple(d.std.tolist()))
    model = build_model(cfg, (12, 12, 1), 3)
    model(x[:2])
    ood = x[:20] // 2

    def stream(images, labels):
        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(7)

    streamed = StreamedIDData("toy", 3, (12, 12, 1), d.mean, d.std, None, 1, d.x_val, d.y_val,
                              stream(d.x_test, d.y_test), lambda: d.x_train, num_train=30)
    trained = {"anchored": (model, cfg, 0.0)}
    a = score_models(trained, d, {"half": ood}, num_anchors=3, log=lambda *_: None)
    b = score_models(trained, streamed, {"half": stream(ood, np.zeros(20))}, num_anchors=3, log=lambda *_: None)
    assert np.array_equal(a[3], b[3])  # the same anchors
    assert a[2]["anchored"]["id_accuracy"] == b[2]["anchored"]["id_accuracy"]
    for key, per_set in a[0].items():
        for m, v in per_set["half"].items():
            other = b[0][key]["half"][m]
            assert (np.isclose(v, other, atol=1e-6) if isinstance(v, float) else v == other), (key, m)
    assert streamed.sizes() == {"train": 30, "val": 15, "test": None, "steps_per_epoch": 1}


def test_every_trainer_maps_its_flags_onto_a_job_config(monkeypatch):
    from amp_tf.cli import cifar, common, fmnist, imagenet

    monkeypatch.setattr(cifar, "check_id_data", lambda args: None)  # the flags' mapping, not CIFAR's files
    monkeypatch.setattr(imagenet, "check_tfds_imagenet", lambda args: None)  # nor ImageNet's

    for cli, argv, id_set in ((fmnist, ["--near"], "fashion_mnist"), (cifar, ["--dataset", "cifar100"], "cifar100"),
                              (imagenet, ["--image-size", "64"], "imagenet2012")):
        p = cli.parser()
        args = p.parse_args(argv)
        cli.combine(args, common.explicit_flags(p, argv))
        job = cli.job_config(args)
        assert isinstance(job, JobConfig) and job.data.id_set == id_set and job.ood, cli.__name__
        assert job.train.epochs == args.epochs and job.num_anchors == args.num_anchors
    assert fmnist.job_config(fmnist.parser().parse_args(["--near"])).data.near
    assert imagenet.job_config(imagenet.parser().parse_args(["--image-size", "64"])).data.image_size == 64


def test_job_models_turns_a_job_into_its_models_in_training_order(tmp_path):
    """`run_job` takes the `JobConfig`; its models come from `job_models(job)` (the CLIs map flags once)."""
    from amp_tf.cli import cifar, fmnist, imagenet
    from amp_tf.run.pipeline import GivenModel, job_models

    def models(cli, argv):
        args = cli.parser().parse_args(argv)
        return {n: (c.anchored, getattr(c, "epochs", None), getattr(c, "init_from", None)) if not isinstance(
            c, GivenModel) else ("given", c.path) for n, c in job_models(cli.job_config(args)).items()}

    ep, ft = fmnist.DEFAULTS["epochs"], fmnist.DEFAULTS["finetune_epochs"]
    assert models(fmnist, []) == {"vanilla": (False, ep, None), "anchored": (True, ft, "job:vanilla")}
    assert models(fmnist, ["--finetune-epochs", "0", "--epochs", "3"]) == {"anchored": (True, 3, None),
                                                                           "vanilla": (False, 3, None)}
    assert models(fmnist, ["--skip-vanilla", "--finetune-epochs", "0"]) == {"anchored": (True, ep, None)}
    v = str(tmp_path / "v.keras")
    assert models(fmnist, ["--init-from", v, "--finetune-epochs", "1"]) == {"vanilla": ("given", v),
                                                                            "anchored": (True, 1, "job:vanilla")}
    assert models(fmnist, ["--init-from", v, "--skip-vanilla", "--finetune-epochs", "1"]) == {
        "anchored": (True, 1, v)}
    assert models(cifar, ["--vanilla"]) == {"vanilla": (False, cifar.DEFAULTS["epochs"], None)}
    assert list(models(cifar, [])) == ["anchored"]
    job = imagenet.job_config(imagenet.parser().parse_args(["--init-from", v, "--finetune-epochs", "2"]))
    assert job.calibration == "divide" and models(imagenet, ["--init-from", v, "--finetune-epochs", "2"]) == {
        "anchored": (True, 2, v)}
    cfg = job_models(job)["anchored"]
    assert cfg.arch is None and cfg.mean == job.train.mean  # fine-tuned from the file, ImageNet statistics
    with pytest.raises(ValueError, match="finetune_epochs 2: .* set finetune_epochs=0"):
        job_models(JobConfig(finetune_epochs=2, models=("anchored",)))
    with pytest.raises(ValueError, match="models: "):
        job_models(JobConfig(models=("anchored", "twin")))
