"""What every command shares: the common flags (the training flags and their TrainConfig are
`amp_tf.run.flags`'s), the checks before TensorFlow, run folders, presets and --dry-run."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from amp_tf import recipe
from amp_tf.contract import check_arch_width, check_image_shape, check_outputs
from amp_tf.errors import cli_errors, first_line  # noqa: F401  (the CLIs import them from here)
from amp_tf.cli.runs import (  # noqa: F401  (the CLIs import them from here)
    JOB_TIME_INCLUDES, RUNTIME_FLAGS, backup_arg, check_out, data_sources, init_from_info, run_and_report,
    run_folder, versions,
)
from amp_tf.run.flags import Parser, add_training_flags, train_config  # noqa: F401  (shared with the benchmarks)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def base_parser(description, defaults):
    """A `Parser` with the common training flags (defaults: `amp_tf.recipe`); `defaults` overrides."""
    p = Parser(description=description)
    add_training_flags(p, defaults)
    d = defaults.get
    o = p.add_argument_group("data and output")
    o.add_argument("--data-dir", default=None, help="data folder (tfds data_dir, or the Fashion-MNIST IDX folder)")
    o.add_argument("--download", action="store_true", help="allow tensorflow-datasets to download missing data")
    o.add_argument("--out", default=None, help="run folder (default: a new folder under runs/); a non-empty "
                   "folder is refused unless --resume or --overwrite")
    o.add_argument("--resume", action="store_true",
                   help="continue the run in --out (its stored settings must match these)")
    o.add_argument("--overwrite", action="store_true", help="clear --out first")
    o.add_argument("--num-anchors", type=int, default=d("num_anchors", recipe.NUM_ANCHORS), help="K anchors at inference")
    o.add_argument("--positive", default="id", choices=["id", "ood"],
                   help="metric convention: id (paper/ODIN) or ood (OpenOOD v1.5)")
    o.add_argument("--verbose", type=int, default=None, choices=[0, 1, 2],
                   help="Keras progress output: 1 = progress bar, 2 = one line per epoch (default: 1 in a "
                        "terminal, 2 when stdout is a file or pipe, so logs get no carriage-return updates)")
    return p


def check_args(args):
    """Every common argument checked before any work starts (clear ValueError naming the flag).

    Pure Python: runs before TensorFlow is imported (amp_tf/__init__), so a bad
    flag is answered at once.
    """
    from amp_tf.cli import names
    from amp_tf.run.flags import check_paths, check_ranges

    a = vars(args)
    check_ranges(a)  # every numeric flag, naming it (amp_tf.run.flags.RANGES)
    check_paths(a)
    if a.get("ood") is not None and not split_names(a["ood"]):
        raise ValueError(f"--ood {a['ood']!r}: names no OOD set; name one or more (a comma list), or omit --ood "
                         "where the command has default sets (the trainers).")
    if a.get("ood"):  # folder:<path> OOD sets: there and holding images, before any work
        from amp_tf.contract import check_ood_folders

        check_ood_folders(a["ood"])
    if a.get("init_from") is not None:
        init_from_info(a["init_from"])
    # a dry run loads nothing: a data folder that is not there yet is fine
    check_data_dir(a.get("data_dir"), a.get("download", False) or a.get("dry_run", False))
    if a.get("arch") is not None:
        names.check_arch(a["arch"])
    if a.get("consistency") is not None:
        names.check_consistency(a["consistency"])
    if a.get("lr_milestones"):
        try:
            ms = [int(m) for m in str(a["lr_milestones"]).split(",") if m.strip()]
        except ValueError:
            raise ValueError(f"--lr-milestones: expected comma-separated epochs, got {a['lr_milestones']!r}.")
        if any(m < 1 for m in ms):
            raise ValueError(f"--lr-milestones: epochs must be >= 1, got {a['lr_milestones']!r}.")
    if a.get("resume") and a.get("overwrite"):
        raise ValueError("--resume and --overwrite: pick one.")
    if a.get("resume") and "out" in a and not a.get("out"):
        raise ValueError("--resume needs --out: name the folder of the run to continue (its --out; without "
                         "--out every run gets a new folder under runs/).")
    if (a.get("num_anchors") is not None and a.get("train_limit") is not None
            and a["num_anchors"] > a["train_limit"]):
        raise ValueError(f"--num-anchors {a['num_anchors']}: the anchors are picked among the training images, "
                         f"and --train-limit keeps {a['train_limit']}; lower --num-anchors or raise --train-limit.")
    if ("epochs" in a and a.get("batch_size") is not None and a.get("train_limit") is not None
            and a["batch_size"] > a["train_limit"]):  # trainers (eval's --batch-size is for scoring)
        raise ValueError(f"--batch-size {a['batch_size']}: --train-limit keeps {a['train_limit']} training "
                         "images, fewer than one batch; lower --batch-size or raise --train-limit.")
    if "verbose" in a and a["verbose"] is None:
        import sys

        args.verbose = 1 if sys.stdout.isatty() else 2
    return args


def check_data(args, d):
    """Checks that need the ID data's sizes (an `amp_tf.run.pipeline.IDData`): after loading,
    before any folder is written or any training starts."""
    n = len(d.x_train)
    if getattr(args, "num_anchors", None) is not None and args.num_anchors > n:
        raise ValueError(f"--num-anchors {args.num_anchors}: the anchors are picked among the {n} training "
                         f"images of {d.name}; lower --num-anchors.")
    if getattr(args, "batch_size", None) is not None and args.batch_size > n:
        raise ValueError(f"--batch-size {args.batch_size}: {d.name} keeps only {n} training images, fewer "
                         "than one batch; lower --batch-size, or raise --train-limit.")


def check_data_dir(path, download=False):
    """--data-dir given but unusable (empty text, a file, a missing or empty folder) is refused.

    Without this, the loaders fall back to their default places and the flag is
    silently ignored. With --download a new or empty folder is the download target.

    Example:
        >>> check_data_dir(None)  # the flag not given: the defaults
    """
    if path is None:
        return
    if not str(path).strip():
        raise ValueError("--data-dir: empty path; omit the flag to use the default data places, or give a "
                         "folder that holds the data.")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"--data-dir {p} is a file; give the folder that holds the data.")
    if download:
        return
    if not p.exists():
        raise ValueError(f"--data-dir {p}: no such folder; give a folder that holds the data, or add "
                         "--download to fetch it into this folder.")
    if not any(p.iterdir()):
        raise ValueError(f"--data-dir {p} is an empty folder; give a folder that holds the data, or add "
                         "--download to fetch it into this folder.")


def tfds_root(data_dir=None):
    """The tensorflow-datasets folder a set is read from: `data_dir` (--data-dir), else $TFDS_DATA_DIR, else
    ~/tensorflow_datasets (tfds' default)."""
    return Path(str(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")).expanduser()


def tfds_prepared(name, data_dir=None):
    """True when tensorflow-datasets' `name` is prepared in `tfds_root(data_dir)` (its
    ``<name>/<version>/dataset_info.json``), or when that cannot be told without TensorFlow (a URL)."""
    raw = str(data_dir or os.environ.get("TFDS_DATA_DIR") or "")
    return "://" in raw or any(tfds_root(data_dir).glob(f"{name}/**/dataset_info.json"))


def explicit_flags(parser, argv):
    """The `dest`s of the flags written on the command line (not defaults, not --preset values)."""
    unset = object()
    ns = argparse.Namespace(**{dest: unset for dest in parser.flags if dest != "help"})
    parser.parse_known_args(argv, namespace=ns)
    return {k for k, v in vars(ns).items() if v is not unset}


# --------------------------------------------------------------------------- #
# Shared CLI helpers (trainers.cifar, trainers.imagenet, eval.ood)
# --------------------------------------------------------------------------- #
def restrict_choices(parser, dest, choices):
    """Limits an existing flag (e.g. the common --arch) of a `Parser` to `choices`."""
    parser.flags[dest].choices = list(choices)
    return parser


def split_names(text):
    """Comma-separated names; commas inside [...] do not split (``amp[sum,exp]``)."""
    out, cur, depth = [], "", 0
    for ch in str(text):
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur += ch
    out.append(cur)
    return [s.strip() for s in out if s.strip()]


def check_names(data_names):
    """Checks every data set name up front (unknown names fail before any work; no TensorFlow)."""
    from amp_tf.cli import names

    for name in data_names:
        names.check_data_name(name)


# --------------------------------------------------------------------------- #
# Presets (amp_tf.run.presets): --preset NAME and --dry-run, for every CLI
# --------------------------------------------------------------------------- #
def add_preset_flags(parser):
    """Adds --preset and --dry-run (used with `parse_cli`)."""
    from amp_tf.run import presets

    g = parser.add_argument_group("presets (the paper's tables; amp_tf.run.presets, docs/reproduce.md)")
    g.add_argument("--preset", default=None, metavar="NAME",
                   help="set the defaults of this command to one experiment of the paper (explicit flags "
                        f"override them): {', '.join(presets.names())}")
    g.add_argument("--dry-run", action="store_true",
                   help="print the resolved configuration (preset + flags) as JSON and exit; loads no data")
    return parser


def apply_preset(parser, argv, kind, cli):
    """Sets `parser`'s defaults from ``--preset NAME`` in `argv`, before the real parse.

    A trainer (`kind` ``train``) takes the preset's settings (`presets.flag_values`) as the
    values of the flags it has; an inference CLI its section
    (`presets.values`). Flags the preset sets stop being required; with --dry-run no
    flag is required. Returns the preset name, or None without --preset.

    Raises:
        ValueError: unknown preset (the message lists them), a preset of another
            trainer, a preset value that is not one of the flag's choices.
        KeyError: an eval-section key that is no flag of `parser` (a registry bug).
    """
    from amp_tf.run import presets

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--dry-run", action="store_true")
    known, _ = pre.parse_known_args(argv)
    actions = parser.flags
    if known.dry_run:
        for a in actions.values():
            a.required = False
    if known.preset is None:
        return None
    if kind == "train":
        values = {k: v for k, v in presets.flag_values(known.preset, cli).items() if k in actions}
    else:
        values = presets.values(known.preset, kind)
    missing = sorted(set(values) - set(actions))
    if missing:
        raise KeyError(f"preset {known.preset!r}: {cli} has no flag for {missing}.")
    for dest, value in values.items():
        a = actions[dest]
        if a.choices is not None and value not in a.choices:
            raise ValueError(f"preset {known.preset!r}: {dest}={value!r} is not one of {list(a.choices)} "
                             f"in {cli}.")
        a.required = False
    parser.set_defaults(**values)
    return known.preset


def resolved_config(args, preset, kind, cli, default_ood=(), describe=None):
    """The --dry-run JSON object: preset facts, dataset / arch / ood, and every flag's value.

    `describe(args) -> (dataset, ood names)` lets a command say what its flags
    resolve to (e.g. trainers.fmnist's fixed suite); the default reads --dataset /
    --id and --ood (the word `default` expands to `default_ood`).
    """
    from amp_tf.run import presets

    p = presets.get(preset) if preset else None
    a = vars(args)
    dataset, ood = describe(args) if describe else (None, None)
    dataset = dataset or a.get("dataset") or a.get("id") or (p.dataset if p else None)
    if ood is None and a.get("ood") is not None:
        ood = []
        for n in split_names(a["ood"]):
            ood += list(default_ood) if n == "default" else [n]
        ood = list(dict.fromkeys(ood))
    if ood is None:
        ood = list(default_ood)
    return {
        "preset": preset, "cli": cli, "kind": kind,
        "table": p.table if p else None, "title": p.title if p else None,
        "dataset": dataset, "arch": a.get("arch") or (p.arch if p else None), "ood": ood,
        "scores": a.get("scores") or (p.scores if p else None),
        "paper_metrics": list(p.metrics) if p else None,
        "paper_methods": list(p.paper_methods) if p else None,
        "trainer": p.trainer if p else None,
        "env": {presets.DATA_ENV: os.environ.get(presets.DATA_ENV)},
        "unset_env": presets.unset_env(preset) if p else [],
        "notes": p.notes if p else None,
        "args": a,
    }


def parse_cli(parser, argv, kind, cli, default_ood=(), describe=None, combine=None):
    """`parser.parse_args(argv)` with `apply_preset` first, then every check that needs no data.

    Order: parse, `check_args`, then `combine(args, given)` (the command's checks of
    flags that only make sense together; `given` = the flags written on the command
    line), all before TensorFlow is imported. On --dry-run prints `resolved_config`
    as JSON to stdout and exits 0 (no data is loaded). Otherwise registers every
    serializable (`heavy_imports`) and returns the args.
    """
    import json
    import sys

    preset = apply_preset(parser, argv, kind, cli)
    args = parser.parse_args(argv)
    check_args(args)
    if combine is not None:
        combine(args, explicit_flags(parser, argv))
    if getattr(args, "dry_run", False):
        if callable(default_ood):
            default_ood = default_ood()
        sys.stdout.write(json.dumps(resolved_config(args, preset, kind, cli, default_ood, describe), indent=2,
                                    default=str) + "\n")
        raise SystemExit(0)
    if kind == "train":
        check_out(args)  # a live run's folder, a run to resume, a place that cannot be written: at once
    heavy_imports()
    if kind == "train" and getattr(args, "strategy", None):
        log_strategy(args, cli)
    return args


def log_strategy(args, cli):
    """A trainer's first line: its distribution strategy, replicas and per-replica batch. The strategy is
    made here, at start (a multi-worker one must come first), and training reuses it (`get_strategy`)."""
    from amp_tf.run.distribute import describe_strategy, get_strategy

    line = describe_strategy(get_strategy(args.strategy), args.strategy, args.batch_size)
    print(f"[{cli.rsplit('.', 1)[-1]}] {line}", flush=True)


def heavy_imports():
    """Imports TensorFlow, registers every amp-tf serializable and the baselines' scores (after the
    cheap checks); the command imports the rest of what it uses. Not `amp_tf.import_all`: nothing
    inside the package imports the package, its top layer (tests/test_import_graph.py)."""
    import amp_tf.detection.baselines  # noqa: F401  (registers the baselines in amp_tf.method.scores)
    from amp_tf.serializables import register_all

    register_all()


def add_limit_alias(group):
    """Accepts ``--limit N`` as another spelling of ``--eval-limit N`` (eval.ood's older
    name); the help documents --eval-limit only."""
    group.add_argument("--limit", type=int, dest="eval_limit", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return group


def check_init_from(args, given, image_shape=None, data="this job's images", num_classes=None):
    """The --init-from checks every trainer shares (before any work; no TensorFlow).

    With --init-from: --arch / --width are refused when written (the given model
    fixes them; recorded as None), so is --epochs when --finetune-epochs > 0, and
    the model's input must be `image_shape` (when given; `data` names it in the
    message), and its class count `num_classes` (when given; read from the model's config.json, as the
    shape is: no TensorFlow). Without it: --finetune-epochs is refused when written (recorded as
    0), and --width for any architecture but resnet_small (recorded as None).
    trainers.fmnist, where --finetune-epochs also means "fine-tune the vanilla
    twin trained here", calls it with --init-from only.

    Returns True when --init-from is given.
    """
    if not args.init_from:
        refuse_with("finetune_epochs", given, "fine-tuning needs --init-from (a trained vanilla model).")
        args.finetune_epochs = 0
        if getattr(args, "arch", None) != "resnet_small" and hasattr(args, "width"):
            check_arch_width(args.arch, "width" in given)  # the one check (amp_tf.contract), also trainers.tune
            args.width = None
        return False
    for flag in ("arch", "width"):
        refuse_with(flag, given, "the architecture is that of the --init-from model; drop the flag.")
    if args.finetune_epochs:
        refuse_with("epochs", given, f"with --init-from nothing trains from scratch: the anchored model is "
                    f"fine-tuned for --finetune-epochs ({args.finetune_epochs}) epochs. Use --finetune-epochs N "
                    "(or --finetune-epochs 0 --epochs N).")
    _, shape, classes = init_from_info(args.init_from)
    check_image_shape(shape, image_shape, f"--init-from {args.init_from}", data)  # (None, None, C): any size
    check_outputs([("", classes)], f"--init-from {args.init_from}", num_classes, data)
    args.arch, args.width = None, None  # not used: recorded as such
    return True


def refuse_with(flag, given, reason):
    """ValueError when `flag` (a dest) was written on the command line: it would be ignored."""
    if flag in given:
        raise ValueError(f"--{flag.replace('_', '-')}: {reason}")
