"""One recipe (issue 19): the CLI, TrainConfig, AnchoredModel and finetune_anchored share amp_tf.recipe."""
import inspect

import numpy as np
import pytest

from amp_tf import recipe
from amp_tf.run import presets
from amp_tf.method.anchoring import AnchoredModel
from amp_tf.cli import cifar, common, fmnist, imagenet
from amp_tf.run.optimizers import CoupledSGD, make_sgd
from amp_tf.run.training import TrainConfig, finetune_anchored, train

R = recipe.as_dict()


def test_recipe_is_the_selected_one():
    assert recipe.WEIGHT_DECAY_MODE == "coupled"
    assert recipe.CONSISTENCY_MODE == "per_sample"


def test_converged_fine_tuning_is_the_benchmark_s():
    """The converged benchmark fine-tunes with the recipe's FINETUNE_CONVERGED (one definition)."""
    from benchmarks.quality import converged

    assert recipe.FINETUNE_CONVERGED == {"epochs": 12, "lr": 0.01}
    assert (converged.RECIPE["finetune_epochs"], converged.RECIPE["finetune_lr"]) == (12, 0.01)
    assert set(recipe.FINETUNE_CONVERGED) <= set(inspect.signature(TrainConfig).parameters)


def test_train_config_defaults_are_the_recipe():
    cfg = TrainConfig()
    assert {k: getattr(cfg, k) for k in R} == R
    # the old recipe is one argument away
    assert TrainConfig(weight_decay_mode="decoupled").weight_decay_mode == "decoupled"


def test_cli_defaults_are_the_recipe():
    args = common.base_parser("x", {}).parse_args([])
    assert {k: getattr(args, k) for k in R if hasattr(args, k)} == {k: v for k, v in R.items() if k != "momentum"}
    main_job = fmnist.parser().parse_args([])
    assert {k: getattr(main_job, k) for k in R if k != "momentum"} == {k: v for k, v in R.items() if k != "momentum"}
    # the train config the CLI builds is the recipe too (momentum: TrainConfig's)
    cfg = common.train_config(main_job)
    assert {k: getattr(cfg, k) for k in R} == R
    assert common.base_parser("x", {}).parse_args(
        ["--weight-decay-mode", "decoupled"]).weight_decay_mode == "decoupled"


def test_paper_presets_keep_their_own_values():
    for mod in (cifar, imagenet):
        assert mod.DEFAULTS["weight_decay_mode"] == "coupled"
        assert mod.DEFAULTS["consistency_mode"] == "official"
    fm = {k: v for k, v in presets.FMNIST_RECIPE.items() if k in R}
    assert fm == {k: v for k, v in R.items() if k != "momentum"}


def test_anchored_model_and_make_sgd_defaults_are_the_recipe():
    sig = inspect.signature(AnchoredModel.__init__).parameters
    for k in ("consistency", "consistency_every", "consistency_mode"):
        assert sig[k].default == R[k], k
    sgd = inspect.signature(make_sgd).parameters
    for k in ("momentum", "weight_decay", "weight_decay_mode"):
        assert sgd[k].default == R[k], k


def test_finetune_anchored_takes_the_recipe_from_train_config():
    # no defaults of its own for the recipe's settings: they are TrainConfig's
    assert not set(inspect.signature(finetune_anchored).parameters) & set(R)


@pytest.mark.slow
def test_finetune_anchored_trains_with_the_recipe():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 8, 8, 1)).astype("uint8")
    y = rng.integers(0, 3, 32)
    vanilla, _ = train(TrainConfig(anchored=False, epochs=1, batch_size=16, backbone_kwargs={"width": 4}),
                       x, y, 3, verbose=0, backup=False)
    assert isinstance(vanilla.optimizer, CoupledSGD)  # TrainConfig: coupled
    model, _ = finetune_anchored(vanilla, x, y, epochs=1, batch_size=16, verbose=0, backup=False)
    assert isinstance(model.optimizer, CoupledSGD)
    assert float(model.optimizer.weight_decay_l2) == R["weight_decay"]
    assert float(model.optimizer.momentum) == R["momentum"]
    assert model.consistency_every == R["consistency_every"]
    assert model.augment.mode == R["consistency_mode"]
    old, _ = finetune_anchored(vanilla, x, y, epochs=1, batch_size=16, verbose=0, backup=False,
                               weight_decay_mode="decoupled")
    assert not isinstance(old.optimizer, CoupledSGD)
    assert float(old.optimizer.weight_decay) == R["weight_decay"]


def test_python_and_cli_get_the_same_lr_schedule():
    """TrainConfig() with the main job's epochs schedules the lr as the CLI does (warm-up + cosine);
    warmup_epochs=0 is the constant lr, one argument away."""
    from amp_tf.run.training import lr_schedule

    main_job = fmnist.parser().parse_args([])
    cli_cfg = common.train_config(main_job)
    py_cfg = TrainConfig(epochs=cli_cfg.epochs)
    cli, py = lr_schedule(cli_cfg, 100), lr_schedule(py_cfg, 100)
    steps = [0, 5, 19, 20, 21, 100, 150, 199]
    assert [float(cli(s)) for s in steps] == pytest.approx([float(py(s)) for s in steps])
    assert float(py(0)) < float(py(20)) > float(py(199))  # warm-up, then decay
    assert lr_schedule(TrainConfig(warmup_epochs=0.0), 100) == TrainConfig().lr  # constant
    assert float(lr_schedule(TrainConfig(lr_milestones=(1,)), 100)(150)) == pytest.approx(TrainConfig().lr * 0.2)
