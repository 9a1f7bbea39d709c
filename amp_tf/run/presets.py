"""One registry of presets: the paper's tables as CLI defaults.

Every preset fixes the ID data set, the architecture, the OOD sets, the scores
and the hyper-parameters of one experiment of the paper (Anirudh &
Thiagarajan, "Out of Distribution Detection via Neural Network Anchoring";
hyper-parameters from its Appendix B), as defaults for the command-line tools:

* ``python -m trainers.<cifar|imagenet|fmnist> --preset NAME`` (section ``train``:
  each preset names the one trainer it belongs to),
* ``python -m eval.ood --preset NAME --model M`` (section ``eval``),
* ``python -m eval.resize_study --preset table7-resize --model M`` (section
  ``resize_study``, Table 7 only).

A preset is flat settings (`Preset.settings`: a recipe below, keyed like the
trainers' flags, plus the data set, architecture, OOD sets and scores), and its
experiment the typed `amp_tf.config.JobConfig` made of them (`Preset.job`: the
`TrainConfig`, the `DataConfig`, the OOD sets, scores and K). A trainer takes the
settings as its flags' defaults (`flag_values`), explicit flags override them, and
it builds its JobConfig once from the flags; a JobConfig is never turned back
into flags. A benchmark or a script uses the job directly (`presets.job(name)`). The eval sections (`eval`, `resize_study`) are the
inference CLIs' settings. ``--dry-run`` prints the resolved configuration as
JSON and exits 0 without loading data (the plumbing is
`amp_tf.cli.common.parse_cli`).

OOD sets that tensorflow-datasets does not have (iSUN, LSUN (resize / crop /
original), TinyImageNet (resize / crop), the SCOOD sets) are ``folder:`` entries
under ``$AMP_DATA`` (`DATA_ENV`), expanded when the preset is applied; with
``AMP_DATA`` unset they stay literal, and the trainers skip them with one line
(eval.ood stops with an error naming the folder). docs/reproduce.md lists the
folders and where to get them.

Example:

>>> from amp_tf import presets
>>> "table2-cifar10" in presets.names()
True
>>> presets.get("table2-cifar10").arch
'wrn40_2'
>>> presets.job("table8-ablation").train.consistency_every
5
"""

from __future__ import annotations

import dataclasses
import os

from amp_tf import recipe as _recipe
from amp_tf.config import JobConfig, job_from_settings

#: The far-OOD and covariate-shift sets of the Fashion-MNIST suite (= amp_tf.data.groups.GROUPS;
#: spelled out here so that this module, which every CLI reads before parsing, imports no
#: TensorFlow; tests/test_presets.py checks that the two agree).
FMNIST_FAR = ("digits", "font_letters", "skimage_patches")
FMNIST_COVARIATE = tuple(f"fmnist_{kind}_{level}" for kind in ("blur", "jpeg", "contrast", "pixelate")
                         for level in range(1, 6))

#: Environment variable that holds the folder of the non-tfds OOD sets.
DATA_ENV = "AMP_DATA"

#: The sections a preset may have, by CLI kind.
KINDS = ("train", "eval", "resize_study")


_PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def _folder(name):
    return f"folder:${DATA_ENV}/{name}"


# OOD sets of the ODIN benchmark (Liang et al.) that come as image folders (32x32):
ISUN = _folder("iSUN")
LSUN_R = _folder("LSUN_resize")
LSUN_C = _folder("LSUN")
TIN_R = _folder("Imagenet_resize")
TIN_C = _folder("Imagenet")
#: The 10,000 LSUN test images at their original size (Table 7's source images).
LSUN_ORIGINAL = f"${DATA_ENV}/LSUN_original"

