"""One contract at every door (amp_tf.contract): every entry point that takes a user's model gets the
same bad inputs and gives the same answer.

The doors: the library (`finetune_anchored`, `anchored_model`, `train(init_from=...)`,
`pipeline.GivenModel.load`), the trainers' --init-from (fmnist, cifar, imagenet), eval.ood --model,
and the tuner's / trainers.cifar's --arch/--width; the examples reach the model through
`finetune_anchored` (examples/anchor_your_model.py). The inputs: a model ending in softmax, one
ending in sigmoid (refused with the fix: drop the final activation), and a model that takes any
image size (accepted wherever the data's images fit it).
"""
import contextlib
import io
import types

import keras
import numpy as np
import pytest

import amp_tf  # noqa: F401  (registers the serializables)
from amp_tf import contract
from amp_tf.detection import detectors
from amp_tf.method.anchoring import anchored_model
from amp_tf.cli import cifar, fmnist, imagenet, ood, tune
from amp_tf.config import TrainConfig
from amp_tf.run.pipeline import GivenModel
from amp_tf.run.training import build_model, finetune_anchored
from tests.helpers import run_cli

FIX = r"not logits.*Drop the final activation: build the last layer with activation=None"
HEADS = {"softmax": r"ends in a softmax .*" + FIX, "sigmoid": r"ends in a sigmoid .*" + FIX}


def _model(shape, head=None, classes=10):
    inp = keras.Input(shape)
    z = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    z = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="stem")(z))
    return keras.Model(inp, keras.layers.Dense(classes, activation=head, name="predictions")(z))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("doors")
    out = {}
    for head in HEADS:
        for name, shape in (("fmnist", (28, 28, 1)), ("cifar", (32, 32, 3)), ("imagenet", (64, 64, 3))):
            out[head, name] = root / f"{name}_{head}.keras"
            _model(shape, head).save(out[head, name])
    out["any"] = root / "any.keras"
    _model((None, None, 1)).save(out["any"])
    out["root"] = root
    return out


def _refused(main, argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_cli(main, [str(a) for a in argv]) == 2, err.getvalue()
    return err.getvalue().strip().splitlines()[-1]


def _data(shape=(28, 28, 1)):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (64, *shape), dtype=np.uint8), rng.integers(0, 10, 64)


# ------------------------------------------------------------------ the library
LIBRARY = {
    "finetune_anchored": lambda m, x, y: finetune_anchored(m, x, y, epochs=1, batch_size=32, verbose=0),
    "anchored_model": lambda m, x, y: anchored_model(m),
    "train(init_from=)": lambda m, x, y: build_model(TrainConfig(anchored=True), x.shape[1:], 10, init_from=m),
    "GivenModel.load": lambda m, x, y: GivenModel("given.keras", model=m).load(
        types.SimpleNamespace(image_shape=x.shape[1:], num_classes=10, name="fashion_mnist")),
}


@pytest.mark.parametrize("door", sorted(LIBRARY))
@pytest.mark.parametrize("head", sorted(HEADS))
def test_library_doors_refuse_a_probability_head(door, head):
    x, y = _data()
    with pytest.raises(ValueError, match=HEADS[head]):
        LIBRARY[door](_model((28, 28, 1), head), x, y)


@pytest.mark.parametrize("door", sorted(LIBRARY))
def test_library_doors_accept_a_model_that_takes_any_size(door):
    x, y = _data()
    LIBRARY[door](_model((None, None, 1)), x, y)  # no "takes (None, None, 1) images" refusal


# ------------------------------------------------------------------ the commands
def _commands(files, head):
    never = files["root"] / "never"
    return {
        "trainers.fmnist --init-from": (fmnist.main, ["--init-from", files[head, "fmnist"], "--out", never]),
        "trainers.cifar --init-from": (cifar.main, ["--init-from", files[head, "cifar"], "--out", never,
                                                    "--dry-run"]),
        "trainers.imagenet --init-from": (imagenet.main, ["--init-from", files[head, "imagenet"], "--out", never,
                                                          "--dry-run"]),
        "eval.ood --model": (ood.main, ["--model", files[head, "fmnist"], "--id", "fashion_mnist", "--ood", "digits",
                                        "--out", never, "--verbose", "0"]),
    }


