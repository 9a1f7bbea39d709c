"""The Fashion-MNIST OOD suite's extra sets: letters, photo patches, corruptions,
the second class holdout, validation OOD data and the group summary."""
import io

import numpy as np
import pytest

from amp_tf import data
from amp_tf.data import corruptions, groups, letters, natural_patches
from amp_tf.data.offline import FASHION_MNIST_CLASSES, fashion_mnist_arrays, gaussian_blur, BLUR_SIGMAS
from amp_tf.data.registry import DataNotFoundError


def _arrays(name, split="test"):
    s = data.load(name, split=split)
    x, y = data.to_numpy(s)
    return s, x, y


@pytest.fixture(scope="module")
def fmnist_test():
    return fashion_mnist_arrays("test")


# ---- far-OOD sets ------------------------------------------------------------

@pytest.mark.parametrize("name,count,classes", [("font_letters", 3120, 26), ("skimage_patches", 2160, 15)])
def test_far_set_shape_and_determinism(name, count, classes):
    s, x, y = _arrays(name)
    assert s.image_shape == (28, 28, 1) and x.shape == (count, 28, 28, 1)
    assert x.dtype == np.uint8 and y.dtype == np.int64
    assert s.num_classes == classes and sorted(set(y.tolist())) == list(range(classes))
    assert x.std() > 10  # not blank
    _, x2, y2 = _arrays(name)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(ValueError, match="'test'"):
        data.load(name, split="train")


def test_font_letters_uses_several_fonts_and_rebuilds_identically():
    fonts = letters.find_fonts()
    assert len(fonts) >= 4, fonts
    x, y = letters.font_letters_arrays()
    assert data.load("font_letters", split="test").class_names == tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    # white glyph on black like Fashion-MNIST: dark border, bright ink
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    assert border.mean() < 2 and x.max() == 255
    # a fresh build (not the cache) gives the same pixels
    fresh_x, fresh_y = letters._letters_cached.__wrapped__(tuple(fonts), letters.PER_LETTER, letters.SEED)
    np.testing.assert_array_equal(fresh_x, x)
    np.testing.assert_array_equal(fresh_y, y)
    # consecutive images of one letter use different fonts
    assert not np.array_equal(x[0], x[1])


def test_font_letters_without_fonts_names_the_apt_command(monkeypatch, tmp_path):
    monkeypatch.setattr(letters, "FONT_DIRS", (str(tmp_path),))
    assert letters.find_fonts() == []
    with pytest.raises(DataNotFoundError, match="apt-get install fonts-dejavu-core"):
        data.load("font_letters", split="test")


def test_font_fallback_to_any_font_file(tmp_path):
    src = letters.find_fonts()[0]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "Other.ttf").write_bytes(open(src, "rb").read())
    assert letters.find_fonts([str(tmp_path)]) == [str(tmp_path / "sub" / "Other.ttf")]


def test_skimage_patches_come_from_the_bundled_photos():
    folder = natural_patches.skimage_data_dir()
    assert all((folder / p).is_file() for p in natural_patches.PHOTOS)
    s = data.load("skimage_patches", split="test")
    assert s.class_names[0] == "astronaut" and len(s.class_names) == len(natural_patches.PHOTOS)


# ---- covariate shift ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["jpeg", "contrast", "pixelate"])
def test_corruption_levels_are_graded(kind, fmnist_test):
    clean, labels = fmnist_test
    dists = []
    for level in range(1, 6):
        s, x, y = _arrays(f"fmnist_{kind}_{level}")
        assert x.shape == (10000, 28, 28, 1) and x.dtype == np.uint8
        assert s.num_classes == 10 and s.class_names == FASHION_MNIST_CLASSES
        np.testing.assert_array_equal(y, labels)
        dists.append(np.abs(x.astype(np.float32) - clean).mean())
    assert dists[0] > 1 and all(a < b for a, b in zip(dists, dists[1:])), dists
    # cached and deterministic: the same pixels from a fresh computation
    fn, params, _ = corruptions._CORRUPTIONS[kind]
    np.testing.assert_array_equal(fn(clean[:200], params[2]), _arrays(f"fmnist_{kind}_3")[1][:200])


