"""The offline Fashion-MNIST benchmark, loaded and normalised in one call.

Used by the main job (`trainers.fmnist`) and `benchmarks/ood_quality.py`, so the
two split, normalise and limit the data the same way.
"""

from __future__ import annotations

import numpy as np

from amp_tf.data.offline import fmnist_suite
from amp_tf.data.preprocessing import channel_stats, preprocess
from amp_tf.data.registry import load, to_numpy


def load_fmnist_suite(data_dir=None, download=False, seed=0, val_size=5000, train_limit=None,
                      eval_limit=None, holdout=False, min_val=20):
    """Fashion-MNIST split into train/validation/test plus the normalised OOD suite.

    The validation images are held out of training by a permutation seeded with
    `seed`; the per-channel statistics come from the training images only and
    normalise every set; `eval_limit` keeps the first N images of each test/OOD set.

    Returns:
        dict with `id_set`, `ood_names`, `num_classes`, float32 `x_train`, `x_val`,
        `x_test`, labels `y_train`, `y_val`, `y_test`, uint8 `x_val_uint8` (for a
        serving threshold), `ood` (`{name: float32 images}`), `mean`, `std` and
        `value_range` (the normalised pixel range, for the anchor transform).

    Example:
        >>> d = load_fmnist_suite(train_limit=100, val_size=50, eval_limit=20)
        >>> d["x_train"].shape, sorted(d["ood"])[:2]
        ((100, 28, 28, 1), ['digits', 'fmnist_blur_1'])
    """
    suite = fmnist_suite(holdout=holdout)
    x_all, y_all = to_numpy(load(suite["id"], "train", data_dir=data_dir, download=download))
    x_test, y_test = to_numpy(load(suite["id"], "test", data_dir=data_dir, download=download),
                              limit=eval_limit or None)
    order = np.random.default_rng(seed).permutation(len(x_all))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if train_limit:
        train_idx = train_idx[:train_limit]
    if len(val_idx) < min_val:
        raise ValueError(f"val_size: need at least {min_val} validation images, got {len(val_idx)}.")
    mean, std = channel_stats(x_all[train_idx])

    def norm(a):
        return np.asarray(preprocess(a, mean, std), "float32")

    ood = {}
    for name in suite["ood"]:
        x, _ = to_numpy(load(name, "test", data_dir=data_dir), limit=eval_limit or None)
        ood[name] = norm(x)
    return {
        "id_set": suite["id"], "ood_names": list(suite["ood"]), "num_classes": int(y_all.max()) + 1,
        "x_train": norm(x_all[train_idx]), "y_train": y_all[train_idx],
        "x_val": norm(x_all[val_idx]), "y_val": y_all[val_idx], "x_val_uint8": x_all[val_idx],
        "x_test": norm(x_test), "y_test": y_test, "ood": ood, "mean": mean, "std": std,
        "value_range": (tuple(((0.0 - mean) / std).tolist()), tuple(((255.0 - mean) / std).tolist())),
    }