#: Appendix B, CIFAR-10/100 (every architecture): SGD lr 0.1, momentum 0.9, weight decay
#: 5e-4, batch 128, 200 epochs, lr x 0.2 at 60/120/160; T on every 5th batch (Appendix A);
#: RandomCrop + RandomHorizontalFlip; K = 5 anchors at inference.
#: The paper's PyTorch SGD (coupled weight decay) and the official T (one draw per batch).
CIFAR_RECIPE = dict(epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4, lr_milestones="60,120,160",
                    lr_gamma=0.2, consistency="all", consistency_every=5, augment="crop_flip",
                    num_anchors=_recipe.NUM_ANCHORS, weight_decay_mode="coupled", consistency_mode="official")
#: Appendix B, ImageNet: SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, 120 epochs,
#: lr x 0.1 every 30 epochs; T on every 10th batch (Appendix A); 224x224 crops.
IMAGENET_RECIPE = dict(epochs=120, batch_size=128, lr=0.1, weight_decay=1e-4, lr_milestones="30,60,90",
                       lr_gamma=0.1, consistency="all", consistency_every=10, augment="crop_flip",
                       num_anchors=_recipe.NUM_ANCHORS, image_size=224, weight_decay_mode="coupled", consistency_mode="official")
#: The recipes: flat settings, keyed by the fields of `amp_tf.config` (the trainers' flags have the
#: same names): `job_from_settings` makes a preset's `JobConfig` of them, the trainers take them as
#: their flag defaults.
#: Our offline main job (trainers.fmnist defaults): not in the paper. The vanilla twin trains 2
#: epochs and the anchored model is that vanilla model fine-tuned with anchoring (chosen over 3
#: epochs of anchored training from scratch on validation data: ID validation accuracy 86.1 vs
#: 84.9 %, validation-OOD FPR95 61.4 vs 75.1 %; BENCHMARKS.md). The paper's optimizer (coupled
#: weight decay) was chosen on validation too (benchmarks.quality.ood --select-grid). The
#: fine-tuning (T mode, epochs, lr) was selected on validation with the exact official T
#: (python -m benchmarks.quality.finetune_select, 3 seeds, BENCHMARKS.md section 4): per-sample T, 2
#: epochs at lr 0.1, the only T setting within 0.5 points of the vanilla model's validation
#: accuracy (+0.95), validation-OOD FPR95 (AMP) 59.4 (official T, 1 epoch: 68.6, -0.66 points).
#: The optimizer and T are the library's recipe (`amp_tf.recipe`), defined there once.
FMNIST_RECIPE = dict(arch="resnet_small", epochs=2, finetune_epochs=2, batch_size=_recipe.BATCH_SIZE,
                     lr=_recipe.LR, weight_decay=_recipe.WEIGHT_DECAY, lr_milestones="",
                     consistency=_recipe.CONSISTENCY, consistency_every=_recipe.CONSISTENCY_EVERY,
                     augment=_recipe.AUGMENT, num_anchors=_recipe.NUM_ANCHORS, width=16, val_size=5000,
                     weight_decay_mode=_recipe.WEIGHT_DECAY_MODE, consistency_mode=_recipe.CONSISTENCY_MODE)

#: Scores eval.ood computes by default for a preset: valid for anchored AND vanilla models
#: (AMP on the anchored model; MSP / Energy on its calibrated logits, or on a vanilla twin's
#: logits). ODIN needs a vanilla model: ``--scores msp,odin,energy`` on the vanilla twin.
PAPER_SCORES = "amp,msp,energy"


