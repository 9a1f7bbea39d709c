"""Library cases, group ``data``: amp_tf.data.load on image folders of odd formats and layouts, and on
Fashion-MNIST data folders; to_numpy and channel_stats."""
from __future__ import annotations

import numpy as np

from benchmarks.contract import libkit as K
from benchmarks.contract.spec import lib

L = "data.load('folder:<path>')"


def _load(path, **kw):
    from amp_tf import data

    def go():
        s = data.load(f"folder:{path}", "test", **kw)
        return s, data.to_numpy(s)
    (s, (x, y)), warned = K.caught_warnings(go)
    return s, x, y, warned


def _gray_ref(n=6):
    return np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)[:n]


def _expect_pixels(path, want, what, tol=0, warn=None):
    s, x, _, warned = _load(path)
    got = x[..., 0] if x.shape[-1] == 1 else x
    ok = got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).max() <= tol
    note = f"{what}: shape {x.shape}, values {int(x.min())}..{int(x.max())}"
    if warn is not None and not any(warn.lower() in w.lower() for w in warned):
        return K.ok(False, note + f"; no warning saying '{warn}'")
    return K.ok(ok, note + ("" if ok else f" (expected {int(want.min())}..{int(want.max())})"))


@lib("data", L, "a folder of 30 28x28 grayscale PNGs", expect="ok")
def folder_gray(ctx):
    s, x, y, _ = _load(ctx["img_gray28"])
    return K.ok(x.shape == (30, 28, 28, 1) and (y == -1).all(), f"{x.shape}, labels {set(y.tolist())}")


@lib("data", "data.load", "'folder:' with no path", names=("folder",))
def folder_no_path(ctx):
    from amp_tf import data

    return data.load("folder:")


@lib("data", L, "a path that does not exist", names=("no-such",))
def folder_missing(ctx):
    return _load(f"{ctx['ws']}/no-such-folder")


@lib("data", L, "a file", names=("notes.txt",))
def folder_file(ctx):
    return _load(ctx["img_notes"])


@lib("data", L, "an empty folder", names=("no readable|empty",))
def folder_empty(ctx):
    return _load(ctx["img_empty"])


@lib("data", L, "only .txt / .csv files", names=("a.txt|not an image",))
def folder_nonimg(ctx):
    return _load(ctx["img_nonimg"])


@lib("data", L, "5 PNGs and 2 corrupt ones (random bytes, 0 bytes)", expect="ok")
def folder_corrupt(ctx):
    s, x, _, warned = _load(ctx["img_corrupt"])
    named = any("bad.png" in w and "zero.png" in w for w in warned)
    return K.ok(len(x) == 5 and named, f"{len(x)} images; warning names both: {named}")


@lib("data", L, "a corrupt PNG with strict=True", names=("bad.png",))
def folder_corrupt_strict(ctx):
    return _load(ctx["img_corrupt"], strict=True)


@lib("data", L, "only corrupt files", names=("x0.png|unreadable",))
def folder_corrupt_only(ctx):
    return _load(ctx["img_corrupt_only"])


@lib("data", L, "16-bit PNGs of mid-grey (8-bit levels 64 and 128)", expect="ok", row=117)
def folder_png16(ctx):
    want = np.full((6, 28, 28), 128, np.uint8)
    want[:, :, :14] = 64
    return _expect_pixels(ctx["img_png16_mid"], want, "16-bit")


@lib("data", L, "16-bit PNGs holding 8-bit values (0..255, e.g. a uint8 array saved as uint16)", expect="ok",
     note="loaded divided by 257 (all 0 or 1) with no word: the same 'cast to zero' as the float TIFF")
def folder_png16_low(ctx):
    return _expect_pixels(ctx["img_png16_low"], _gray_ref(), "16-bit low", warn="16-bit")


@lib("data", L, "32-bit float TIFFs in [0, 1]", expect="ok", row=139)
def folder_tiff_f01(ctx):
    return _expect_pixels(ctx["img_tiff_f01"], _gray_ref(), "float [0,1]", tol=1, warn="scaled")


