"""The typed configuration of a job: what to train, on which data, scored how. No TensorFlow.

* `TrainConfig`: every setting of one training run (`amp_tf.run.training.train`);
* `DataConfig`: the ID data (set, validation size, limits; for streamed sets the
  crop size and anchor pool);
* `JobConfig`: a `TrainConfig` plus a `DataConfig`, the OOD sets, the scores,
  K anchors and the fine-tuning epochs: one experiment (`amp_tf.run.presets` names
  them; the CLIs fill one from their flags, one function per CLI; a benchmark
  builds one directly, no argv).

This module imports neither TensorFlow nor NumPy, so the CLIs and the presets
read it before they parse their arguments.

Example:
    >>> job = JobConfig(TrainConfig(epochs=2, lr_milestones=(1,)), DataConfig("fashion_mnist", val_size=500),
    ...                 ood=("digits",), num_anchors=5)
    >>> job.train.epochs, job.data.id_set, job.to_dict()["data"]["val_size"]
    (2, 'fashion_mnist', 500)
"""

from __future__ import annotations

import dataclasses

from amp_tf import recipe


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (the trainers' flags map onto these).

    The optimizer and anchoring defaults are the library's recipe (`amp_tf.recipe`:
    coupled weight decay, per-sample T), the same as the CLI's; the old recipe is
    one argument away: ``TrainConfig(weight_decay_mode="decoupled")``.
    """

    arch: str = "resnet_small"
    anchored: bool = True
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)
    epochs: int = 3
    batch_size: int = recipe.BATCH_SIZE
    lr: float = recipe.LR
    momentum: float = recipe.MOMENTUM
    weight_decay: float = recipe.WEIGHT_DECAY
    # "coupled": the paper's PyTorch SGD (g += wd*w before momentum); "decoupled": keras SGD (w -= lr*wd*w)
    weight_decay_mode: str = recipe.WEIGHT_DECAY_MODE
    lr_milestones: tuple = ()  # epochs at which lr *= lr_gamma
    lr_gamma: float = 0.2
    # None: the recipe's schedule, as the CLI's (a linear warm-up of min(1, epochs / 10) epochs
    # into a cosine decay; none with lr_milestones); 0.0: a constant lr (the old default)
    warmup_epochs: float | None = None
    consistency: str = recipe.CONSISTENCY
    consistency_every: int = recipe.CONSISTENCY_EVERY
    consistency_mode: str = recipe.CONSISTENCY_MODE  # or "official": one draw per batch, the official ranges
    augment: str = recipe.AUGMENT  # training-data augmentation: "crop_flip" or "none"
    crop_padding: int = 4
    seed: int = 0
    strategy: str = "default"
    jit_compile: bool = False
    mixed_precision: bool = False
    # TF op determinism during this training run only (exact resume; slower on some ops)
    deterministic: bool = False
    # per-channel training statistics in pixel units, carried by the model;
    # None: computed from the training arrays by `train`
    mean: tuple | None = None
    std: tuple | None = None
    # anchored fine-tuning: a vanilla .keras path, or "job:<name>" (a model trained earlier in the same job)
    init_from: str | None = None

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class DataConfig:
    """The ID data of a job.

    Attributes:
        id_set: the registry name of the ID set (`amp_tf.data`).
        val_size: ID validation images held out of training (serving threshold, selection).
        train_limit, eval_limit: the first N training images; at most N images per test / OOD set.
        resize: how OOD images of another size are resized (None: the loader's default).
        image_size: streamed sets (ImageNet): the crop size.
        anchor_pool: streamed sets: the anchors are picked among this many training images.
        near: add the near-OOD group (Fashion-MNIST: its class-holdout splits, each with its own models).
    """

    id_set: str = "fashion_mnist"
    val_size: int = 5000
    train_limit: int | None = None
    eval_limit: int | None = None
    resize: str | None = None
    image_size: int | None = None
    anchor_pool: int | None = None
    near: bool = False

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class JobConfig:
    """One experiment: what to train (`train`), on what (`data`), scored how.

    Attributes:
        train: the `TrainConfig` of the anchored model (the vanilla twin: the same with
            ``anchored=False``).
        data: the `DataConfig`.
        ood: the OOD sets (registry names, ``folder:<path>``).
        scores: the scores to report (eval.ood ``--scores``: ``all`` or a comma list).
        num_anchors: K anchors at inference.
        finetune_epochs: > 0: the vanilla twin trains ``train.epochs``, then the anchored
            model is fine-tuned from it for this many epochs; 0: anchored from scratch.
        positive: metric convention (``id`` or ``ood``).
        models: which of the two models the job has, ``("anchored", "vanilla")`` (the anchored
            model and its twin), ``("anchored",)`` or ``("vanilla",)``; `amp_tf.run.pipeline.job_models`
            turns the job into its models, in training order.
        calibration: the serving head's AMP calibration (``exp``; the paper's ImageNet: ``divide``).
    """

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    ood: tuple = ()
    scores: str = "all"
    num_anchors: int = recipe.NUM_ANCHORS
    finetune_epochs: int = 0
    positive: str = "id"
    models: tuple = ("anchored", "vanilla")
    calibration: str = "exp"

    def to_dict(self):
        return dataclasses.asdict(self)


def warmup_epochs(epochs, lr_milestones):
    """The linear warm-up of a cosine schedule: min(1, epochs / 10) epochs; none with milestones."""
    return 0.0 if lr_milestones else min(1.0, (epochs or 1) * 0.1)


def milestones(value):
    """``"30,60,90"`` (a flag's spelling), or any sequence of epochs -> ``(30, 60, 90)``."""
    if isinstance(value, str):
        return tuple(int(m) for m in value.split(",") if m.strip())
    return tuple(int(m) for m in value or ())


#: What `amp_tf.run.training.finetune_anchored` passes to `train` (its other keywords are `TrainConfig` fields).
TRAIN_KEYWORDS = ("val", "out_dir", "callbacks", "verbose", "backup", "strategy")


def finetune_options(options):
    """``(TrainConfig keywords, train keywords)`` of ``finetune_anchored(**options)``, checked before any
    work: an unknown keyword (with the closest valid one), lr, batch_size."""
    from amp_tf.contract import check_int, check_keywords, check_learning_rate

    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("anchored", "epochs")]
    check_keywords("finetune_anchored", options, fields + list(TRAIN_KEYWORDS) + ["epochs", "num_classes"])
    if "lr" in options:
        check_learning_rate(options["lr"])
    if "batch_size" in options:
        check_int(options["batch_size"], "batch_size", 1)
    options = dict(options)
    return options, {k: options.pop(k) for k in list(options) if k in TRAIN_KEYWORDS}


