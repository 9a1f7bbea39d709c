"""``font_letters``: letters A-Z rendered offline from TrueType fonts (far-OOD).

The notMNIST idea (letters in many typefaces), built on this machine instead of
downloaded: the fonts come from Debian's font packages ``fonts-dejavu-core``,
``fonts-liberation`` and ``fonts-freefont-ttf`` (installed by
``scripts/setup.sh``), found under `FONT_DIRS`.

How the set is made (deterministic for a given set of installed fonts):

* Fonts: every file of `PREFERRED_FONTS` (12 typefaces: sans, serif, mono,
  bold, italic, from the three packages) that exists under `FONT_DIRS`, in that
  order; if none of them exists, the first 12 ``*.ttf``/``*.otf`` files found
  there (sorted by path). No font at all raises `DataNotFoundError`.
* `PER_LETTER` = 120 images per upper-case letter A..Z, so 3,120 images, labels
  0..25 (A=0). Image ``i`` of a letter uses font ``fonts[i % len(fonts)]``, a
  glyph height drawn uniformly in 12..24 pixels and an offset of the glyph's
  centre from the image centre drawn uniformly in -3..3 pixels (x and y), all
  from ``numpy.random.default_rng(SEED)`` (SEED = 0).
* Rendering: Pillow draws the glyph white (255) on black (0) at 4x scale
  (112x112, 8-bit antialiased), its ink box centred at the drawn offset, then the
  canvas is reduced to 28x28 with a box filter, like Fashion-MNIST's white
  object on black. Glyphs that would leave the canvas are shrunk to fit.

Example:
    >>> from amp_tf import data
    >>> s = data.load("font_letters", split="test")
    >>> s.image_shape, s.num_examples, s.num_classes
    ((28, 28, 1), 3120, 26)
"""
from __future__ import annotations

import functools
import os
import string
from pathlib import Path

import numpy as np

from amp_tf.data.registry import DataNotFoundError, ImageSet, LoadRequest, check_split, from_arrays, register

#: Folders searched for fonts (recursively).
FONT_DIRS = ("/usr/share/fonts",)

#: Font files used when present (relative to a folder of `FONT_DIRS`).
PREFERRED_FONTS = (
    "truetype/dejavu/DejaVuSans.ttf",
    "truetype/dejavu/DejaVuSerif.ttf",
    "truetype/dejavu/DejaVuSansMono.ttf",
    "truetype/dejavu/DejaVuSans-Bold.ttf",
    "truetype/liberation/LiberationSans-Regular.ttf",
    "truetype/liberation/LiberationSerif-Regular.ttf",
    "truetype/liberation/LiberationMono-Regular.ttf",
    "truetype/liberation/LiberationSerif-BoldItalic.ttf",
    "truetype/freefont/FreeSans.ttf",
    "truetype/freefont/FreeSerif.ttf",
    "truetype/freefont/FreeMono.ttf",
    "truetype/freefont/FreeSerifItalic.ttf",
)

#: The apt command that installs the fonts (named in errors and in scripts/setup.sh).
FONT_INSTALL_HINT = "sudo apt-get install fonts-dejavu-core fonts-liberation fonts-freefont-ttf"

LETTERS = tuple(string.ascii_uppercase)
PER_LETTER = 120
SEED = 0
GLYPH_HEIGHTS = (12, 24)  # inclusive range, pixels at 28x28
MAX_OFFSET = 3  # pixels at 28x28
_SIZE = 28
_SCALE = 4


def find_fonts(dirs=None, max_fonts: int = 12) -> list[str]:
    """The font files `font_letters` uses, in order.

    Args:
        dirs: Folders to search; default `FONT_DIRS`.
        max_fonts: At most this many fonts.

    Returns:
        Paths: the `PREFERRED_FONTS` that exist, else the first ``max_fonts``
        ``*.ttf``/``*.otf`` files found (sorted). Empty when there are none.

    Example:
        >>> len(find_fonts()) >= 4
        True
        >>> find_fonts(dirs=["/nonexistent"])
        []
    """
    dirs = FONT_DIRS if dirs is None else tuple(dirs)
    preferred = []
    for rel in PREFERRED_FONTS:
        for d in dirs:
            p = Path(d) / rel
            if p.is_file() and str(p) not in preferred:
                preferred.append(str(p))
                break
    if preferred:
        return preferred[:max_fonts]
    found = set()
    for d in dirs:
        if os.path.isdir(d):
            for root, _, files in os.walk(d):
                found.update(os.path.join(root, f) for f in files if f.lower().endswith((".ttf", ".otf")))
    return sorted(found)[:max_fonts]


