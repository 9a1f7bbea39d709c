"""Image folders: ``folder:<path>`` (iSUN, LSUN/TinyImageNet resize/crop, SCOOD, your own).

Layouts:

* class subfolders (``path/<class>/**/image``): labels are the index of the class
  folder in sorted order; image files lying directly in ``path`` are then skipped
  (they have no class);
* flat (``path/image``): label -1.

Every file is decoded once with Pillow when the set is loaded, so unreadable
files are found up front and reported by name: by default they are skipped with
a warning giving their count and names, with ``strict=True`` loading raises.
Hidden files (names starting with ``.``) are ignored. Images that are all
grayscale give C=1, otherwise every image is converted to RGB (C=3; alpha is
dropped, palettes are expanded). Wider pixels are never cast silently (`wide_to_8bit`):

* 16-bit and 32-bit integer images (PNG/TIFF, Pillow modes ``I;16`` and ``I``) are scaled to 8 bits
  (``round(v / 257)``: 65535 is 255), not clipped; an image whose values all lie in 0..255 holds 8-bit
  values saved in a wider type (a uint8 array saved as uint16) and is read as it is, with a warning
  (once per folder) naming it; values outside 0..65535 are refused;
* 32-bit float images (TIFF mode F) in [0, 1] are scaled by 255 (with a warning), in 0..255 rounded,
  others refused (`float_to_8bit`).

A dangling symlink is skipped and named like any other unreadable file. Sets of one image size that fit in memory
(`MAX_IN_MEMORY_BYTES`) are held in memory; others are decoded again on the fly. The ``split`` argument is only
recorded: a folder is one split.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf

from amp_tf.data import tfdata
from amp_tf.data.registry import (
    DataNotFoundError,
    ImageSet,
    LoadRequest,
    finish_dataset,
    from_arrays,
    register,
)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
#: Pillow's modes of 16-bit images (a 16-bit grayscale PNG opens as "I;16" or "I"): scaled by 1/257.
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
#: Uniform-size folders up to this many decoded bytes are held in memory.
MAX_IN_MEMORY_BYTES = 1024**3
#: Names listed in a warning/error before "... and N more".
MAX_LISTED = 20


class UnreadableImageError(ValueError):
    """A folder holds files that are not readable images (raised with ``strict=True``); ``report`` names them."""

    def __init__(self, report, fix="Remove or fix them, or load with strict=False to skip them."):
        super().__init__(f"{report}. {fix}")
        self.report = report


def _decode(path: str, gray: bool | None) -> np.ndarray:
    """Decodes one image with Pillow to uint8 HxWxC (C=1 if ``gray`` else 3).

    ``gray=None`` keeps grayscale images single-channel and converts others to RGB.
    """
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if gray is None:
            gray = im.mode in _GRAY_MODES
        if im.mode in _SIXTEEN_BIT_MODES or im.mode == "F":
            arr = wide_to_8bit(np.asarray(im), path)
            if not gray:
                arr = np.repeat(arr[..., None], 3, axis=-1)
        else:
            arr = np.asarray(im.convert("L" if gray else "RGB"), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


_FOLDERS_TOLD = set()


def _tell_once(path, what, message):
    """Logs `message` (a rule applied to the image `path`) once per folder and kind of rule `what`."""
    folder = str(Path(path).parent)
    if (folder, what) not in _FOLDERS_TOLD:
        _FOLDERS_TOLD.add((folder, what))
        logging.getLogger("amp_tf.data").warning("%s: %s", folder, message)


def wide_to_8bit(values, path="image") -> np.ndarray:
    """Pixels of a 16-bit or 32-bit image (integer or float) as uint8 pixels, never silently wrong.

    Floats go to `float_to_8bit`. Integers whose values all lie in 0..255 are 8-bit values saved in a wider
    type: read as they are (said once per folder); others are 16-bit pixels, scaled by `to_8bit`.

    Example:
        >>> wide_to_8bit(np.array([0, 200, 255], np.int32), "a.tif").tolist()
        [0, 200, 255]
        >>> wide_to_8bit(np.array([0, 257, 65535], np.uint16), "b.png").tolist()
        [0, 1, 255]
    """
    v = np.asarray(values)
    if v.dtype.kind == "f":
        return float_to_8bit(v, path)
    if v.size and 0 <= v.min() and v.max() <= 255:
        _tell_once(path, "8-bit values", f"16-bit / 32-bit integer images whose values all lie in 0..255 (e.g. "
                   f"{Path(path).name}) hold 8-bit values: read as they are (0..255), not scaled by 1/257 as "
                   "16-bit pixels with larger values are. Save them as 8-bit images to silence this.")
        return v.astype(np.uint8)
    try:
        return to_8bit(v)
    except ValueError as err:
        raise ValueError(f"{path}: {str(err).removeprefix('image: ')}") from None


def float_to_8bit(values, path="image") -> np.ndarray:
    """Float pixels (a 32-bit float TIFF, Pillow's mode "F") as uint8 pixels, never cast to zero: values in
    [0, 1] are scaled by 255 (said once per folder), values in 0..255 rounded; others are refused.

    Example:
        >>> float_to_8bit(np.array([0.0, 0.5, 1.0], np.float32), "a.tif").tolist()
        [0, 128, 255]
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size and not np.isfinite(v).all():
        raise ValueError(f"{path}: a float image with NaN or Inf pixels; save it with finite values.")
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if lo < 0 or hi > 255:
        raise ValueError(f"{path}: float pixels in [{lo:.6g}, {hi:.6g}] are neither in [0, 1] nor in 0..255; "
                         "save the image as 8- or 16-bit PNG/TIFF, or as floats in [0, 1].")
    if hi <= 1.0:
        _tell_once(path, "float", f"float images with values in [0, 1] (e.g. {Path(path).name}): scaled by 255 "
                   "to 0..255 pixels.")
        v = v * 255.0
    return np.round(v).astype(np.uint8)


def to_8bit(values) -> np.ndarray:
    """16-bit pixels (0..65535) as uint8 pixels: ``round(v / 257)``, so 65535 -> 255 and 257 -> 1.

    Pillow's own ``convert("L")`` clips a 16-bit image at 255 instead (a mid-grey
    16-bit image would load all white).

    Example:
        >>> to_8bit(np.array([0, 257, 32896, 65535], np.uint16)).tolist()
        [0, 1, 128, 255]
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size and (v.min() < 0 or v.max() > 65535):
        raise ValueError(
            f"image: values in [{v.min():.6g}, {v.max():.6g}] are not 16-bit pixels (0..65535); "
            "save the image as 8- or 16-bit PNG/TIFF."
        )
    return np.round(v / 257.0).astype(np.uint8)


def _scan(root: Path) -> tuple[list[tuple[Path, int]], list[str], list[tuple[str, str]]]:
    """Lists candidate image files with labels; returns (files, class_names, skipped)."""
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    class_dirs = [d for d in entries if d.is_dir() and any(_walk(d))]
    skipped: list[tuple[str, str]] = []
    files: list[tuple[Path, int]] = []
    if class_dirs:
        class_names = [d.name for d in class_dirs]
        for label, d in enumerate(class_dirs):
            files += [(p, label) for p in _walk(d)]
        for p in entries:
            if p.is_file() or _dangling(p):
                skipped.append((p.name, "lies beside the class subfolders, so it has no class"))
    else:
        class_names = []
        files = [(p, -1) for p in entries if p.is_file() or _dangling(p)]
    candidates = []
    for p, label in files:
        if _dangling(p):
            skipped.append((str(p.relative_to(root)), f"a dangling symlink: its target {os.readlink(p)} is gone"))
        elif p.suffix.lower() in IMAGE_EXTENSIONS:
            candidates.append((p, label))
        else:
            skipped.append((str(p.relative_to(root)), f"not an image file (extension {p.suffix or 'none'!r})"))
    return candidates, class_names, skipped


def _dangling(path: Path) -> bool:
    """True for a symlink whose target does not exist (skipped and named, as unreadable files are)."""
    return path.is_symlink() and not path.exists()


def _walk(folder: Path):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _report(root: Path, skipped: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{name} ({why})" for name, why in skipped[:MAX_LISTED])
    more = f"; ... and {len(skipped) - MAX_LISTED} more" if len(skipped) > MAX_LISTED else ""
    return f"{len(skipped)} file(s) in {root} are not readable images: {shown}{more}"


def load_folder(request: LoadRequest) -> ImageSet:
    """Loads ``folder:<path>``, flat or with class subfolders.

    Returns:
        An `ImageSet`; ``num_classes`` is the number of class folders (None when flat);
        ``skipped`` names the files that were skipped.

    Raises:
        DataNotFoundError: The folder does not exist or holds no readable images.
        UnreadableImageError: ``strict=True`` and some files are unreadable.

    Example:
        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> from amp_tf import data
        >>> with tempfile.TemporaryDirectory() as d:
        ...     Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(f"{d}/a.png")
        ...     s = data.load(f"folder:{d}")
        >>> s.image_shape, s.num_examples
        ((8, 8, 3), 1)
    """
    root = _folder_root(request.name)
    candidates, class_names, skipped = _scan(root)
    decoded, shapes, labels, paths = _decode_all(root, candidates, skipped)
    _check_readable(root, paths, skipped, request.strict)

    channels = 3 if any(shape[-1] == 3 for shape in shapes) else 1
    sizes = {shape[:2] for shape in shapes}
    num_classes = len(class_names) or None
    names = tuple(class_names) or None
    labels_np = np.asarray(labels, dtype=np.int64)
    skipped_names = tuple(name for name, _ in skipped)

    if decoded is not None and len(sizes) == 1:
        if channels == 3:
            decoded = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in decoded]
        image_set = from_arrays(request, np.stack(decoded), labels_np, num_classes, names)
        image_set.skipped = skipped_names
        image_set.source = str(root)
        return image_set

    # Mixed sizes or too big for memory: decode on the fly.
    del decoded
    height, width = next(iter(sizes)) if len(sizes) == 1 else (None, None)
    return ImageSet(
        name=request.name,
        dataset=_streamed(request, paths, labels_np, (height, width, channels)),
        image_shape=(height, width, channels),
        num_classes=num_classes,
        num_examples=len(paths),
        split=request.split,
        class_names=names,
        skipped=skipped_names,
        source=str(root),
    )


def _folder_root(name: str) -> Path:
    """The folder of ``folder:<path>``; DataNotFoundError when it is missing or a file."""
    root = Path(name.split(":", 1)[1]).expanduser()
    if not root.exists():
        raise DataNotFoundError(
            f"folder {root} does not exist; pass folder:<path> with an existing folder of images "
            "(e.g. the extracted iSUN / LSUN_resize / Imagenet_resize tarballs)."
        )
    if not root.is_dir():
        raise DataNotFoundError(f"{root} is a file, not a folder; pass folder:<the folder that holds the images>.")
    return root


def _try_decode(item):
    """``(array, None)`` for a readable image file, ``(None, why)`` otherwise."""
    path, _ = item
    try:
        return _decode(str(path), gray=None), None
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ...
        return None, f"unreadable: {type(err).__name__}: {err}"


def _decode_all(root, candidates, skipped):
    """Decodes every candidate once (in threads); unreadable ones are appended to `skipped`.

    Returns:
        ``(decoded, shapes, labels, paths)`` of the readable images; ``decoded`` is
        None once the set outgrows `MAX_IN_MEMORY_BYTES` (then it is decoded again on the fly).
    """
    decoded, shapes, labels, paths = [], [], [], []
    nbytes = 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for (path, label), (arr, why) in zip(candidates, pool.map(_try_decode, candidates)):
            if arr is None:
                skipped.append((str(path.relative_to(root)), why))
                continue
            shapes.append(arr.shape)
            labels.append(label)
            paths.append(str(path))
            nbytes += arr.size * 3
            if decoded is not None and nbytes > MAX_IN_MEMORY_BYTES:
                decoded = None  # too big: decode on the fly later
            if decoded is not None:
                decoded.append(arr)
    return decoded, shapes, labels, paths


def _check_readable(root, paths, skipped, strict):
    """Raises when `strict` and files were skipped, or when no image is readable; else warns
    about the skipped files (attributed to the caller of `load_folder`'s caller)."""
    if skipped and strict:
        raise UnreadableImageError(_report(root, skipped))
    if not paths:
        raise DataNotFoundError(
            f"folder {root} holds no readable images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))} "
            "files, flat or in class subfolders)"
            + (f"; {_report(root, skipped)}" if skipped else "")
            + ". Point folder:<path> at the folder that holds the images."
        )
    if skipped:
        warnings.warn(f"folder:{root}: skipped {_report(root, skipped)}", UserWarning, stacklevel=4)


def _streamed(request, paths, labels, image_shape):
    """A `tf.data` pipeline that decodes `paths` on the fly (shuffling the paths, not the images)."""
    gray = image_shape[-1] == 1

    def decode_path(p):
        return _decode(p.decode(), gray=gray)

    def load_one(path, label):
        image = tf.numpy_function(decode_path, [path], tf.uint8, stateful=False)
        image.set_shape(image_shape)
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths), labels))
    if request.shuffle:  # shuffle the cheap paths, not decoded images
        ds = ds.shuffle(len(paths), seed=request.seed, reshuffle_each_iteration=True)
    ds = ds.map(load_one, num_parallel_calls=tfdata.map_calls())
    return finish_dataset(ds, dataclasses.replace(request, shuffle=False), shuffle_buffer=1)


register("folder:<path>")(load_folder)
