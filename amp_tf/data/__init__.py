"""Data for amp-tf: one registry of image sets, and preprocessing.

Every set loads as an `ImageSet` whose ``dataset`` yields ``(uint8 HxWxC image,
int64 label)``; preprocessing (resize policy, channel conversion, normalisation
with the ID training statistics) is the separate `preprocess` step.

Example:
    >>> from amp_tf import data
    >>> ds_id = data.load("fashion_mnist", split="train")
    >>> x, y = data.to_numpy(ds_id, limit=1000)
    >>> mean, std = data.channel_stats(x)
    >>> ood = data.load("digits", split="test")
    >>> batches = data.preprocess(ood.dataset, mean, std, image_size=(28, 28), batch_size=256)
    >>> [n for n in data.fmnist_suite()["ood"]][:2]
    ['digits', 'font_letters']

Names: `names()`; the pattern forms ``"folder:<path>"``, ``"lsun/<category>"``
and ``"imagenet2012_corrupted/<corruption>_<1..5>"`` are accepted too
(``names(include_patterns=True)``).
"""
from amp_tf.data.registry import (
    DataNotFoundError,
    ImageSet,
    LoadRequest,
    load,
    names,
    register,
    to_numpy,
)
from amp_tf.data.idx import IdxFormatError, read_idx
from amp_tf.data import tfds_sets as _tfds_sets  # noqa: F401  (registers the tfds entries)
from amp_tf.data.offline import BLUR_SIGMAS, fashion_mnist_arrays, fmnist_suite, gaussian_blur
from amp_tf.data.folders import UnreadableImageError
from amp_tf.data import letters as _letters, natural_patches as _natural_patches  # noqa: F401 (register sets)
from amp_tf.data.corruptions import validation_ood_sets
from amp_tf.data.groups import GROUPS, group_of, group_summary
from amp_tf.data.preprocessing import (
    RESIZE_METHODS,
    channel_stats,
    convert_channels,
    preprocess,
    resize_images,
)

__all__ = [
    "BLUR_SIGMAS",
    "GROUPS",
    "group_of",
    "group_summary",
    "validation_ood_sets",
    "DataNotFoundError",
    "IdxFormatError",
    "ImageSet",
    "LoadRequest",
    "RESIZE_METHODS",
    "UnreadableImageError",
    "channel_stats",
    "convert_channels",
    "fashion_mnist_arrays",
    "fmnist_suite",
    "gaussian_blur",
    "load",
    "names",
    "preprocess",
    "read_idx",
    "register",
    "resize_images",
    "to_numpy",
]