_FIELDS = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (TrainConfig, DataConfig, JobConfig)}


def job_from_settings(settings, **more):
    """A `JobConfig` from flat settings (a recipe of `amp_tf.run.presets`, a CLI's flags): each key goes to
    the config that has the field (`dataset` is `data.id_set`, `width` the backbone's, `lr_milestones`
    may be spelt ``"30,60,90"``, `ood` a comma list). A cosine schedule (no milestones) gets the
    warm-up of `warmup_epochs` unless the settings give one.

    Example:
        >>> job = job_from_settings({"epochs": 20, "lr_milestones": "10,15", "width": 8, "val_size": 100},
        ...                         dataset="cifar10", ood="svhn_cropped,dtd")
        >>> job.train.lr_milestones, job.train.backbone_kwargs, job.data.id_set, job.ood
        ((10, 15), {'width': 8}, 'cifar10', ('svhn_cropped', 'dtd'))

    Raises:
        KeyError: a key that is no field of any of the three configs.
    """
    parts = {TrainConfig: {}, DataConfig: {}, JobConfig: {}}
    for key, value in {**settings, **more}.items():
        if key == "width":
            parts[TrainConfig]["backbone_kwargs"] = {"width": value} if value else {}
        elif key == "lr_milestones":
            parts[TrainConfig][key] = milestones(value)
        elif key == "dataset":
            parts[DataConfig]["id_set"] = value
        elif key == "ood":
            parts[JobConfig][key] = tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(
                value, str) else tuple(value)
        else:
            owner = next((c for c in (TrainConfig, DataConfig, JobConfig) if key in _FIELDS[c] - {"train", "data"}),
                         None)
            if owner is None:
                raise KeyError(f"{key!r} is no setting of a job (TrainConfig, DataConfig, JobConfig).")
            parts[owner][key] = value
    train = parts[TrainConfig]
    train.setdefault("warmup_epochs", warmup_epochs(train.get("epochs", TrainConfig.epochs),
                                                    train.get("lr_milestones")))
    return JobConfig(TrainConfig(**train), DataConfig(**parts[DataConfig]), **parts[JobConfig])