@dataclasses.dataclass(frozen=True)
class Preset:
    """One experiment of the paper (or ours): a typed job, and the settings of the eval CLIs.

    Attributes:
        name: the ``--preset`` name.
        table: where the numbers are in the paper ("Table 2", ...).
        title: one line.
        trainer: the module that trains it (``trainers.cifar`` ...).
        settings: the experiment as flat settings keyed like the trainers' flags (a recipe, and
            ``dataset``, ``arch``, ``ood`` with ``folder:$AMP_DATA/...`` placeholders, ``scores``): the
            one source of `job` and of a trainer's flag defaults (`flag_values`).
        metrics: the metrics the paper's table reports (keys of amp_tf.detection.metrics).
        paper_methods: the methods the paper's table compares.
        eval: eval.ood flags besides id / ood / scores.
        resize_study: eval.resize_study flags (None: no resize study).
        notes: deviations and how-tos, shown by --dry-run.
    """

    name: str
    table: str
    title: str
    trainer: str
    settings: dict
    metrics: tuple = ("fpr95", "auroc", "aupr_in")
    paper_methods: tuple = ()
    eval: dict = dataclasses.field(default_factory=dict)
    resize_study: dict | None = None
    notes: str = ""

    @property
    def job(self) -> JobConfig:
        """The experiment, an `amp_tf.config.JobConfig` made of `settings` (`job_from_settings`)."""
        return job_from_settings(self.settings)

    @property
    def dataset(self):
        return self.job.data.id_set

    @property
    def arch(self):
        return self.job.train.arch

    @property
    def ood(self):
        return self.job.ood

    @property
    def scores(self):
        return self.job.scores

    def section(self, kind):
        """The ``{dest: value}`` defaults of an inference CLI (`kind` ``eval`` or ``resize_study``;
        env vars not expanded yet); None when the preset has no such section. A trainer takes
        `job` instead."""
        if kind not in ("eval", "resize_study"):
            raise ValueError(f"preset kind: expected eval or resize_study (a trainer takes flag_values), "
                             f"got {kind!r}.")
        if kind == "eval":
            return dict(id=self.dataset, ood=",".join(self.ood), scores=self.scores, **self.eval)
        if self.resize_study is None:
            return None
        return dict(id=self.dataset, scores=self.scores, **self.resize_study)

    def to_dict(self):
        return dataclasses.asdict(self)


def _preset(name, table, title, dataset, arch, trainer, ood, recipe, scores=PAPER_SCORES, **kw):
    """A `Preset` whose job is `recipe` (flat settings) on `dataset` with `arch`, `ood` and `scores`."""
    settings = {**recipe, "dataset": dataset, "arch": arch, "ood": tuple(ood), "scores": scores}
    job_from_settings(settings)  # every key a setting of a job: a typo fails at import
    return Preset(name=name, table=table, title=title, trainer=trainer, settings=settings, **kw)


_REGISTRY: dict[str, Preset] = {}


def register(preset):
    """Adds a `Preset` to the registry (names are unique)."""
    if preset.name in _REGISTRY:
        raise ValueError(f"preset {preset.name!r} is registered twice.")
    _REGISTRY[preset.name] = preset
    return preset


def names(kind=None, cli=None):
    """Preset names in registry order; only those with a `kind` section (``train``: every
    preset, trained by `cli` when given) when given."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"preset kind: expected one of {', '.join(KINDS)}, got {kind!r}.")
    out = []
    for p in _REGISTRY.values():
        if kind in ("eval", "resize_study") and p.section(kind) is None:
            continue
        if kind == "train" and cli is not None and p.trainer != cli:
            continue
        out.append(p.name)
    return out


def get(name):
    """The `Preset` called `name`; ValueError listing the presets otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(names())}.")
    return _REGISTRY[name]


def expand(value):
    """Expands ``$AMP_DATA`` (and any other environment variable) in string values."""
    if isinstance(value, str) and "$" in value:
        return os.path.expandvars(value)
    return value


def job(name, cli=None):
    """The `JobConfig` of preset `name` (``$AMP_DATA`` expanded in the OOD sets).

    Args:
        name: preset name.
        cli: the trainer asking (``"trainers.cifar"`` ...): a preset only applies to its own.

    Raises:
        ValueError: unknown preset; the preset belongs to another trainer.
    """
    preset = get(name)
    if cli is not None and preset.trainer != cli:
        raise ValueError(
            f"preset {name!r} ({preset.table}) trains with {preset.trainer}, not {cli}: run "
            f"`python -m {preset.trainer} --preset {name}`. Presets of {cli}: "
            f"{', '.join(names('train', cli)) or 'none'}.")
    return dataclasses.replace(preset.job, ood=tuple(expand(o) for o in preset.job.ood))