@pytest.mark.parametrize("door", ["trainers.fmnist --init-from", "trainers.cifar --init-from",
                                  "trainers.imagenet --init-from", "eval.ood --model"])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_command_doors_refuse_a_probability_head(files, door, head):
    main, argv = _commands(files, head)[door]
    line = _refused(main, argv)
    assert line.startswith("error: ") and "Traceback" not in line
    import re

    assert re.search(HEADS[head], line), line
    assert not (files["root"] / "never").exists()


def test_command_doors_accept_a_model_that_takes_any_size(files, capsys):
    any_model = files["any"]
    assert run_cli(fmnist.main, ["--init-from", any_model, "--dry-run"]) == 0  # passes every check before data
    capsys.readouterr()
    got = ood.model_geometry(keras.models.load_model(any_model), lambda: (28, 28, 1))
    assert got == (False, (28, 28), 1)  # eval.ood reads the ID set's images as they are


def test_arch_width_is_one_check_for_the_trainer_and_the_tuner(files):
    cifar_line = _refused(cifar.main, ["--arch", "wrn40_2", "--width", "8", "--out", files["root"] / "never"])
    tune_line = _refused(tune.main, ["--arch", "wrn40_2", "--width", "4,8", "--out", files["root"] / "never"])
    assert cifar_line == tune_line == ("error: --width: only resnet_small has a --width; wrn40_2 has a fixed width. "
                                       "Drop --width, or use --arch resnet_small.")
    args = tune.parser().parse_args(["--arch", "wrn40_2"])
    assert tune.search_space(args)["width"] == []  # no --width: nothing to refuse, nothing searched


def test_eval_ood_offers_every_detector_of_the_model_kind():
    assert sorted(ood.valid_scores(True)) == detectors.names(anchored=True)  # the registry is the one list
    assert ood.choose_scores("knn,amp+mahalanobis,mahalanobis,amp+knn", True) == [
        "knn", "mahalanobis", "amp+knn", "amp+mahalanobis"]
    with pytest.raises(ValueError, match="unknown score.*gram for an anchored model"):
        ood.choose_scores("gram", True)


def test_output_folders_keep_to_the_run_folder_rules(tmp_path):
    """eval.ood and trainers.tune --out: a user's files survive --overwrite, a live run's folder (and any
    folder inside it) is refused; a trainer's --out inside another run is refused (the probe's wrong cases)."""
    from amp_tf.run.runfolder import RunFolder, check_output_folder, check_run_folder

    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no report.json, so it is no eval.ood output and is left alone"):
        check_output_folder(user, "report.json", overwrite=True, tool="eval.ood")
    (user / "report.json").write_text("{}")  # an earlier eval.ood output: --overwrite may replace it
    assert check_output_folder(user, "report.json", overwrite=True, tool="eval.ood") == user
    live = RunFolder(tmp_path / "cc", {"seed": 0}, log=lambda m: None)
    try:
        for out in (tmp_path / "cc", tmp_path / "cc" / "eval"):
            with pytest.raises(ValueError, match="live run"):
                check_output_folder(out, "report.json", tool="eval.ood")
        live.commit()
    finally:
        live.release()
    assert check_output_folder(tmp_path / "cc" / "eval", "report.json", tool="eval.ood")  # beside a finished run
    with pytest.raises(ValueError, match="lies inside the run folder"):
        check_run_folder(tmp_path / "cc" / "sub", {"seed": 0})
    assert (user / "notes.txt").read_text() == "mine"


def test_fine_tuning_refuses_a_zero_lr_and_nan_weights(rng):
    from amp_tf import build_backbone, finetune_anchored

    model = build_backbone("resnet_small", (8, 8, 1), 3, width=2)
    x, y = rng.integers(0, 256, (16, 8, 8, 1)).astype("uint8"), np.arange(16) % 3
    with pytest.raises(ValueError, match="lr: expected a finite learning rate > 0, got 0"):
        finetune_anchored(model, x, y, epochs=1, lr=0, verbose=0)
    model.weights[0].assign(np.full(model.weights[0].shape, np.nan, "float32"))
    with pytest.raises(ValueError, match="hold NaN or infinity"):
        finetune_anchored(model, x, y, epochs=1, verbose=0)


def test_a_detector_refuses_a_plain_model_that_ends_in_softmax():
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inp)))
    with pytest.raises(ValueError, match="ends in a softmax .* not logits"):
        detectors.get("energy").fit(model)
