"""The tfds-set check that eval.ood, eval.resize_study and trainers.tune make before TensorFlow.

Pure Python (importing this module imports nothing heavy): it runs before `import tensorflow`, so
a set that is not on this machine is answered at once. It reads the tfds folder with the trainers'
`amp_tf.cli.common.tfds_root` / `tfds_prepared` (one look, every door); the flags' ranges (--seed
included) are `amp_tf.run.flags.RANGES`.

Example:
    >>> check_tfds_prepared(["digits"])  # an offline set: nothing to look for
"""
from __future__ import annotations

from amp_tf.cli.common import tfds_prepared, tfds_root

#: The sets of `amp_tf.data.tfds_sets` that only tensorflow-datasets serves (its `TFDS_NAMES`; fashion_mnist
#: has offline copies) and its pattern forms; tests/test_cli.py checks the snapshot against the module.
TFDS_ONLY = ("cifar10", "cifar100", "svhn_cropped", "dtd", "places365_small", "imagenet2012", "mnist")
TFDS_PATTERNS = ("lsun/", "imagenet2012_corrupted/")


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
        if tfds_prepared(name, data_dir):
            continue
        raise ValueError(f"{flag}: {name!r} is not prepared in {where} (no {root / name}/<version>/"
                         "dataset_info.json); nothing was fetched. Fix: add --download to let "
                         "tensorflow-datasets download and prepare it, or pass --data-dir naming a tfds data "
                         "dir that holds a prepared copy" + _hint(name) + ".")


def _hint(name):
    return "; the offline set of handwritten digits is 'digits'" if name == "mnist" else ""