def flag_values(name, cli=None):
    """A trainer's flag defaults of preset `name`: its `settings` spelt as the flags spell them (``ood`` a
    comma list with ``$AMP_DATA`` expanded, ``lr_milestones`` ``"30,60,90"``); a trainer takes those it
    has a flag for. The same settings make `job(name)`, so the flags and the job cannot disagree.

    Example:
        >>> flags = flag_values("table5-imagenet-c")
        >>> flags["lr_milestones"], flags["image_size"], flags["dataset"]
        ('30,60,90', 224, 'imagenet2012')
    """
    job(name, cli)  # the preset exists and belongs to `cli`
    out = dict(get(name).settings)
    out["ood"] = ",".join(expand(o) for o in out["ood"])
    return {k: v for k, v in out.items() if v is not None}


def values(name, kind):
    """The resolved ``{dest: value}`` defaults of preset `name` for an inference CLI.

    Args:
        name: preset name.
        kind: ``"eval"`` or ``"resize_study"`` (a trainer takes `job(name)`).

    Raises:
        ValueError: unknown preset; it has no section for `kind`.
    """
    section = get(name).section(kind)
    if section is None:
        raise ValueError(f"preset {name!r} has no {kind} settings; presets with them: "
                         f"{', '.join(names(kind)) or 'none'}.")
    return {k: expand(v) for k, v in section.items()}


def unset_env(name):
    """The environment variables a preset refers to that are not set here."""
    text = repr(get(name).to_dict())
    return sorted({DATA_ENV} - set(os.environ)) if f"${DATA_ENV}" in text else []


# --------------------------------------------------------------------------- #
# The presets
# --------------------------------------------------------------------------- #
_ODIN_FOLDERS = ("iSUN, LSUN_resize, LSUN (crop), Imagenet_resize, Imagenet (crop): the ODIN "
                 "tarballs (github.com/facebookresearch/odin), extracted under $AMP_DATA.")
_CIFAR_EVAL = dict(resize="pil_bilinear", channels=True, positive="id", num_anchors=_recipe.NUM_ANCHORS)
_CIFAR_NOTE = ("Sets of another size are resized with Pillow bilinear (torchvision's default "
               "Resize); the folder sets are 32x32 already. ")

for _ds, _other in (("cifar10", "cifar100"), ("cifar100", "cifar10")):
    register(_preset(
        name=f"table2-{_ds}", table="Table 2",
        title=f"WRN-40-2 on {_PRETTY[_ds]} vs the 6 OOD sets of Liang et al. (ODIN benchmark)",
        dataset=_ds, arch="wrn40_2", trainer="trainers.cifar",
        ood=(ISUN, LSUN_R, LSUN_C, "places365_small", "dtd", "svhn_cropped"),
        recipe=dict(CIFAR_RECIPE, resize="pil_bilinear"),
        metrics=("fpr95", "auroc", "aupr_in"), paper_methods=("MSP", "ODIN", "Energy", "AMP"),
        eval=dict(_CIFAR_EVAL),
        notes=_CIFAR_NOTE + _ODIN_FOLDERS + " Texture = dtd, Places365 = places365_small, "
              "SVHN = svhn_cropped (tensorflow-datasets). MSP / ODIN / Energy in the paper are "
              "vanilla-model baselines: train the twin with --vanilla and score it with "
              "--scores msp,odin,energy."))

