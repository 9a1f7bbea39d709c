"""The names a CLI flag may take, checked before TensorFlow is imported.

The registries (backbones, transforms of T, data sets) live in modules that
import TensorFlow; a CLI checks its flags before that import (amp_tf/__init__),
so it checks names against this snapshot. Where the registry module is already
imported (a test, a benchmark, eval.resize_study's in-memory sets), the live
registry is asked instead, so a set registered at run time is never refused.
tests/test_cli.py asserts that the snapshot equals the registries.

Pure Python: importing this module imports nothing heavy.

Example:
    >>> check_arch("resnet_small")
    'resnet_small'
    >>> check_consistency("flip+blur")
    ('flip', 'blur')
    >>> check_data_name("folder:/data/iSUN")
    'folder:/data/iSUN'
    >>> check_family("MobileNetV3Small")
    'MobileNetV3Small'
"""
from __future__ import annotations

import sys

#: amp_tf.models.backbone_names()
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet50_imagenet", "resnet_small", "wrn40_2")
#: amp_tf.method.augment.PRESETS and amp_tf.method.augment.transform_names()
CONSISTENCY_PRESETS = {
    "none": (),
    "jitter_blur": ("color_jitter", "blur"),
    "flip_grayscale": ("flip", "grayscale"),
    "resized_crop": ("resized_crop",),
    "all": ("resized_crop", "flip", "color_jitter", "blur", "grayscale"),
}
TRANSFORMS = ("blur", "color_jitter", "flip", "grayscale", "resized_crop")
#: The corruptions of tensorflow-datasets' imagenet2012_corrupted (each at levels 1..5; tests/test_cli.py checks)
IMAGENET_C = ("brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_blur",
              "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate",
              "saturate", "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur")
#: amp_tf.data.folders.IMAGE_EXTENSIONS: the files an image folder is read from
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
#: amp_tf.data.RESIZE_METHODS
RESIZE_METHODS = ("tf", "pil_nearest", "pil_bilinear", "pil_bicubic", "pil_lanczos")
#: amp_tf.data.names() and the patterns of amp_tf.data.names(include_patterns=True)
DATASETS = (
    "cifar10", "cifar100", "digits", "dtd", "fashion_mnist",
    *(f"fmnist_{k}_{lv}" for k in ("blur", "contrast") for lv in range(1, 6)),
    "fmnist_holdout2_id", "fmnist_holdout2_ood", "fmnist_holdout_id", "fmnist_holdout_ood",
    *(f"fmnist_{k}_{lv}" for k in ("jpeg", "pixelate") for lv in range(1, 6)),
    "font_letters", "imagenet2012", "mnist", "places365_small", "skimage_patches", "svhn_cropped",
)
DATASET_PATTERNS = ("folder:<path>", "imagenet2012_corrupted/<corruption>_<1..5>", "lsun/<category>")
#: keras.applications' model constructors (`application_names()`; examples/anchor_your_model.py --family)
APPLICATIONS = (
    *(f"ConvNeXt{s}" for s in ("Base", "Large", "Small", "Tiny", "XLarge")), "DenseNet121", "DenseNet169",
    "DenseNet201", *(f"EfficientNetB{i}" for i in range(8)), *(f"EfficientNetV2B{i}" for i in range(4)),
    "EfficientNetV2L", "EfficientNetV2M", "EfficientNetV2S", "InceptionResNetV2", "InceptionV3", "MobileNet",
    "MobileNetV2", "MobileNetV3Large", "MobileNetV3Small", "NASNetLarge", "NASNetMobile", "ResNet101",
    "ResNet101V2", "ResNet152", "ResNet152V2", "ResNet50", "ResNet50V2", "VGG16", "VGG19", "Xception",
)


def _live(module):
    return sys.modules.get(module)


def check_arch(name):
    """`name` if it is a backbone; ValueError naming --arch and the known ones otherwise."""
    models = _live("amp_tf.models")
    known = models.backbone_names() if models is not None else list(BACKBONES)
    if name not in known:
        raise ValueError(f"--arch: unknown backbone {name!r}; known: {', '.join(known)}.")
    return name


def check_consistency(text, flag="--consistency"):
    """The transforms of T that `text` names (a preset, or names joined by '+'); empty text is refused
    (it is no transform: T off is the preset ``none``)."""
    if not str(text).strip():
        raise ValueError(f"{flag}: {text!r} is not a transform; for no anchor transform use {flag} none, else a "
                         f"preset {sorted(CONSISTENCY_PRESETS)} or names from {sorted(TRANSFORMS)} joined by '+'.")
    augment = _live("amp_tf.method.augment")
    if augment is not None:
        try:
            return augment.resolve(text)
        except ValueError as err:
            raise ValueError(f"{flag}: {str(err).removeprefix('consistency: ')}") from None
    if text in CONSISTENCY_PRESETS:
        return CONSISTENCY_PRESETS[text]
    names = tuple(c.strip() for c in str(text).split("+") if c.strip())
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ValueError(f"{flag}: unknown transform(s) {unknown}. Use a preset {sorted(CONSISTENCY_PRESETS)} "
                         f"or names from {sorted(TRANSFORMS)} (a list, or joined with '+', e.g. 'flip+blur').")
    return names


def check_imagenet_c(name):
    """An ``imagenet2012_corrupted/<corruption>_<1..5>`` name must name one of tfds' variants (`IMAGENET_C`)."""
    family, _, variant = str(name).partition("/")
    if family != "imagenet2012_corrupted":
        return
    corruption, _, level = variant.rpartition("_")
    if corruption not in IMAGENET_C or level not in ("1", "2", "3", "4", "5"):
        raise ValueError(f"unknown imagenet2012_corrupted variant {variant!r} in {name!r}; use "
                         f"imagenet2012_corrupted/<corruption>_<level 1..5>, the corruption one of: "
                         f"{', '.join(IMAGENET_C)} (e.g. imagenet2012_corrupted/gaussian_blur_3).")


def check_data_name(name):
    """`name` if it is a data set name or a pattern form; the registry's ValueError otherwise."""
    check_imagenet_c(name)
    registry = _live("amp_tf.data.registry")
    if registry is not None:
        registry.resolve(name)
        return name
    if not isinstance(name, str) or not name:
        raise ValueError(f"data set name must be a non-empty string, got {name!r}.")
    if name in DATASETS:
        return name
    for pattern in DATASET_PATTERNS:
        prefix = pattern.split("<", 1)[0]
        if name.startswith(prefix) and len(name) > len(prefix):
            return name
    raise ValueError(
        f"unknown data set name {name!r}. Known names: {', '.join(DATASETS)}; "
        f"and the patterns: {', '.join(DATASET_PATTERNS)}. Use one of these (see amp_tf.data.names())."
    )


def application_names():
    """The model constructors of `keras.applications` (sorted): the live module's when Keras is imported,
    else the snapshot `APPLICATIONS`."""
    keras = _live("keras")
    if keras is None:
        return list(APPLICATIONS)
    apps = keras.applications
    return sorted(n for n in dir(apps) if n[:1].isupper() and callable(getattr(apps, n)))


def check_family(name, flag="--family"):
    """`name` if it is a `keras.applications` model; ValueError naming `flag`, the closest name and the
    known ones otherwise."""
    import difflib

    known = application_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ValueError(f"{flag} {name}: not a keras.applications model; {hint}pick one of {', '.join(known)}.")
    return name