@lib("data", L, "32-bit float TIFFs in 0..255 (fractional)", expect="ok")
def folder_tiff_f255(ctx):
    return _expect_pixels(ctx["img_tiff_f255"], np.minimum(_gray_ref(), 254), "float 0..255")


@lib("data", L, "32-bit float TIFFs with negative values", names=("0.tif|neither",))
def folder_tiff_fneg(ctx):
    return _load(ctx["img_tiff_fneg"])


@lib("data", L, "a float TIFF of NaN", names=("nan",))
def folder_tiff_fnan(ctx):
    return _load(ctx["img_tiff_fnan"])


@lib("data", L, "32-bit integer TIFFs (mode I) holding 0..255", expect="ok")
def folder_tiff_i32(ctx):
    return _expect_pixels(ctx["img_tiff_i32"], _gray_ref(), "int32 0..255")


@lib("data", L, "32-bit integer TIFFs with values up to 102000", names=("0.tif|16-bit|65535",))
def folder_tiff_i32big(ctx):
    return _load(ctx["img_tiff_i32big"])


@lib("data", L, "RGBA PNGs (alpha dropped)", expect="ok")
def folder_rgba(ctx):
    s, x, _, _ = _load(ctx["img_rgba"])
    want = np.repeat(_gray_ref()[..., None], 3, -1)
    return K.ok(x.shape == want.shape and np.array_equal(x, want), f"{x.shape}")


@lib("data", L, "palette (P) PNGs", expect="ok")
def folder_palette(ctx):
    s, x, _, _ = _load(ctx["img_palette"])
    return K.ok(x.shape[0] == 6 and x.shape[-1] in (1, 3), f"{x.shape}")


@lib("data", L, "grayscale+alpha (LA) PNGs", expect="ok")
def folder_la(ctx):
    return _expect_pixels(ctx["img_la"], _gray_ref(), "LA")


@lib("data", L, "CMYK JPEGs", expect="ok")
def folder_cmyk(ctx):
    s, x, _, _ = _load(ctx["img_cmyk"])
    return K.ok(x.shape == (6, 28, 28, 3), f"{x.shape}")


@lib("data", L, "1-bit PNGs", expect="ok")
def folder_bw1(ctx):
    s, x, _, _ = _load(ctx["img_bw1"])
    return K.ok(x.shape == (6, 28, 28, 1) and set(np.unique(x).tolist()) <= {0, 255}, f"{x.shape} {np.unique(x)}")


@lib("data", L, "grayscale JPEGs", expect="ok")
def folder_jpeg(ctx):
    return _expect_pixels(ctx["img_jpeg_gray"], _gray_ref(), "JPEG", tol=40)


@lib("data", L, "WebP images", expect="ok")
def folder_webp(ctx):
    s, x, _, _ = _load(ctx["img_webp"])
    return K.ok(x.shape[0] == 6, f"{x.shape}")


@lib("data", L, "1x1 images", expect="ok")
def folder_1x1(ctx):
    s, x, _, _ = _load(ctx["img_tiny1x1"])
    return K.ok(x.shape == (6, 1, 1, 1), f"{x.shape}")


@lib("data", L, "upper-case extensions (.PNG)", expect="ok")
def folder_upper(ctx):
    s, x, _, _ = _load(ctx["img_upper_ext"])
    return K.ok(len(x) == 6, f"{x.shape}")


@lib("data", L, "only hidden files (.h0.png ...)", names=("hidden|.h0.png",))
def folder_hidden(ctx):
    return _load(ctx["img_hidden"])


@lib("data", L, "symlinks to images and a dangling symlink", expect="ok",
     check=lambda ctx, r: ("obscure", "the dangling link is dropped without a word (other unreadable files are named)")
     if r.get("ok") is False and "4 images" in str(r.get("answer")) else None)
def folder_symlinks(ctx):
    s, x, _, warned = _load(ctx["img_symlinks"])
    return K.ok(len(x) == 4 and any("dangling" in w for w in warned), f"{len(x)} images; warned: {warned[:1]}")


@lib("data", L, "a symlink to a folder of images", expect="ok")
def folder_symdir(ctx):
    s, x, _, _ = _load(ctx["img_symdir"])
    return K.ok(len(x) == 30, f"{x.shape}")