def render_letter(font_path: str, letter: str, height: int, dx: int, dy: int) -> np.ndarray:
    """One glyph, white on black, as uint8 [28, 28].

    Args:
        font_path: A TrueType/OpenType file.
        letter: The character to draw.
        height: Target height of the glyph's ink box in pixels (at 28x28).
        dx: Horizontal offset of the ink box centre from the image centre (pixels).
        dy: Vertical offset.

    Returns:
        uint8 [28, 28] image.

    Example:
        >>> img = render_letter(find_fonts()[0], "A", 20, 0, 0)
        >>> img.shape, img.dtype, int(img.max()) > 200, int(img[0].max())
        ((28, 28), dtype('uint8'), True, 0)
    """
    from PIL import Image, ImageDraw

    big = _SIZE * _SCALE
    target = height * _SCALE
    font = _font(font_path, 100)
    left, top, right, bottom = font.getbbox(letter)
    ink_h, ink_w = max(1, bottom - top), max(1, right - left)
    # Scale so the ink is `height` tall, but never wider/taller than the canvas allows.
    room = big - 2 * _SCALE * (MAX_OFFSET + 1)
    size = max(4, int(round(100 * min(target / ink_h, room / ink_h, room / ink_w))))
    font = _font(font_path, size)
    left, top, right, bottom = font.getbbox(letter)
    canvas = Image.new("L", (big, big), 0)
    cx = big / 2 + dx * _SCALE
    cy = big / 2 + dy * _SCALE
    x = int(round(cx - (left + right) / 2))
    y = int(round(cy - (top + bottom) / 2))
    ImageDraw.Draw(canvas).text((x, y), letter, fill=255, font=font)
    return np.asarray(canvas.resize((_SIZE, _SIZE), Image.Resampling.BOX), dtype=np.uint8)


@functools.lru_cache(maxsize=64)
def _font(path: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


@functools.lru_cache(maxsize=2)
def _letters_cached(fonts: tuple, per_letter: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(LETTERS) * per_letter
    heights = rng.integers(GLYPH_HEIGHTS[0], GLYPH_HEIGHTS[1] + 1, size=n)
    offsets = rng.integers(-MAX_OFFSET, MAX_OFFSET + 1, size=(n, 2))
    images = np.zeros((n, _SIZE, _SIZE, 1), np.uint8)
    labels = np.repeat(np.arange(len(LETTERS), dtype=np.int64), per_letter)
    for k in range(n):
        letter, i = LETTERS[labels[k]], k % per_letter
        images[k, :, :, 0] = render_letter(fonts[i % len(fonts)], letter, int(heights[k]),
                                           int(offsets[k, 0]), int(offsets[k, 1]))
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def font_letters_arrays(per_letter: int = PER_LETTER, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The letters as uint8 [26 * per_letter, 28, 28, 1] and int64 labels 0..25 (cached).

    Raises:
        DataNotFoundError: No font installed; the message names the apt command.

    Example:
        >>> x, y = font_letters_arrays(per_letter=2)
        >>> x.shape, y[:4].tolist()
        ((52, 28, 28, 1), [0, 0, 1, 1])
    """
    fonts = find_fonts()
    if not fonts:
        raise DataNotFoundError(
            f"font_letters: no TrueType/OpenType font found under {', '.join(FONT_DIRS)}. "
            f"Fix: `{FONT_INSTALL_HINT}` (or run scripts/setup.sh as root)."
        )
    return _letters_cached(tuple(fonts), int(per_letter), int(seed))


@register("font_letters")
def load_font_letters(request: LoadRequest) -> ImageSet:
    """Loads ``font_letters`` (split ``"test"``: 3,120 letters A-Z, labels 0..25).

    Example:
        >>> from amp_tf import data
        >>> data.load("font_letters", split="test").class_names[:3]
        ('A', 'B', 'C')
    """
    check_split(request, ("test",), "font_letters is an OOD evaluation set: all images are in 'test'")
    images, labels = font_letters_arrays()
    return from_arrays(request, images, labels, len(LETTERS), LETTERS)