def test_jpeg_mosaic_equals_per_image_encoding(fmnist_test):
    from PIL import Image

    clean = fmnist_test[0][:40]
    for quality in (corruptions.JPEG_QUALITIES[0], corruptions.JPEG_QUALITIES[-1]):
        ref = []
        for img in clean[..., 0]:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=quality)
            ref.append(np.asarray(Image.open(buf).convert("L")))
        np.testing.assert_array_equal(corruptions.jpeg(clean, quality)[..., 0], np.stack(ref))


def test_contrast_and_pixelate_definitions():
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)
    c = corruptions.contrast(x, 0.1)
    np.testing.assert_allclose(c.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=1)
    assert c.std() < x.std() * 0.15
    p = corruptions.pixelate(x, 7)  # 28 / 7 = 4: exact 4x4 blocks
    assert (p[:, ::4, ::4] == p[:, 3::4, 3::4]).all()
    with pytest.raises(ValueError):
        corruptions.corrupted_test_images("fog", 1)


# ---- second holdout split ----------------------------------------------------

def test_holdout2_split(fmnist_test):
    s_id, x_id, y_id = _arrays("fmnist_holdout2_id")
    s_ood, x_ood, y_ood = _arrays("fmnist_holdout2_ood")
    assert (s_id.num_examples, s_ood.num_examples) == (6000, 4000)
    assert s_id.num_classes == 6 and sorted(set(y_id.tolist())) == list(range(6))
    assert s_id.class_names == ("Trouser", "Pullover", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert sorted(set(y_ood.tolist())) == [0, 3, 4, 5] and s_ood.num_classes is None
    # remapped labels point at the right original classes
    clean, labels = fmnist_test
    keep = np.isin(labels, (1, 2, 6, 7, 8, 9))
    np.testing.assert_array_equal(x_id, clean[keep])
    np.testing.assert_array_equal(np.asarray((1, 2, 6, 7, 8, 9))[y_id], labels[keep])
    # disjoint OOD classes from split 1, which is unchanged
    _, _, y1 = _arrays("fmnist_holdout_ood")
    assert not set(y1.tolist()) & set(y_ood.tolist())
    assert data.load("fmnist_holdout_id", split="test").num_examples == 6000
    assert data.load("fmnist_holdout2_id", split="train").num_examples == 36000


# ---- validation OOD ----------------------------------------------------------

@pytest.fixture(scope="module")
def val_images():
    x, _ = fashion_mnist_arrays("train")
    return np.array(x[:300])


def test_validation_sets_made_only_from_given_images(val_images):
    x = val_images
    sets = corruptions.validation_ood_sets(x, seed=0)
    assert list(sets) == list(corruptions.VALIDATION_TRANSFORMS)
    for name, v in sets.items():
        assert v.shape == x.shape and v.dtype == np.uint8, name
    # each image comes from the same input image
    np.testing.assert_array_equal(np.sort(sets["val_pixel_shuffle"].reshape(300, -1), 1),
                                  np.sort(x.reshape(300, -1), 1))
    np.testing.assert_array_equal(np.sort(sets["val_patch_shuffle"].reshape(300, -1), 1),
                                  np.sort(x.reshape(300, -1), 1))
    np.testing.assert_array_equal(sets["val_invert"], 255 - x)
    for v, img in zip(sets["val_rotate90"], x):
        assert any(np.array_equal(v, np.rot90(img, k, axes=(0, 1))) for k in (1, 2, 3))
    noise = sets["val_noise"].astype(np.float32) - x
    assert 35 < noise[(x > 60) & (x < 195)].std() < 60
    # deterministic, seed-dependent, and no input image is returned unchanged
    again = corruptions.validation_ood_sets(x, seed=0)
    other = corruptions.validation_ood_sets(x, seed=1)
    for name in sets:
        np.testing.assert_array_equal(sets[name], again[name])
        if name != "val_invert":
            assert not np.array_equal(sets[name], other[name]), name
        same = (sets[name].reshape(300, -1) == x.reshape(300, -1)).all(axis=1)
        assert same.mean() < 0.05, name


def test_validation_sets_share_no_images_or_transformations_with_test_sets(val_images, fmnist_test):
    x = val_images
    names = set(corruptions.VALIDATION_TRANSFORMS)
    test_sets = set(groups.all_sets())
    assert not names & test_sets
    assert not any(k in n for n in names for k in corruptions.TEST_CORRUPTIONS + ("holdout", "digit", "letter"))
    sets = corruptions.validation_ood_sets(x, seed=0)
    # no validation image is one of the test corruptions (any level) of its source image
    test_versions = [gaussian_blur(x, s) for s in BLUR_SIGMAS]
    for kind, (fn, params, _) in corruptions._CORRUPTIONS.items():
        test_versions += [fn(x, p) for p in params]
    for name, v in sets.items():
        for t in test_versions:
            assert np.abs(v.astype(np.float32) - t).mean() > 5, name
    # and no validation image equals a Fashion-MNIST test image
    clean = fmnist_test[0].reshape(10000, -1)
    test_rows = {row.tobytes() for row in clean}
    for name, v in sets.items():
        assert not any(row.tobytes() in test_rows for row in v.reshape(300, -1)), name


def test_validation_sets_general_shapes():
    x = np.random.default_rng(0).integers(0, 256, (4, 30, 20, 3)).astype(np.uint8)
    sets = corruptions.validation_ood_sets(x)
    assert all(v.shape == x.shape for v in sets.values())
    np.testing.assert_array_equal(sets["val_rotate90"], x[:, ::-1, ::-1])  # non-square: 180 degrees
    with pytest.raises(ValueError, match="uint8"):
        corruptions.validation_ood_sets(x.astype(np.float32))


# ---- groups ------------------------------------------------------------------

def test_groups_name_registered_sets():
    registered = set(data.names())
    for group, members in groups.GROUPS.items():
        assert members and set(members) <= registered, group
    assert len(groups.all_sets()) == len(set(groups.all_sets()))
    assert set(groups.NEAR_ID) == set(groups.GROUPS["near"])
    assert groups.group_of("skimage_patches") == "far"
    assert groups.group_of("fmnist_pixelate_5") == "covariate"
    with pytest.raises(ValueError, match="no OOD group"):
        groups.group_of("cifar10")


def test_group_summary_is_mean_of_group_means():
    per_set = {
        "fmnist_holdout_ood": {"fpr95": 0.8, "auroc": 0.6},
        "digits": {"fpr95": 0.2, "auroc": 0.9},
        "font_letters": {"fpr95": 0.4, "auroc": 0.7},
        "fmnist_blur_1": {"fpr95": 0.9, "auroc": 0.5},
        "fmnist_jpeg_1": {"fpr95": 0.7, "auroc": 0.55},
        "fmnist_contrast_5": {"fpr95": 0.5, "auroc": 0.8},
    }
    s = groups.group_summary(per_set)
    assert list(s) == ["near", "far", "covariate", "overall"]
    assert s["near"] == pytest.approx({"fpr95": 0.8, "auroc": 0.6})
    assert s["far"] == pytest.approx({"fpr95": 0.3, "auroc": 0.8})
    assert s["covariate"] == pytest.approx({"fpr95": 0.7, "auroc": 0.6166666667})
    # overall = (0.8 + 0.3 + 0.7) / 3 = 0.6, not the mean of the 6 sets (3.5 / 6 = 0.5833)
    assert s["overall"]["fpr95"] == pytest.approx(0.6)
    assert s["overall"]["auroc"] == pytest.approx((0.6 + 0.8 + 0.6166666667) / 3)
    assert s["overall"]["fpr95"] != pytest.approx(np.mean([m["fpr95"] for m in per_set.values()]))


def test_group_summary_skips_absent_groups_and_unknown_sets():
    s = groups.group_summary({"digits": {"auroc": 0.9}, "fmnist_pixelate_2": {"auroc": 0.5, "aupr": 0.4}})
    assert list(s) == ["far", "covariate", "overall"]
    assert s["overall"] == pytest.approx({"auroc": 0.7, "aupr": 0.4})
    assert groups.group_summary({}) == {}
    with pytest.raises(ValueError):
        groups.group_summary({"val_noise": {"auroc": 0.5}})
    assert groups.group_summary({"val_noise": {"auroc": 0.5}}, ignore_unknown=True) == {}
