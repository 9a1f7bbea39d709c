"""``skimage_patches``: 28x28 grayscale patches of real photographs (far-OOD).

Source: the sample images bundled inside the PyPI package ``scikit-image``
(pinned ``scikit-image==0.26.0`` in requirements.txt; the files ship in the
wheel under ``skimage/data/``, no download). Only real photographs and
micrographs are used (`PHOTOS`, 15 files: astronaut, brick, camera, cell,
chelsea, coffee, coins, grass, gravel, hubble_deep_field, ihc, moon,
motorcycle_left, retina, rocket); synthetic images (chessboard, color, logo,
phantom), the silhouette ``horse``, the motion-blurred ``clock_motion`` (blur
is a covariate test corruption) and the text scans ``page``/``text`` (letters
are another test set) are left out. Files are read with Pillow directly,
scikit-image itself is not imported.

How the set is made (deterministic):

* each photo is converted to grayscale with Pillow's ``convert("L")`` (ITU-R
  601-2 luma; alpha dropped);
* at each of `SCALES` = 56, 112, 224 pixels it is resized (Lanczos) so that its
  shorter side has that length, keeping the aspect ratio, so patches range from
  almost the whole scene to a close texture;
* `PER_SCALE` = 48 windows of 28x28 are cut at positions drawn uniformly with
  ``numpy.random.default_rng(SEED)`` (SEED = 0), photos and scales in the order
  above: 15 x 3 x 48 = 2,160 images, uint8 [28, 28, 1];
* the label is the photo's index in `PHOTOS` (class names = photo names).

Example:
    >>> from amp_tf import data
    >>> s = data.load("skimage_patches", split="test")
    >>> s.image_shape, s.num_examples
    ((28, 28, 1), 2160)
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from amp_tf.data.registry import DataNotFoundError, ImageSet, LoadRequest, check_split, from_arrays, register

PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png",
    "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg",
    "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg",
)
SCALES = (56, 112, 224)
PER_SCALE = 48
SEED = 0
_SIZE = 28
INSTALL_HINT = "pip install scikit-image==0.26.0 (or run scripts/setup.sh)"


def skimage_data_dir() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image (not imported).

    Raises:
        DataNotFoundError: scikit-image is not installed or lacks the photos.

    Example:
        >>> (skimage_data_dir() / "camera.png").is_file()
        True
    """
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(f"skimage_patches: scikit-image is not installed. Fix: {INSTALL_HINT}.")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [p for p in PHOTOS if not (folder / p).is_file()]
    if missing:
        raise DataNotFoundError(
            f"skimage_patches: {len(missing)} bundled photo(s) missing in {folder} "
            f"(e.g. {missing[0]}). Fix: {INSTALL_HINT}."
        )
    return folder


@functools.lru_cache(maxsize=1)
def skimage_patches_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The patches as uint8 [2160, 28, 28, 1] and int64 photo indices (cached, read-only).

    Example:
        >>> x, y = skimage_patches_arrays()
        >>> x.dtype, int(y.max())
        (dtype('uint8'), 14)
    """
    from PIL import Image

    folder = skimage_data_dir()
    rng = np.random.default_rng(SEED)
    images, labels = [], []
    for label, name in enumerate(PHOTOS):
        with Image.open(folder / name) as im:
            gray = im.convert("L")
        for short in SCALES:
            w, h = gray.size
            f = short / min(w, h)
            size = (max(_SIZE, int(round(w * f))), max(_SIZE, int(round(h * f))))
            arr = np.asarray(gray.resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)
            ys = rng.integers(0, arr.shape[0] - _SIZE + 1, size=PER_SCALE)
            xs = rng.integers(0, arr.shape[1] - _SIZE + 1, size=PER_SCALE)
            for y0, x0 in zip(ys, xs):
                images.append(arr[y0:y0 + _SIZE, x0:x0 + _SIZE])
                labels.append(label)
    x = np.stack(images)[..., None]
    y = np.asarray(labels, np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@register("skimage_patches")
def load_skimage_patches(request: LoadRequest) -> ImageSet:
    """Loads ``skimage_patches`` (split ``"test"``: 2,160 patches of 15 photographs).

    Example:
        >>> from amp_tf import data
        >>> data.load("skimage_patches", split="test").class_names[2]
        'camera'
    """
    check_split(request, ("test",), "skimage_patches is an OOD evaluation set: all images are in 'test'")
    images, labels = skimage_patches_arrays()
    names = tuple(p.rsplit(".", 1)[0] for p in PHOTOS)
    return from_arrays(request, images, labels, len(PHOTOS), names)
