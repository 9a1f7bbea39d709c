"""The probe's files: image folders of odd formats, .npy arrays, Fashion-MNIST data folders (numpy and
Pillow only; the Keras model files are made by the worker group ``fixtures``)."""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np

FMNIST = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _save(arr, path, mode=None, **kw):
    from PIL import Image

    im = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    im.save(path, **kw)
    return path


def _gray(n, h=28, w=28, seed=0):
    return _rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def images(root):
    """Image folders under `root` (one folder per oddity); returns {name: path}."""
    from PIL import Image

    root = Path(root)
    out = {}

    def folder(name):
        p = root / name
        p.mkdir(parents=True, exist_ok=True)
        out[name] = p
        return p

    g = _gray(30)
    for i, a in enumerate(g):
        _save(a, folder("gray28") / f"{i:02d}.png")
    for i, a in enumerate(_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)):
        _save(a, folder("rgb32") / f"{i:02d}.png")
    for i, a in enumerate(_rng(2).integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)):
        _save(a, folder("rgb64") / f"{i:02d}.png")
    for i in range(10):
        _save(_gray(1, 20 + 2 * i, 24 + i, seed=i)[0], folder("mixed_sizes") / f"{i:02d}.png")
    folder("empty")
    (folder("nonimg") / "a.txt").write_text("not an image")
    (out["nonimg"] / "b.csv").write_text("1,2,3")
    for i in range(5):
        _save(g[i], folder("corrupt") / f"ok{i}.png")
    (out["corrupt"] / "bad.png").write_bytes(os.urandom(300))
    (out["corrupt"] / "zero.png").write_bytes(b"")
    for i in range(6):
        (folder("corrupt_only") / f"x{i}.png").write_bytes(os.urandom(100))
    mid = np.full((28, 28), 32896, np.uint16)
    mid[:, :14] = 16448  # left half 64, right half 128 in 8-bit terms
    for i in range(6):
        Image.fromarray(mid).save(folder("png16_mid") / f"{i}.png")
        Image.fromarray((g[i].astype(np.uint16))).save(folder("png16_low") / f"{i}.png")
        Image.fromarray(g[i].astype(np.float32) / 255.0, "F").save(folder("tiff_f01") / f"{i}.tif")
        Image.fromarray(np.minimum(g[i], 254).astype(np.float32) + 0.25, "F").save(folder("tiff_f255") / f"{i}.tif")
        Image.fromarray(_rng(50 + i).integers(0, 65536, (28, 28)).astype(np.uint16)).save(
            folder("png16_rand") / f"{i}.png")
        Image.fromarray(g[i].astype(np.float32) - 128.0, "F").save(folder("tiff_fneg") / f"{i}.tif")
        Image.fromarray(g[i].astype(np.int32), "I").save(folder("tiff_i32") / f"{i}.tif")
        Image.fromarray(g[i].astype(np.int32) * 400, "I").save(folder("tiff_i32big") / f"{i}.tif")
        rgba = np.dstack([np.repeat(g[i][..., None], 3, -1), np.full((28, 28), 7, np.uint8)])
        Image.fromarray(rgba, "RGBA").save(folder("rgba") / f"{i}.png")
        Image.fromarray(np.repeat(g[i][..., None], 3, -1)).convert("P").save(folder("palette") / f"{i}.png")
        Image.fromarray(np.dstack([g[i], g[i]]), "LA").save(folder("la") / f"{i}.png")
        Image.fromarray(np.repeat(g[i][..., None], 3, -1)).convert("CMYK").save(folder("cmyk") / f"{i}.jpg")
        Image.fromarray(g[i]).convert("1").save(folder("bw1") / f"{i}.png")
        Image.fromarray(g[i]).save(folder("jpeg_gray") / f"{i}.jpg", quality=95)
        Image.fromarray(g[i]).save(folder("webp") / f"{i}.webp")
        Image.fromarray(np.zeros((1, 1), np.uint8) + i).save(folder("tiny1x1") / f"{i}.png")
        Image.fromarray(g[i]).save(folder("upper_ext") / f"IMG{i}.PNG")
        Image.fromarray(g[i]).save(folder("hidden") / f".h{i}.png")
    nan = np.full((28, 28), np.nan, np.float32)
    Image.fromarray(nan, "F").save(folder("tiff_fnan") / "0.tif")
    frames = [Image.fromarray(g[i]) for i in range(3)]
    frames[0].save(folder("gif_anim") / "a.gif", save_all=True, append_images=frames[1:])
    for k, cls in enumerate("ab"):
        (folder("classes") / cls).mkdir(exist_ok=True)
        for i in range(6):
            _save(g[i + 6 * k], out["classes"] / cls / f"{i}.png")
    _save(g[20], out["classes"] / "stray.png")
    for cls in ("a", "b", "c"):
        (folder("classes_gap") / cls).mkdir(exist_ok=True)
    for i in range(4):
        _save(g[i], out["classes_gap"] / "a" / f"{i}.png")
        _save(g[i + 4], out["classes_gap"] / "c" / f"{i}.png")
    links = folder("symlinks")
    for i in range(4):
        os.symlink(out["gray28"] / f"{i:02d}.png", links / f"l{i}.png")
    os.symlink(root / "nowhere.png", links / "dangling.png")
    os.symlink(out["gray28"], root / "symdir")
    out["symdir"] = root / "symdir"
    os.symlink(root / "no-such-folder", root / "dangling_dir")
    out["dangling_dir"] = root / "dangling_dir"
    (root / "notes.txt").write_text("a user's notes\n")
    out["notes"] = root / "notes.txt"
    # ImageNet-style class folders (40x40 RGB): train, val, val with other classes, flat
    for split, classes, n in (("inet_train", "ab", 16), ("inet_val", "ab", 24), ("inet_val_other", "bc", 24)):
        for k, cls in enumerate(classes):
            (folder(split) / cls).mkdir(exist_ok=True)
            for i in range(n):
                _save(_rng(k * 100 + i).integers(0, 256, (40, 40, 3), dtype=np.uint8), out[split] / cls / f"{i}.png")
    for i in range(16):
        _save(_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8), folder("inet_flat") / f"{i}.png")
    return out