for _ds, _other in (("cifar10", "cifar100"), ("cifar100", "cifar10")):
    register(_preset(
        name=f"table3-resnet34-{_ds}", table="Table 3 (details: Table 12)",
        title=f"ResNet-34 on {_PRETTY[_ds]} vs the 7 OOD sets of Sastry & Oore (Gram matrices "
              "benchmark), averaged",
        dataset=_ds, arch="resnet34", trainer="trainers.cifar",
        ood=(ISUN, LSUN_R, LSUN_C, TIN_R, TIN_C, "svhn_cropped", _other),
        recipe=dict(CIFAR_RECIPE, resize="pil_bilinear"),
        metrics=("fpr95", "auroc", "detection_accuracy"),
        paper_methods=("MSP", "ODIN", "Energy", "Mahalanobis", "Gram matrices", "AMP"),
        eval=dict(_CIFAR_EVAL),
        notes=_CIFAR_NOTE + _ODIN_FOLDERS + " Table 12 reports TNR at TPR 95% = 100 - FPR95."))

for _ds, _other, _short in (("cifar10", "cifar100", "c10-vs-c100"), ("cifar100", "cifar10", "c100-vs-c10")):
    register(_preset(
        name=f"table4-{_short}", table="Table 4",
        title=f"Near OOD: ResNet-34 trained on {_PRETTY[_ds]}, {_PRETTY[_other]} test set as OOD",
        dataset=_ds, arch="resnet34", trainer="trainers.cifar", ood=(_other,), recipe=CIFAR_RECIPE,
        metrics=("fpr95", "auroc"), paper_methods=("ODIN", "Energy", "GM", "Mahalanobis", "AMP"),
        eval=dict(_CIFAR_EVAL),
        notes=f"The same ResNet-34 as table3-resnet34-{_ds}: a model trained with that preset "
              "can be scored with this one (eval.ood)."))

register(_preset(
    name="table5-imagenet-c", table="Table 5 (and Figure 5)",
    title="ResNet-50 on ImageNet-1k vs ImageNet-C Gaussian blur (Table 5: severity 5; Figure 5: 1..5)",
    dataset="imagenet2012", arch="resnet50_imagenet", trainer="trainers.imagenet",
    ood=tuple(f"imagenet2012_corrupted/gaussian_blur_{i}" for i in range(1, 6)),
    recipe=dict(IMAGENET_RECIPE, anchor_pool=1024),
    scores="all", metrics=("auroc", "detection_accuracy", "aupr_in", "aupr_out"),
    paper_methods=("ResNet-50", "Temp-Scal", "Deep Ens", "MCD", "SVI", "SVI-AvUC", "AMP"),
    eval=dict(resize="tf", channels=True, train_limit=1024, positive="id", num_anchors=_recipe.NUM_ANCHORS),
    notes="ImageNet needs a manual download (image-net.org): tfds imagenet2012 in --data-dir, or "
          "--train-folder/--val-folder. The trainer scores the OOD sets itself (center crop of the "
          "validation images, as in training); eval.ood resizes whole images instead (--resize tf), "
          "so use the trainer's report for the table. Table 5's row is the gaussian_blur_5 set."))

for _ds, _other in (("cifar10", "cifar100"), ("cifar100", "cifar10")):
    register(_preset(
        name=f"table6-scood-{_ds}", table=f"Table 6 (details: Table {10 if _ds == 'cifar10' else 11})",
        title=f"SCOOD benchmark (Yang et al., ICCV'21): ResNet-18 on {_PRETTY[_ds]} vs 6 re-sampled sets",
        dataset=_ds, arch="resnet18", trainer="trainers.cifar",
        ood=tuple(_folder(f"scood/{n}") for n in ("texture", "svhn", _other, "tin", "lsun", "places365")),
        recipe=dict(CIFAR_RECIPE, resize="pil_bicubic"),
        metrics=("fpr95", "auroc", "aupr_in", "aupr_out"),
        paper_methods=("ODIN", "Energy", "OE", "MCD", "UDG", "AMP"),
        eval=dict(_CIFAR_EVAL, resize="pil_bicubic"),
        notes="Deviation: the paper trains on SCOOD's modified CIFAR training set (with the "
              "transferred semantically-ID images); here the ID training set is the tfds one. OOD "
              f"folders: $AMP_DATA/scood/<set>/ with the images of SCOOD's "
              f"imglist/benchmark_{_ds}/test_<set>.txt that are labelled OOD (-1); the SCOOD "
              "images are 32x32 already."))

