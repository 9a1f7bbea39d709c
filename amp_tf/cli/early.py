"""Checks that need no data and no TensorFlow, shared by eval.ood, eval.resize_study and trainers.tune.

Pure Python (importing this module imports nothing heavy): each runs before `import tensorflow`, so
a flag-only mistake is answered at once. One function per check; every door calls the same one.

Example:
    >>> check_seed(7)
    7
    >>> check_seed(-1)
    Traceback (most recent call last):
    ...
    ValueError: --seed: expected an int in 0..4294967295 (a NumPy / Keras seed), got -1.
"""
from __future__ import annotations

import os
from pathlib import Path

#: The largest seed NumPy's legacy generator and `keras.utils.set_random_seed` take.
MAX_SEED = 2**32 - 1
#: The sets of `amp_tf.data.tfds_sets` that only tensorflow-datasets serves (its `TFDS_NAMES`; fashion_mnist
#: has offline copies) and its pattern forms; tests/test_cli.py checks the snapshot against the module.
TFDS_ONLY = ("cifar10", "cifar100", "svhn_cropped", "dtd", "places365_small", "imagenet2012", "mnist")
TFDS_PATTERNS = ("lsun/", "imagenet2012_corrupted/")


def check_seed(value, flag="--seed"):
    """`value` if it is a seed (an int in 0..2**32-1); ValueError naming `flag` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"{flag}: expected an int in 0..{MAX_SEED} (a NumPy / Keras seed), got {value!r}.")
    return value


def tfds_root(data_dir=None):
    """The folder tensorflow-datasets reads prepared sets from: --data-dir, else $TFDS_DATA_DIR, else
    ~/tensorflow_datasets."""
    return Path(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def check_tfds_prepared(names, data_dir=None, download=False, flag="--ood"):
    """Refuses a set that only tensorflow-datasets serves when no prepared copy lies in `tfds_root` (no
    `<root>/<name>/<version>/dataset_info.json`) and --download was not given. A quick look for the
    folder, no TensorFlow: the loader (`amp_tf.data.tfds_sets`) still makes tfds' own full check."""
    if download:
        return
    root = tfds_root(data_dir)
    where = f"--data-dir {data_dir}" if data_dir else f"the default tfds data dir {root}"
    for name in names:
        if not isinstance(name, str) or not (name in TFDS_ONLY or name.startswith(TFDS_PATTERNS)):
            continue
        if "://" in str(root) or _has_prepared_copy(root / name):
            continue
        raise ValueError(f"{flag}: {name!r} is not prepared in {where} (no {root / name}/<version>/"
                         "dataset_info.json); nothing was fetched. Fix: add --download to let "
                         "tensorflow-datasets download and prepare it, or pass --data-dir naming a tfds data "
                         "dir that holds a prepared copy" + _hint(name) + ".")


def _has_prepared_copy(folder):
    """Whether `folder` (a set's folder under the tfds root) holds a version (or config/version) with
    tfds' dataset_info.json."""
    if not folder.is_dir():
        return False
    return any(folder.glob("*/dataset_info.json")) or any(folder.glob("*/*/dataset_info.json"))


def _hint(name):
    return "; the offline set of handwritten digits is 'digits'" if name == "mnist" else ""