def arrays(root):
    """.npy files of odd dtypes, ranges and shapes; returns {name: path}."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    g = _gray(8)
    arrs = {
        "u8_nhwc": g[..., None], "u8_nhw": g, "u8_single_hw": g[0], "u8_single_hwc": g[0][..., None],
        "f01": g[..., None] / 255.0, "f255": g[..., None].astype(np.float32), "u16_full": g[..., None].astype(
            np.uint16) * 257, "i64": g[..., None].astype(np.int64), "bool": g[..., None] > 128,
        "f16": g[..., None].astype(np.float16), "rgb32": _rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
        "empty": np.zeros((0, 28, 28, 1), np.uint8), "neg": g[..., None].astype(np.float32) - 128.0,
        "c64": g[..., None].astype(np.complex64), "rank5": g[None, ..., None],
    }
    nan = g[..., None].astype(np.float32)
    nan[2, 3, 3, 0] = np.nan
    arrs["nan"] = nan
    out = {}
    for name, a in arrs.items():
        np.save(root / f"{name}.npy", a)
        out[name] = root / f"{name}.npy"
    np.save(root / "obj.npy", np.array([g[0], "text"], dtype=object), allow_pickle=True)
    out["obj"] = root / "obj.npy"
    (root / "fake.npy").write_text("not numpy")
    out["fake"] = root / "fake.npy"
    return out


def data_dirs(root):
    """Fashion-MNIST data folders: valid variants and broken ones; returns {name: path}."""
    root = Path(root)
    out = {}

    def folder(name):
        p = root / name
        p.mkdir(parents=True, exist_ok=True)
        out[name] = p
        return p

    for f in FILES[:2]:
        os.symlink(FMNIST / f, folder("only_train") / f)
    sub = folder("sub") / "fashion-mnist"
    sub.mkdir()
    for f in FILES:
        os.symlink(FMNIST / f, sub / f)
    for f in FILES:
        with gzip.open(FMNIST / f) as src, open(folder("plain") / f[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    for f in FILES[1:]:
        os.symlink(FMNIST / f, folder("corrupt_gz") / f)
    data = (FMNIST / FILES[0]).read_bytes()
    (out["corrupt_gz"] / FILES[0]).write_bytes(data[: len(data) // 3])
    for f in FILES[:3]:
        os.symlink(FMNIST / f, folder("swapped_labels") / f)
    os.symlink(FMNIST / FILES[1], out["swapped_labels"] / FILES[3])  # 60000 test labels for 10000 images
    for f in FILES:
        (folder("zero_files") / f).write_bytes(b"")
    for i in range(30):
        _save(_gray(1, seed=i)[0], folder("pngs") / f"{i:02d}.png")
    folder("empty")
    os.symlink(FMNIST, root / "link_to_system")
    out["link_to_system"] = root / "link_to_system"
    return out