register(_preset(
    name="table7-resize", table="Table 7",
    title="Resizing artifacts: ResNet-34 on CIFAR-100 vs 10K LSUN test images resized with Pillow "
          "nearest / bilinear / bicubic / lanczos",
    dataset="cifar100", arch="resnet34", trainer="trainers.cifar",
    ood=(f"folder:{LSUN_ORIGINAL}",), recipe=dict(CIFAR_RECIPE, resize="pil_bicubic"),
    metrics=("fpr95", "auroc"), paper_methods=("MSP", "Energy", "GM", "AMP"),
    eval=dict(_CIFAR_EVAL, resize="pil_bicubic"),
    resize_study=dict(ood_folder=LSUN_ORIGINAL, channels=True, positive="id", num_anchors=_recipe.NUM_ANCHORS,
                      methods="pil_nearest,pil_bilinear,pil_bicubic,pil_lanczos,tf"),
    notes="The study is `python -m eval.resize_study --preset table7-resize --model M`: one report "
          "with the OOD sets resize_pil_nearest, resize_pil_bilinear, resize_pil_bicubic, "
          "resize_pil_lanczos (and resize_tf, antialiased bilinear). The table's upper half is "
          "CIFAR-10: --dataset cifar10 (trainer) / --id cifar10 (eval). $AMP_DATA/LSUN_original: "
          "the LSUN test set (10,000 images, original size) from the LSUN challenge."))

register(_preset(
    name="table8-ablation", table="Table 8",
    title="Ablation on CIFAR-10 vs SVHN with WRN-40-2: the consistency transform T x the number of "
          "anchors K (FPR95)",
    dataset="cifar10", arch="wrn40_2", trainer="trainers.cifar", ood=("svhn_cropped",), recipe=CIFAR_RECIPE,
    scores="amp", metrics=("fpr95",), paper_methods=("AMP",), eval=dict(_CIFAR_EVAL),
    notes="Rows: train with --consistency none | jitter_blur | flip_grayscale | resized_crop "
          "(amp_tf.method.augment presets; the paper's '+' rows may also be read as cumulative: "
          "color_jitter+blur, color_jitter+blur+flip+grayscale, all); columns: eval.ood "
          "--num-anchors 2 | 5 | 10 | 20. The preset's default T is 'all' (the paper's setting)."))

register(_preset(
    name="fmnist-offline", table="ours (offline, not in the paper)",
    title="Fashion-MNIST, resnet_small (width 16), vs the offline suite: far-OOD (sklearn digits, "
          "rendered letters, photo patches) and covariate shift (blur, JPEG, contrast, pixelate 1..5)",
    dataset="fashion_mnist", arch="resnet_small", trainer="trainers.fmnist",
    ood=FMNIST_FAR + FMNIST_COVARIATE, recipe={k: v for k, v in FMNIST_RECIPE.items() if k != "arch"},
    scores="all", metrics=("fpr95", "auroc", "aupr_in", "aupr_out", "detection_accuracy"),
    paper_methods=("MSP", "Energy", "ODIN", "MaxLogit", "Entropy", "AMP"),
    eval=dict(positive="id", num_anchors=_recipe.NUM_ANCHORS),
    notes="Runs offline on 2 CPU cores in minutes (Debian's dataset-fashion-mnist, scikit-learn's "
          "digits). trainers.fmnist trains the anchored model and its vanilla twin and scores both."))

del _ds, _other, _short
