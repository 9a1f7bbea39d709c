"""Flags shared by every trainer, mapped onto `amp_tf.training.TrainConfig`."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def base_parser(description, defaults):
    """An ArgumentParser with the common training flags; `defaults` overrides per trainer."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = defaults.get
    g = p.add_argument_group("training")
    g.add_argument("--arch", default=d("arch", "resnet_small"), help="backbone name (amp_tf.models.backbone_names())")
    g.add_argument("--epochs", type=int, default=d("epochs", 3), help="training epochs")
    g.add_argument("--batch-size", type=int, default=d("batch_size", 128), help="GLOBAL batch size (split over replicas)")
    g.add_argument("--lr", type=float, default=d("lr", 0.1), help="initial learning rate (SGD, momentum 0.9)")
    g.add_argument("--weight-decay", type=float, default=d("weight_decay", 5e-4), help="SGD weight decay")
    g.add_argument("--lr-milestones", default=d("lr_milestones", ""),
                   help="comma-separated epochs where lr is multiplied by --lr-gamma (empty: cosine with warm-up)")
    g.add_argument("--lr-gamma", type=float, default=d("lr_gamma", 0.2), help="lr factor at each milestone")
    g.add_argument("--consistency", default=d("consistency", "all"),
                   help="anchor transform T: preset (all, none, jitter_blur, flip_grayscale, resized_crop) or names joined by '+'")
    g.add_argument("--consistency-every", type=int, default=d("consistency_every", 5),
                   help="apply T on every n-th training step (0 = never)")
    g.add_argument("--augment", default=d("augment", "crop_flip"), choices=["crop_flip", "none"],
                   help="training-data augmentation")
    g.add_argument("--seed", type=int, default=d("seed", 0), help="seed for data order, anchors, T and init")
    s = p.add_argument_group("scale-out and speed")
    s.add_argument("--strategy", default="default", choices=["default", "mirrored", "multiworker", "tpu"],
                   help="tf.distribute strategy (multiworker reads TF_CONFIG; tpu is untested here)")
    s.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    s.add_argument("--mixed-precision", action="store_true", help="bfloat16 compute, float32 logits and tau")
    s.add_argument("--no-backup", action="store_true", help="disable BackupAndRestore (resume after a kill)")
    o = p.add_argument_group("data and output")
    o.add_argument("--data-dir", default=None, help="data folder (tfds data_dir, or the Fashion-MNIST IDX folder)")
    o.add_argument("--download", action="store_true", help="allow tensorflow-datasets to download missing data")
    o.add_argument("--out", default=None, help="run folder (default: a new folder under runs/)")
    o.add_argument("--num-anchors", type=int, default=d("num_anchors", 5), help="K anchors at inference")
    o.add_argument("--positive", default="id", choices=["id", "ood"],
                   help="metric convention: id (paper/ODIN) or ood (OpenOOD v1.5)")
    o.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Keras progress output")
    return p


def train_config(args, **overrides):
    from amp_tf.training import TrainConfig

    milestones = tuple(int(m) for m in str(args.lr_milestones).split(",") if m.strip())
    cfg = TrainConfig(
        arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, lr_milestones=milestones, lr_gamma=args.lr_gamma,
        warmup_epochs=0.0 if milestones else min(1.0, args.epochs * 0.1),
        consistency=args.consistency, consistency_every=args.consistency_every, augment=args.augment,
        seed=args.seed, strategy=args.strategy, jit_compile=args.jit_compile,
        mixed_precision=args.mixed_precision,
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def run_dir(args, name):
    out = Path(args.out) if args.out else Path("runs") / f"{name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def versions():
    import keras
    import numpy as np
    import tensorflow as tf

    import amp_tf

    return {"amp_tf": amp_tf.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
