"""The typed job (amp_tf.config): TF-free, presets and flags agree on it, and the pipeline runs a streamed
ID set (StreamedIDData) through the same scoring as an in-memory one."""
import subprocess
import sys
from pathlib import Path

import numpy as np

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


def test_job_config_round_trips_through_the_flags():
    from amp_tf.cli import common

    job = presets.job("table2-cifar10")
    again = job_from_settings(common.job_flags(job), scores=job.scores)
    assert again == job
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
