"""The training flags and the `TrainConfig` they make: one definition for the trainers and the benchmarks.

`add_training_flags` adds the ``training`` and ``scale-out and speed`` groups
(defaults per command: a recipe of `amp_tf.run.presets`), `train_config` maps the
parsed flags onto an `amp_tf.config.TrainConfig`. `Parser` keeps its flags by
`dest` (argparse has no public lookup). No TensorFlow: the CLIs and benchmarks
build their parsers before they import it; nothing here is a CLI (the trainers'
common flags, checks and presets are `amp_tf.cli.common`'s).

Example:
    >>> p = Parser(add_help=False)
    >>> add_training_flags(p, {"epochs": 2, "lr_milestones": "1"})
    >>> cfg = train_config(p.parse_args(["--lr", "0.05"]))
    >>> cfg.epochs, cfg.lr, cfg.lr_milestones, cfg.warmup_epochs
    (2, 0.05, (1,), 0.0)
"""

from __future__ import annotations

import argparse

from amp_tf import recipe


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` that keeps its flags by `dest` in `flags`.

    argparse has no public lookup of a flag by `dest`; the presets (choices,
    required), `explicit_flags`, a CLI's own help text for a shared flag and
    eval.resize_study (which forwards its flags to eval.ood) need one. Flags
    added to the parser or to one of its argument groups are recorded; a
    second flag with the same `dest` (a hidden alias such as --limit) keeps the
    first one's entry.

    Example:
        >>> p = Parser(add_help=False)
        >>> _ = p.add_argument_group("g").add_argument("--eval-limit", type=int)
        >>> p.flags["eval_limit"].option_strings
        ['--eval-limit']
    """

    def __init__(self, *args, **kwargs):
        self.flags = {}
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        return self._record(super().add_argument(*args, **kwargs))

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument
        group.add_argument = lambda *a, **kw: self._record(add(*a, **kw))
        return group

    def _record(self, action):
        self.flags.setdefault(action.dest, action)
        return action


def add_training_flags(p, defaults):
    """Adds the training and scale-out flags to `p` (defaults: `amp_tf.recipe`); `defaults` (a dict keyed by
    `dest`) overrides per command."""
    d = defaults.get
    g = p.add_argument_group("training")
    g.add_argument("--arch", default=d("arch", "resnet_small"), help="backbone name (amp_tf.models.backbone_names())")
    g.add_argument("--epochs", type=int, default=d("epochs", 3), help="training epochs")
    g.add_argument("--batch-size", type=int, default=d("batch_size", recipe.BATCH_SIZE), help="GLOBAL batch size (split over replicas)")
    g.add_argument("--lr", type=float, default=d("lr", recipe.LR), help="initial learning rate (SGD, momentum 0.9)")
    g.add_argument("--weight-decay", type=float, default=d("weight_decay", recipe.WEIGHT_DECAY), help="SGD weight decay")
    g.add_argument("--weight-decay-mode", default=d("weight_decay_mode", recipe.WEIGHT_DECAY_MODE),
                   choices=["decoupled", "coupled"],
                   help="decoupled: keras SGD (w -= lr*wd*w); coupled: the paper's PyTorch SGD (g += wd*w "
                        "before momentum, about 10x stronger at momentum 0.9)")
    g.add_argument("--lr-milestones", default=d("lr_milestones", ""),
                   help="comma-separated epochs where lr is multiplied by --lr-gamma (empty: cosine with warm-up)")
    g.add_argument("--lr-gamma", type=float, default=d("lr_gamma", 0.2), help="lr factor at each milestone")
    g.add_argument("--consistency", default=d("consistency", recipe.CONSISTENCY),
                   help="anchor transform T: preset (all, none, jitter_blur, flip_grayscale, resized_crop) or names joined by '+'")
    g.add_argument("--consistency-every", type=int, default=d("consistency_every", recipe.CONSISTENCY_EVERY),
                   help="apply T on every n-th training step (0 = never)")
    g.add_argument("--consistency-mode", default=d("consistency_mode", recipe.CONSISTENCY_MODE),
                   choices=["per_sample", "official"],
                   help="T's draws: per_sample, or official (one draw per batch, the authors' ranges)")
    g.add_argument("--augment", default=d("augment", recipe.AUGMENT), choices=["crop_flip", "none"],
                   help="training-data augmentation")
    g.add_argument("--seed", type=int, default=d("seed", 0), help="seed for data order, anchors, T and init")
    g.add_argument("--init-from", default=None, metavar="VANILLA.keras",
                   help="anchored fine-tuning: start the anchored model from this trained vanilla model "
                        "(anchor_backbone, function-preserving) instead of from scratch")
    g.add_argument("--finetune-epochs", type=int, default=d("finetune_epochs", 0),
                   help="epochs of anchored fine-tuning (with --init-from; trainers.fmnist: >0 trains the "
                        "vanilla twin first and fine-tunes it into the anchored model); 0 = --epochs / off")
    s = p.add_argument_group("scale-out and speed")
    s.add_argument("--strategy", default="default", choices=["default", "mirrored", "multiworker", "tpu"],
                   help="tf.distribute strategy (multiworker reads TF_CONFIG; tpu is untested here)")
    s.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    s.add_argument("--mixed-precision", action="store_true", help="bfloat16 compute, float32 logits and tau")
    s.add_argument("--no-backup", action="store_true", help="disable BackupAndRestore (resume after a kill)")
    s.add_argument("--backup-dir", default=None,
                   help="BackupAndRestore folder (default: <out>/<model>/backup; each worker adds worker<i>/), "
                        "outside --out; it belongs to one run (its --out): one holding another run's backup is "
                        "refused")
    s.add_argument("--deterministic", action="store_true",
                   help="TF op determinism: a resumed run then ends with the same weights as an uninterrupted one")


def train_config(args, **overrides):
    """The `TrainConfig` of the common flags; `overrides` (e.g. ``anchored=False``) win.

    ``init_from`` is kept for an anchored model only (a vanilla model is never
    initialised from another); an anchored model fine-tuned from a file trains
    --finetune-epochs epochs when > 0 (else --epochs), unless `overrides` set them.
    """
    from amp_tf.config import TrainConfig, milestones as parse_milestones, warmup_epochs

    milestones = parse_milestones(str(args.lr_milestones))
    fields = dict(
        init_from=getattr(args, "init_from", None), arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, weight_decay_mode=args.weight_decay_mode,
        lr_milestones=milestones, lr_gamma=args.lr_gamma, consistency_mode=args.consistency_mode,
        warmup_epochs=warmup_epochs(args.epochs, milestones),
        consistency=args.consistency, consistency_every=args.consistency_every, augment=args.augment,
        seed=args.seed, strategy=args.strategy, jit_compile=args.jit_compile,
        mixed_precision=args.mixed_precision, deterministic=bool(getattr(args, "deterministic", False)),
    )
    fields.update(overrides)
    cfg = TrainConfig(**fields)
    if not cfg.anchored:
        cfg.init_from = None
    elif (cfg.init_from and not str(cfg.init_from).startswith("job:") and "epochs" not in overrides
          and getattr(args, "finetune_epochs", 0)):
        cfg.epochs = args.finetune_epochs
    return cfg


#: The largest --seed (NumPy and TensorFlow seeds are 32-bit).
SEED_MAX = 2**32 - 1
#: The fewest ID images that set a serving threshold (`amp_tf.serve.head.MIN_ID_IMAGES`; tests/test_cli.py checks).
MIN_THRESHOLD_IMAGES = 20


def _finite_above(low, strict=True):
    import math

    return lambda v: math.isfinite(v) and (v > low if strict else v >= low)


#: ``(dest, valid, what it expects)`` of every numeric flag of a command: `check_ranges` checks those the
#: command has (before TensorFlow), naming the flag.
RANGES = (
    ("epochs", lambda v: v >= 1, "an int >= 1 (an untrained model is never exported)"),
    ("batch_size", lambda v: v >= 1, "an int >= 1"),
    ("eval_batch_size", lambda v: v >= 1, "an int >= 1 (images per scoring batch)"),
    ("lr", _finite_above(0), "a finite learning rate > 0"),
    ("weight_decay", _finite_above(0, strict=False), "a finite value >= 0"),
    ("lr_gamma", _finite_above(0), "a finite factor > 0"),
    ("num_anchors", lambda v: v >= recipe.MIN_ANCHORS, f"K >= {recipe.MIN_ANCHORS} (tau is a standard deviation "
     "over anchors)"),
    ("seed", lambda v: 0 <= v <= SEED_MAX, f"an int in 0..{SEED_MAX} (2**32 - 1)"),
    ("shuffle_seed", lambda v: 0 <= v <= SEED_MAX, f"an int in 0..{SEED_MAX} (2**32 - 1)"),
    ("train_limit", lambda v: v >= 1, "an int >= 1 (omit the flag for no limit)"),
    ("eval_limit", lambda v: v >= 1, "an int >= 1 (omit the flag for no limit)"),
    ("width", lambda v: v >= 1, "an int >= 1"),
    ("image_size", lambda v: v >= 1, "an int >= 1 (the side of the square crops, in pixels)"),
    ("consistency_every", lambda v: v >= 0, "an int >= 0 (0 = never)"),
    ("finetune_epochs", lambda v: v >= 0, "an int >= 0"),
    ("tpr", lambda v: 0 < v < 1, "a fraction in (0, 1)"),
    ("val_size", lambda v: v >= MIN_THRESHOLD_IMAGES, f"an int >= {MIN_THRESHOLD_IMAGES} (ID validation images: "
     "the serving threshold, selection)"),
    ("threshold_size", lambda v: v >= MIN_THRESHOLD_IMAGES, f"an int >= {MIN_THRESHOLD_IMAGES} (validation images "
     "that set the serving threshold)"),
    ("odin_epsilon", _finite_above(0, strict=False), "a finite input perturbation >= 0 (0: none)"),
    ("odin_temperature", _finite_above(0), "a finite temperature > 0"),
    ("blur_sigma", _finite_above(0), "a finite blur sigma > 0 (pixels)"),
    ("ood_callback_sigma", _finite_above(0), "a finite blur sigma > 0 (pixels)"),
    ("ood_callback_every", lambda v: v >= 0, "an int >= 0 (0 = off)"),
    ("ood_callback_size", lambda v: v >= 1, "an int >= 1 (ID validation images of the OOD callback)"),
)


def check_ranges(a):
    """Every numeric flag of `a` (``vars(args)``) that `RANGES` lists, and --anchor-pool against K: a
    ValueError naming the flag. Pure Python (before TensorFlow).

    Example:
        >>> check_ranges({"seed": -1})
        Traceback (most recent call last):
        ...
        ValueError: --seed: expected an int in 0..4294967295 (2**32 - 1), got -1.
    """
    for flag, ok, what in RANGES:
        if a.get(flag) is not None and not ok(a[flag]):
            raise ValueError(f"--{flag.replace('_', '-')}: expected {what}, got {a[flag]!r}.")
    pool, k = a.get("anchor_pool"), a.get("num_anchors")
    if pool is not None and pool < max(1, k or 1):
        raise ValueError(f"--anchor-pool {pool}: the {k} anchors (--num-anchors) are picked among this many "
                         f"training images; give --anchor-pool >= {max(1, k or 1)}.")


def check_paths(a):
    """The path flags of `a` (``vars(args)``): --out and --backup-dir may not be empty text (an empty path
    is no folder: it would be silently ignored); --backup-dir with --no-backup contradicts itself."""
    for flag in ("out", "backup_dir"):
        if a.get(flag) is not None and not str(a[flag]).strip():
            name = f"--{flag.replace('_', '-')}"
            raise ValueError(f"{name}: empty path; give a folder, or omit {name} for the default place.")
    if a.get("no_backup") and a.get("backup_dir"):
        raise ValueError("--no-backup with --backup-dir: the first turns backups off, the second says where to "
                         "write them; drop one of the two flags.")
