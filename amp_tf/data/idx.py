"""A small reader for the IDX format of MNIST / Fashion-MNIST (gzip or raw).

Format: two zero bytes, a type byte, a byte with the number of dimensions,
one big-endian uint32 per dimension, then the data in row-major order.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxFormatError(ValueError):
    """An IDX file is truncated, corrupt or not an IDX file."""


def _fix_hint(path) -> str:
    return (
        f" Replace {path} with an intact copy (for Fashion-MNIST: "
        "`sudo apt-get install --reinstall dataset-fashion-mnist`, or put fresh files in --data-dir)."
    )


def read_idx_bytes(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parses the (already decompressed) bytes of an IDX file.

    Args:
        raw: The file content.
        source: Name used in error messages.

    Returns:
        The array, in native byte order.

    Raises:
        IdxFormatError: Bad magic number or a size that does not match the header.

    Example:
        >>> import struct
        >>> raw = bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes([7, 8, 9])
        >>> read_idx_bytes(raw).tolist()
        [7, 8, 9]
    """
    if len(raw) < 4:
        raise IdxFormatError(f"{source}: only {len(raw)} bytes, too short for an IDX header." + _fix_hint(source))
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _TYPES or not 1 <= ndim <= 8:
        raise IdxFormatError(
            f"{source}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000TTDD with a known "
            "type TT such as 08 for uint8 and 1..8 dimensions DD); this is not an IDX file."
            + _fix_hint(source)
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise IdxFormatError(f"{source}: truncated inside the IDX header." + _fix_hint(source))
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _TYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header_len
    if found != expected:
        kind = "truncated" if found < expected else "has trailing bytes"
        raise IdxFormatError(
            f"{source}: {kind}: header says shape {dims} ({expected} data bytes), "
            f"but the file holds {found} data bytes." + _fix_hint(source)
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file, gzip-compressed (detected by content) or raw.

    Args:
        path: Path to e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        The array (uint8 for image and label files).

    Raises:
        FileNotFoundError: No such file.
        IdxFormatError: Corrupt gzip stream, bad magic number, truncated data.

    Example:
        >>> x = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
        >>> x.shape, x.dtype
        ((10000,), dtype('uint8'))
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise IdxFormatError(
                f"{path}: the gzip stream is truncated or corrupt ({err})." + _fix_hint(path)
            ) from err
    return read_idx_bytes(raw, source=str(path))


def find_idx_pair(folder: str | os.PathLike, prefix: str) -> tuple[Path, Path] | None:
    """Finds ``<prefix>-images-idx3-ubyte[.gz]`` and ``<prefix>-labels-idx1-ubyte[.gz]``.

    Also accepts the ``<prefix>-images.idx3-ubyte`` spelling. ``prefix`` is
    ``"train"`` or ``"t10k"``.

    Returns:
        ``(images_path, labels_path)``, or None when either is missing.
    """
    folder = Path(folder)
    found = []
    for kind, ndim in (("images", 3), ("labels", 1)):
        hit = None
        for stem in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
            for suffix in (".gz", ""):
                candidate = folder / (stem + suffix)
                if candidate.is_file():
                    hit = candidate
                    break
            if hit:
                break
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


def read_image_label_pair(images_path, labels_path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Reads an MNIST-style images/labels IDX pair and checks they agree.

    Returns:
        ``(images uint8 [N, H, W, 1], labels int64 [N])``.

    Raises:
        IdxFormatError: Wrong ranks or dtypes, counts that differ, labels out of range.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}.")
    if labels.ndim != 1:
        raise IdxFormatError(f"{labels_path}: expected labels [N], got shape {labels.shape}.")
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "the two files do not belong together." + _fix_hint(images_path)
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise IdxFormatError(f"{labels_path}: labels outside 0..{num_classes - 1}." + _fix_hint(labels_path))
    return images[..., None], labels.astype(np.int64)