@lib("data", L, "a dangling symlink as the folder", names=("dangling_dir|does not exist",))
def folder_dangling(ctx):
    return _load(ctx["img_dangling_dir"])


@lib("data", L, "class subfolders a/, b/ and a stray file beside them", expect="ok")
def folder_classes(ctx):
    s, x, y, warned = _load(ctx["img_classes"])
    ok = len(x) == 12 and s.num_classes == 2 and sorted(set(y.tolist())) == [0, 1]
    return K.ok(ok and any("stray.png" in w for w in warned), f"{len(x)} images, {s.num_classes} classes")


@lib("data", L, "class subfolders a/, b/ (empty), c/", expect="either", names=("b",),
     note="class c silently becomes label 1")
def folder_class_gap(ctx):
    s, x, y, warned = _load(ctx["img_classes_gap"])
    return K.ok(True, f"classes {s.class_names}, labels {sorted(set(y.tolist()))}, warnings {warned[:1]}")


@lib("data", "data.to_numpy", "a folder of images of mixed sizes", names=("size|resize",))
def folder_mixed(ctx):
    return _load(ctx["img_mixed_sizes"])


@lib("data", L, "an animated GIF", expect="ok")
def folder_gif(ctx):
    s, x, _, _ = _load(ctx["img_gif_anim"])
    return K.ok(len(x) == 1, f"{x.shape}")


F = "data.load('fashion_mnist')"


def _fm(split="train", **kw):
    from amp_tf import data

    return data.to_numpy(data.load("fashion_mnist", split, **kw), limit=10)


@lib("data", F, "split='validation'", names=("validation",))
def fm_split(ctx):
    return _fm("validation")


@lib("data", F, "data_dir of an empty folder", names=("img/empty|empty",))
def fm_empty_dir(ctx):
    return _fm(data_dir=ctx["img_empty"])


@lib("data", F, "data_dir whose train-images .gz is truncated", names=("train-images",))
def fm_corrupt(ctx):
    return _fm(data_dir=ctx["dd_corrupt_gz"])


@lib("data", F, "data_dir whose test labels do not match the test images (60000 vs 10000)",
     names=("label",))
def fm_labels(ctx):
    return _fm("test", data_dir=ctx["dd_swapped_labels"])


@lib("data", F, "data_dir of empty (0-byte) IDX files", names=("idx|empty|0 bytes|train-images",))
def fm_zero(ctx):
    return _fm(data_dir=ctx["dd_zero_files"])


@lib("data", F, "data_dir with the files in its fashion-mnist/ subfolder", expect="ok")
def fm_sub(ctx):
    x, y = _fm(data_dir=ctx["dd_sub"])
    return K.ok(x.shape == (10, 28, 28, 1), f"{x.shape}")


@lib("data", "data.load", "an empty name", names=("name",))
def load_empty_name(ctx):
    from amp_tf import data

    return data.load("")


@lib("data", "data.load", "name=None", names=("name",))
def load_none(ctx):
    from amp_tf import data

    return data.load(None)


@lib("data", "data.to_numpy", "limit=-1", names=("limit",))
def to_numpy_neg(ctx):
    from amp_tf import data

    return data.to_numpy(data.load("digits", "test"), limit=-1)


@lib("data", "data.to_numpy", "limit=0", expect="ok")
def to_numpy_zero(ctx):
    from amp_tf import data

    x, y = data.to_numpy(data.load("digits", "test"), limit=0)
    return K.ok(x.shape[0] == 0 and y.shape == (0,), f"{x.shape}")


@lib("data", "data.channel_stats", "an empty array", names=("empty|image",))
def stats_empty(ctx):
    from amp_tf import data

    return data.channel_stats(np.zeros((0, 28, 28, 1), np.uint8))


@lib("data", "data.channel_stats", "(N, 28, 28) images without a channel axis", expect="either",
     names=("shape|channel",))
def stats_rank3(ctx):
    from amp_tf import data

    m, s = data.channel_stats(K.images()[0][:64, ..., 0])
    return K.ok(np.size(m) == 1, f"mean {np.round(m, 2)} (shape {np.shape(m)})")
