"""Tests of amp_tf.data on real data: Debian's Fashion-MNIST IDX files, scikit-learn's
digits, Pillow-written image folders; the tfds path with tfds.testing.mock_data."""
import doctest
import gzip
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from amp_tf import data
from amp_tf.data import folders, idx, offline, preprocessing, registry, tfds_sets

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(
    not (DEBIAN / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed (sudo apt-get install dataset-fashion-mnist)",
)


def _labels_of(image_set):
    labels = image_set.dataset.map(lambda x, y: y).batch(4096)
    return np.concatenate(list(labels.as_numpy_iterator()))


# ---------------------------------------------------------------- IDX / Fashion-MNIST


@needs_debian
@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_idx_real_files(split, n):
    s = data.load("fashion_mnist", split=split)
    assert (s.image_shape, s.num_examples, s.num_classes, s.split) == ((28, 28, 1), n, 10, split)
    x, y = data.to_numpy(s)
    assert x.shape == (n, 28, 28, 1) and x.dtype == np.uint8
    assert y.dtype == np.int64 and y.min() == 0 and y.max() == 9
    assert np.bincount(y).tolist() == [n // 10] * 10
    assert 0 < x.mean() < 255 and x.max() == 255
    spec = s.dataset.element_spec
    assert spec[0].shape == (28, 28, 1) and spec[0].dtype == tf.uint8 and spec[1].dtype == tf.int64
    first = next(iter(s.dataset))
    np.testing.assert_array_equal(first[0].numpy(), x[0])
    # known statistic of the Fashion-MNIST training set: mean 0.2860, std 0.3530
    if split == "train":
        mean, std = data.channel_stats(x)
        assert mean.shape == (1,) and mean.dtype == np.float32
        np.testing.assert_allclose(mean / 255, [0.2860], atol=5e-4)
        np.testing.assert_allclose(std / 255, [0.3530], atol=5e-4)


@needs_debian
def test_idx_reader_gzip_and_raw_agree(tmp_path):
    raw = gzip.decompress((DEBIAN / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "labels-raw").write_bytes(raw)
    a = data.read_idx(DEBIAN / "t10k-labels-idx1-ubyte.gz")
    b = data.read_idx(tmp_path / "labels-raw")
    assert a.shape == (10000,) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


@needs_debian
def test_idx_corrupt_files_give_clear_errors(tmp_path):
    gz = (DEBIAN / "t10k-labels-idx1-ubyte.gz").read_bytes()
    raw = gzip.decompress(gz)
    cases = {
        "cut.gz": (gz[: len(gz) // 2], "gzip stream is truncated or corrupt"),
        "cut-raw": (raw[:-100], "truncated"),
        "long-raw": (raw + b"\0\0", "trailing bytes"),
        "magic-raw": (b"\x12\x34" + raw[2:], "magic number"),
        "tiny-raw": (b"\0\0", "too short"),
    }
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(data.IdxFormatError, match=expected) as err:
            data.read_idx(tmp_path / name)
        assert name in str(err.value) and "dataset-fashion-mnist" in str(err.value)


@needs_debian
def test_fashion_mnist_from_data_dir_and_corrupt_data_dir(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (good / f.removesuffix(".gz")).write_bytes(gzip.decompress((DEBIAN / f).read_bytes()))
    x, y = data.to_numpy(data.load("fashion_mnist", split="test", data_dir=good))
    x0, y0 = data.to_numpy(data.load("fashion_mnist", split="test"))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)

    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(DEBIAN / "t10k-images-idx3-ubyte.gz", bad)
    labels = gzip.decompress((DEBIAN / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (bad / "t10k-labels-idx1-ubyte").write_bytes(labels[:5000])
    with pytest.raises(data.IdxFormatError, match="truncated"):
        data.load("fashion_mnist", split="test", data_dir=bad)


def test_fashion_mnist_missing_fails_fast_with_how_to(tmp_path, monkeypatch):
    monkeypatch.setattr(offline, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "not-installed"))
    start = time.monotonic()
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("fashion_mnist", split="train", data_dir=tmp_path)
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "sudo apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    assert "download=True" in msg and str(tmp_path) in msg


# ---------------------------------------------------------------- offline OOD suite


def test_digits_real_images():
    s = data.load("digits", split="test")
    assert (s.num_examples, s.image_shape, s.num_classes) == (1797, (28, 28, 1), 10)
    x, y = data.to_numpy(s)
    assert x.shape == (1797, 28, 28, 1) and x.dtype == np.uint8
    assert x.max() >= 250 and x.min() == 0
    assert sorted(set(y.tolist())) == list(range(10))
    # shrinking back to 8x8 recovers scikit-learn's digits (0..16 scaled to 0..255)
    from sklearn.datasets import load_digits

    small = data.resize_images(x, (8, 8), "pil_nearest")[..., 0].astype(np.float32)
    original = load_digits().images * 255.0 / 16.0
    assert np.abs(small - original).mean() < 10
    assert np.corrcoef(small.ravel(), original.ravel())[0, 1] > 0.99
    np.testing.assert_array_equal(y, load_digits().target)
    with pytest.raises(ValueError, match="split='test'"):
        data.load("digits", split="train")


def _laplacian_energy(x):
    x = x[..., 0].astype(np.float32)
    lap = 4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    return float(np.abs(lap).mean())


@needs_debian
def test_blur_levels_reduce_high_frequencies_monotonically():
    assert data.BLUR_SIGMAS == (1.0, 2.0, 3.0, 4.0, 6.0)
    clean_x, clean_y = data.to_numpy(data.load("fashion_mnist", split="test"))
    energies = [_laplacian_energy(clean_x)]
    for level in range(1, 6):
        s = data.load(f"fmnist_blur_{level}", split="test")
        assert (s.image_shape, s.num_examples, s.num_classes) == ((28, 28, 1), 10000, 10)
        x, y = data.to_numpy(s)
        assert x.dtype == np.uint8
        np.testing.assert_array_equal(y, clean_y)
        energies.append(_laplacian_energy(x))
    assert all(a > b for a, b in zip(energies, energies[1:])), energies
    assert energies[-1] < 0.1 * energies[0]
    with pytest.raises(ValueError, match="test"):
        data.load("fmnist_blur_1", split="train")


@needs_debian
def test_holdout_sets_have_the_right_classes():
    for split, n in (("train", 36000), ("test", 6000)):
        s = data.load("fmnist_holdout_id", split=split)
        y = data.to_numpy(s)[1]
        assert (s.num_classes, s.num_examples, len(y)) == (6, n, n)
        assert sorted(set(y.tolist())) == [0, 1, 2, 3, 4, 5]
    ood = data.load("fmnist_holdout_ood", split="test")
    y = data.to_numpy(ood)[1]
    assert ood.num_examples == 4000 and sorted(set(y.tolist())) == [6, 7, 8, 9]
    assert ood.num_classes is None
    with pytest.raises(ValueError, match="test"):
        data.load("fmnist_holdout_ood", split="train")
    covariate = [f"fmnist_{k}_{lv}" for k in ("blur", "jpeg", "contrast", "pixelate") for lv in range(1, 6)]
    assert data.fmnist_suite() == {
        "id": "fashion_mnist",
        "ood": ["digits", "font_letters", "skimage_patches"] + covariate,
        "near": {"fmnist_holdout_ood": "fmnist_holdout_id", "fmnist_holdout2_ood": "fmnist_holdout2_id"},
    }
    assert data.fmnist_suite(holdout=True) == {"id": "fmnist_holdout_id", "ood": ["fmnist_holdout_ood"],
                                               "near": {}}


# ---------------------------------------------------------------- folders


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_flat_skips_bad_files_with_warning(tmp_path, rng):
    arrays = [rng.integers(0, 256, (10, 12, 3), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(arrays):
        _png(tmp_path / f"img{i}.png", a)
    smooth = np.broadcast_to(np.arange(0, 240, 20, dtype=np.uint8)[None, :, None], (10, 12, 3))
    Image.fromarray(np.ascontiguousarray(smooth)).save(tmp_path / "photo.jpg", quality=95)
    (tmp_path / "corrupt.png").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 2 file") as record:
        s = data.load(f"folder:{tmp_path}")
    message = str(record[0].message)
    assert "corrupt.png" in message and "notes.txt" in message
    assert set(s.skipped) == {"corrupt.png", "notes.txt"}
    assert (s.image_shape, s.num_examples, s.num_classes) == ((10, 12, 3), 4, None)
    x, y = data.to_numpy(s)
    assert y.tolist() == [-1] * 4
    for i, a in enumerate(arrays):  # sorted names: img0, img1, img2, photo.jpg; PNG is lossless
        np.testing.assert_array_equal(x[i], a)
    assert np.abs(x[3].astype(int) - smooth).mean() < 5  # JPEG, lossy


def test_folder_strict_raises_and_empty_raises(tmp_path, rng):
    _png(tmp_path / "ok.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "corrupt.png").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(data.UnreadableImageError, match="corrupt.png") as err:
        data.load(f"folder:{tmp_path}", strict=True)
    assert "strict=False" in str(err.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DataNotFoundError, match="no readable images"):
        data.load(f"folder:{empty}")
    (empty / "readme.txt").write_text("x")
    with pytest.raises(data.DataNotFoundError, match="readme.txt"):
        data.load(f"folder:{empty}")
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.load(f"folder:{tmp_path / 'missing'}")


def test_folder_class_subfolders(tmp_path, rng):
    for cls, n in (("zebra", 2), ("ant", 3)):
        for i in range(n):
            _png(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (6, 6), dtype=np.uint8))
    s = data.load(f"folder:{tmp_path}", split="test")
    assert s.class_names == ("ant", "zebra") and s.num_classes == 2
    assert s.image_shape == (6, 6, 1)  # all grayscale -> one channel
    assert data.to_numpy(s)[1].tolist() == [0, 0, 0, 1, 1]
    # one RGB image turns the whole set RGB
    _png(tmp_path / "ant" / "rgb.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    s = data.load(f"folder:{tmp_path}")
    x = data.to_numpy(s)[0]
    assert s.image_shape == (6, 6, 3) and x.shape == (6, 6, 6, 3)
    np.testing.assert_array_equal(x[0, ..., 0], x[0, ..., 2])  # gray image repeated


def test_folder_of_16_bit_pngs_is_scaled_not_saturated(tmp_path, rng):
    gray = rng.integers(0, 65536, (9, 7), dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "a_gray16.png")  # Pillow writes 16-bit grayscale
    assert Image.open(tmp_path / "a_gray16.png").mode.startswith("I")
    rgb = rng.integers(0, 65536, (9, 7, 3), dtype=np.uint16)
    (tmp_path / "b_rgb16.png").write_bytes(tf.io.encode_png(tf.constant(rgb)).numpy())
    s = data.load(f"folder:{tmp_path}")
    x = data.to_numpy(s)[0]
    assert s.image_shape == (9, 7, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[0, ..., 0], np.round(gray / 257.0).astype(np.uint8))  # gray -> RGB
    assert np.abs(x[1].astype(int) - rgb / 257.0).max() <= 1.0
    assert (x == 255).mean() < 0.02  # was 99.7 % saturated
    only_gray = tmp_path / "gray"
    only_gray.mkdir()
    Image.fromarray(gray).save(only_gray / "g.png")
    np.testing.assert_array_equal(data.to_numpy(data.load(f"folder:{only_gray}"))[0][0, ..., 0],
                                  folders.to_8bit(gray))


def test_folder_mixed_sizes_streams(tmp_path, rng):
    _png(tmp_path / "a.png", rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
    _png(tmp_path / "b.png", rng.integers(0, 256, (12, 6, 3), dtype=np.uint8))
    s = data.load(f"folder:{tmp_path}")
    assert s.image_shape == (None, None, 3) and s.arrays is None
    with pytest.raises(ValueError, match="differ in size"):
        data.to_numpy(s)
    out = data.preprocess(s.dataset, [0, 0, 0], [1, 1, 1], image_size=(7, 7), resize_method="pil_bilinear", batch_size=2)
    x, y = next(iter(out))
    assert x.shape == (2, 7, 7, 3) and y.numpy().tolist() == [-1, -1]
    with pytest.raises(ValueError, match="differ in size"):
        data.preprocess(s.dataset, [0, 0, 0], [1, 1, 1], batch_size=2)
    unchecked = data.preprocess(s.dataset, [0, 0, 0], [1, 1, 1], image_size=(8, 10))
    with pytest.raises(tf.errors.InvalidArgumentError, match="size mismatch"):
        list(unchecked)


# ---------------------------------------------------------------- resize / preprocess


@pytest.mark.parametrize("method", data.RESIZE_METHODS)
def test_resize_methods_give_requested_size(method, rng):
    x = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = data.resize_images(x, (28, 20), method)
    assert out.shape == (3, 28, 20, 3) and out.dtype == np.uint8
    assert data.resize_images(x[0, ..., :1], 28, method).shape == (28, 28, 1)
    # dataset path gives the same pixels as the numpy path
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(3, np.int64)))
    got = next(iter(data.preprocess(ds, [0, 0, 0], [1, 1, 1], (28, 20), method, batch_size=3)))[0]
    np.testing.assert_array_equal(got.numpy(), out.astype(np.float32))
    # a constant image stays constant
    flat = np.full((1, 32, 32, 1), 77, np.uint8)
    assert set(np.unique(data.resize_images(flat, 17, method)).tolist()) == {77}


def test_resize_methods_differ():
    x = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)[None, ..., None]  # checkerboard
    outs = {m: data.resize_images(x, (21, 21), m) for m in data.RESIZE_METHODS}
    assert len({o.tobytes() for o in outs.values()}) == len(outs)


def test_preprocess_checks_size_and_channels(rng):
    x = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    mean, std = data.channel_stats(x)
    np.testing.assert_allclose(mean, x.reshape(-1, 3).mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, x.reshape(-1, 3).std(0), rtol=1e-5)
    out = data.preprocess(x, mean, std)
    np.testing.assert_allclose(out, (x - mean) / std, rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32

    with pytest.raises(ValueError, match="resize_method"):
        data.preprocess(x, mean, std, image_size=(28, 28))
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(4, np.int64)))
    with pytest.raises(ValueError, match="resize_method"):
        data.preprocess(ds, mean, std, image_size=(28, 28))

    gray = x[..., :1]
    with pytest.raises(ValueError, match="channels=3"):
        data.preprocess(gray, mean, std)
    with pytest.raises(ValueError, match="channels=1"):
        data.preprocess(x, [100.0], [50.0])
    rgb = data.preprocess(gray, mean, std, channels=3)
    assert rgb.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(rgb, (np.repeat(gray, 3, -1) - mean) / std, rtol=1e-5, atol=1e-5)
    ds_gray = tf.data.Dataset.from_tensor_slices(gray)
    got = np.stack([e.numpy() for e in data.preprocess(ds_gray, mean, std, channels=3)])
    np.testing.assert_allclose(got, rgb, rtol=1e-5, atol=1e-5)
    to_gray = data.preprocess(x, [0.0], [1.0], channels=1)
    expected = np.round(x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    np.testing.assert_allclose(to_gray[..., 0], expected, atol=1.0)
    with pytest.raises(ValueError, match="uint8"):
        data.preprocess(x.astype(np.float32), mean, std)


@needs_debian
def test_preprocess_real_fashion_mnist_to_cifar_shape():
    s = data.load("fashion_mnist", split="test")
    x = data.to_numpy(s, limit=64)[0]
    mean, std = data.channel_stats(x)
    out = data.preprocess(s.dataset.take(64), np.repeat(mean, 3), np.repeat(std, 3), image_size=32,
                          resize_method="tf", channels=3, batch_size=32)
    batches = [b for b, _ in out]
    assert [tuple(b.shape) for b in batches] == [(32, 32, 32, 3)] * 2
    assert batches[0].dtype == tf.float32


# ---------------------------------------------------------------- tfds path


def test_tfds_path_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        for name, shape, classes in (("cifar10", (32, 32, 3), 10), ("svhn_cropped", (32, 32, 3), 10)):
            s = data.load(name, split="test", data_dir=tmp_path, download=True, shuffle=True, seed=1)
            assert (s.image_shape, s.num_classes, s.num_examples) == (shape, classes, 5)
            image_spec, label_spec = s.dataset.element_spec
            assert image_spec == tf.TensorSpec(shape, tf.uint8) and label_spec == tf.TensorSpec((), tf.int64)
            x, y = data.to_numpy(s)
            assert x.shape == (5, *shape) and ((0 <= y) & (y < classes)).all()
        lsun = data.load("lsun/classroom", split="test", data_dir=tmp_path, download=True)
        assert lsun.image_shape == (None, None, 3) and lsun.num_classes is None
        assert set(_labels_of(lsun).tolist()) == {-1}
        blur = data.load("imagenet2012_corrupted/gaussian_blur_2", split="test", data_dir=tmp_path, download=True)
        assert blur.image_shape == (224, 224, 3) and blur.num_classes == 1000
    assert tfds_sets.tfds_split("lsun/classroom", "test") == "validation"


def test_fashion_mnist_falls_back_to_tfds(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(offline, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "not-installed"))
    with tfds.testing.mock_data(num_examples=7):
        with pytest.raises(data.DataNotFoundError, match="apt-get install"):
            data.load("fashion_mnist", split="test", data_dir=tmp_path)
        s = data.load("fashion_mnist", split="test", data_dir=tmp_path, download=True)
        x, y = data.to_numpy(s)
    assert (s.image_shape, s.num_examples, x.shape, y.dtype) == ((28, 28, 1), 7, (7, 28, 28, 1), np.int64)


@pytest.mark.parametrize("name", ["cifar10", "svhn_cropped", "lsun/classroom", "imagenet2012_corrupted/gaussian_blur_5"])
def test_tfds_not_prepared_fails_fast_with_how_to(tmp_path, name):
    start = time.monotonic()
    with pytest.raises(data.DataNotFoundError) as err:
        data.load(name, split="test", data_dir=tmp_path)
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "download=True" in msg and "--download" in msg and "--data-dir" in msg and str(tmp_path) in msg
    if name.startswith("imagenet"):
        assert "ILSVRC2012_img_val.tar" in msg
    assert not any(tmp_path.iterdir())  # nothing was written


def test_tfds_unknown_variant():
    with pytest.raises(ValueError, match="classroom"):
        data.load("lsun/no_such_room")


# ---------------------------------------------------------------- registry


def test_names_and_unknown_name():
    names = data.names()
    for n in ("fashion_mnist", "digits", "fmnist_blur_5", "fmnist_holdout_id", "cifar10", "cifar100",
              "svhn_cropped", "dtd", "places365_small", "imagenet2012", "mnist"):
        assert n in names
    assert all("<" not in n for n in names)
    assert {"folder:<path>", "lsun/<category>"} <= set(data.names(include_patterns=True))
    with pytest.raises(ValueError) as err:
        data.load("cifar11")
    assert "cifar10" in str(err.value) and "fashion_mnist" in str(err.value) and "folder:<path>" in str(err.value)
    with pytest.raises(ValueError, match="split"):
        data.load("fashion_mnist", split="validation")


@needs_debian
def test_seeded_shuffle_is_deterministic():
    def first_labels(seed):
        s = data.load("fmnist_holdout_ood", split="test", shuffle=True, seed=seed)
        assert s.arrays is None  # shuffled: no fast path in the wrong order
        return _labels_of(s)

    a, b, c = first_labels(3), first_labels(3), first_labels(4)
    plain = data.to_numpy(data.load("fmnist_holdout_ood", split="test"))[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, plain)
    np.testing.assert_array_equal(np.sort(a), np.sort(plain))
    x, y = data.to_numpy(data.load("fmnist_holdout_ood", split="test", shuffle=True, seed=3), limit=10)
    np.testing.assert_array_equal(y, a[:10])
    assert x.shape == (10, 28, 28, 1)


@needs_debian
@pytest.mark.parametrize("module", [registry, idx, offline, folders, preprocessing, tfds_sets, data])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_pipelines_run_with_fixed_tuning():
    """Autotuning off everywhere (its iterator teardown stalls fit/evaluate for seconds)."""
    from amp_tf.data import tfdata
    from amp_tf.run.training import epoch_dataset

    x = np.zeros((10, 6, 6, 1), "uint8")
    ds, steps = epoch_dataset(x, np.arange(10) % 3, 4)
    assert steps == 2 and ds.options().autotune.enabled is False
    assert data.load("digits", split="test").dataset.options().autotune.enabled is False
    assert tfdata.map_calls() >= tfdata.map_calls(per_batch=True) >= 1
