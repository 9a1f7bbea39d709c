"""ConsistencyAugment(mode="official"): one parameter draw per batch, the official ranges;
and mode="per_sample" unchanged."""

import importlib.util
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf import augment
from amp_tf.augment import (
    OFFICIAL_COMPOSITION, ConsistencyAugment, gaussian_blur, resize_window,
)

ROOT = Path(__file__).resolve().parents[1]
BEFORE_OFFICIAL_MODE = "14d26c5"  # last commit before mode= existed

# per_sample outputs for seed (3, 4) on rng(0) inputs, computed with the code before
# the official mode was added: (channels, preset, sum, sum of squares, index-weighted sum)
PER_SAMPLE_REFERENCE = [
    (1, "all", 46.882763946428895, 164.68057581055155, 45.295455784540536),
    (1, "jitter_blur", -145.4196101196576, 210.32958290703596, -49.255386359161804),
    (1, "flip_grayscale", 24.876050183636835, 286.3209234636875, 3.2170703423105946),
    (1, "resized_crop", 17.592462699860334, 137.01469548542403, 3.191900961381314),
    (1, "flip", 24.876050183636835, 286.3209234636875, 3.2170703423105946),
    (1, "color_jitter", -143.52959995018318, 354.6835320858786, -48.352299510551994),
    (1, "blur", 24.851132198702544, 175.5558068654658, 3.0183964135231447),
    (1, "grayscale", 24.876050183636835, 286.3209234636875, 3.212706608602849),
    (3, "all", 54.56073353222382, 442.3853248082553, 112.60417450275415),
    (3, "jitter_blur", -531.5390640758887, 637.8168527510044, -168.49936710175),
    (3, "flip_grayscale", -37.55565970513271, 700.0481457416523, -17.05970380268358),
    (3, "resized_crop", -17.027493665518705, 408.34190049692734, -1.8809863617283504),
    (3, "flip", -44.241650232946995, 864.0809592803893, -19.473985208962823),
    (3, "color_jitter", -529.3376501663588, 939.9878396798779, -169.0763381507794),
    (3, "blur", -43.43172200893241, 540.129199549828, -18.758527836067262),
    (3, "grayscale", -45.54489856017244, 777.7762147039417, -20.04409800836365),
]
PRESET_ORDER = ["all", "jitter_blur", "flip_grayscale", "resized_crop",
                "flip", "color_jitter", "blur", "grayscale"]


def _reference_inputs():
    rng = np.random.default_rng(0)
    out = {}
    for c in (1, 3):
        out[c] = rng.uniform(-1, 1, (6, 12, 12, c)).astype("float32")
    return out


def _stats(y):
    y = y.astype("float64")
    return y.sum(), (y**2).sum(), (y * np.arange(y.size).reshape(y.shape) / y.size).sum()


def test_per_sample_outputs_unchanged_checksums():
    xs = _reference_inputs()
    for c, preset, *ref in PER_SAMPLE_REFERENCE:
        t = ConsistencyAugment(preset, value_range=(-1.0, 1.0))
        assert t.mode == "per_sample"
        y = t(xs[c], seed=[3, 4]).numpy()
        np.testing.assert_allclose(_stats(y), ref, rtol=1e-5, atol=1e-3, err_msg=f"{c} {preset}")


def _old_module(tmp_path):
    try:
        src = subprocess.run(
            ["git", "show", f"{BEFORE_OFFICIAL_MODE}:amp_tf/augment.py"], cwd=ROOT,
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git or the pre-change commit is not available")
    path = tmp_path / "augment_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("augment_before", path)
    mod = importlib.util.module_from_spec(spec)
    # the old module registers a serializable named like ours: keep keras' registry intact
    registered = dict(keras.saving.get_custom_objects())
    try:
        spec.loader.exec_module(mod)
    finally:
        keras.saving.get_custom_objects().clear()
        keras.saving.get_custom_objects().update(registered)
    return mod


def test_per_sample_outputs_equal_previous_version(tmp_path):
    old = _old_module(tmp_path)
    rng = np.random.default_rng(1)
    for c in (1, 3):
        x = rng.uniform(0, 255, (5, 16, 14, c)).astype("float32")
        for preset in PRESET_ORDER:
            for seed in ([0, 0], [7, 123]):
                a = ConsistencyAugment(preset, value_range=(0.0, 255.0))(x, seed=seed).numpy()
                b = old.ConsistencyAugment(preset, value_range=(0.0, 255.0))(x, seed=seed).numpy()
                np.testing.assert_array_equal(a, b, err_msg=f"{c} {preset} {seed}")


@pytest.mark.parametrize("c", [1, 3])
def test_official_same_transform_for_every_image(c):
    rng = np.random.default_rng(2)
    x = np.repeat(rng.uniform(-1, 1, (1, 16, 16, c)).astype("float32"), 8, axis=0)
    t = ConsistencyAugment("all", value_range=(-1.0, 1.0), mode="official")
    changed = 0
    for s in range(6):
        y = t(x, seed=[s, 11]).numpy()
        np.testing.assert_allclose(y, np.repeat(y[:1], 8, axis=0), atol=0, rtol=0)
        changed += np.abs(y - x).max() > 1e-3
    assert changed >= 5
    # per_sample, by contrast, gives different images from identical inputs
    y = ConsistencyAugment("all", value_range=(-1.0, 1.0))(x, seed=[0, 11]).numpy()
    assert np.abs(y - y[:1]).max() > 1e-3


def test_official_brightness_only_one_factor_per_batch():
    rng = np.random.default_rng(3)
    lo, hi = np.array([-2.0, -1.0, 0.0], "float32"), np.array([2.0, 3.0, 1.0], "float32")
    x = rng.uniform(lo, hi, (6, 10, 10, 3)).astype("float32")
    t = ConsistencyAugment("color_jitter", value_range=(lo, hi), mode="official")
    factors, off = [], 0
    for s in range(40):
        y = t(x, seed=[s, 5]).numpy()
        assert (y >= lo - 1e-6).all() and (y <= hi + 1e-6).all()
        if np.array_equal(y, x):
            off += 1
            continue
        # y = lo + (x - lo) * f, clipped: estimate f from unclipped pixels, all images alike
        inside = (y > lo + 1e-4) & (y < hi - 1e-4) & (np.abs(x - lo) > 1e-2)
        f = ((y - lo) / (x - lo))[inside]
        assert f.size and np.ptp(f) < 1e-4, "one brightness factor for the whole batch"
        f = float(np.median(f))
        assert 0.5 - 1e-5 <= f <= 1.5 + 1e-5
        np.testing.assert_allclose(y, np.clip(lo + (x - lo) * f, lo, hi), atol=1e-5)
        factors.append(f)
    assert 2 <= off <= 18  # p(off) = 0.2 of 40
    assert max(factors) - min(factors) > 0.3


def test_official_jitter_and_blur_share_one_switch():
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 255, (4, 12, 12, 1)).astype("float32")
    t = ConsistencyAugment("color_jitter+blur", value_range=(0.0, 255.0), mode="official")
    lo, hi = tf.constant(0.0), tf.constant(255.0)
    on = 0
    for s in range(30):
        seed = tf.constant([s, 9], tf.int64)
        y = t(x, seed=seed).numpy()
        sub = tf.random.experimental.stateless_split(seed, 3)
        both = augment.official_blur(augment.official_color_jitter(x, sub[0], lo, hi), sub[1], lo, hi)
        if np.array_equal(y, x):
            continue
        np.testing.assert_allclose(y, both.numpy(), atol=1e-4)  # never just one of the two
        on += 1
    assert 16 <= on <= 29


def test_official_range_clipping_and_determinism():
    rng = np.random.default_rng(5)
    lo, hi = (-0.5, -1.9, 0.2), (2.5, 1.1, 3.0)
    x = rng.uniform(lo, hi, (5, 20, 18, 3)).astype("float32")
    t = ConsistencyAugment("all", value_range=(lo, hi), mode="official")
    outs = []
    for s in range(8):
        a = t(x, seed=[s, 1]).numpy()
        np.testing.assert_array_equal(a, t(x, seed=[s, 1]).numpy())
        assert a.shape == x.shape
        assert (a >= np.array(lo) - 1e-5).all() and (a <= np.array(hi) + 1e-5).all()
        outs.append(a)
    assert len({o.tobytes() for o in outs}) == len(outs)


def test_official_crop_box_matches_torchvision_rules():
    for s in range(40):
        i, j, ch, cw = (int(v) for v in augment._official_crop_box(
            tf.constant([s, 2], tf.int64), 32, 28, (0.6, 1.0), (3 / 4, 4 / 3), 10))
        assert 0 < ch <= 32 and 0 < cw <= 28 and 0 <= i <= 32 - ch and 0 <= j <= 28 - cw
        area = ch * cw / (32 * 28)
        assert 0.55 <= area <= 1.05, area
        assert 3 / 4 - 0.1 <= cw / ch <= 4 / 3 + 0.1
    # no valid try: torchvision's central fallback (whole image when its ratio is allowed)
    i, j, ch, cw = (int(v) for v in augment._official_crop_box(
        tf.constant([0, 0], tf.int64), 16, 16, (1.5, 2.0), (3 / 4, 4 / 3), 10))
    assert (i, j, ch, cw) == (0, 0, 16, 16)
    i, j, ch, cw = (int(v) for v in augment._official_crop_box(
        tf.constant([0, 0], tf.int64), 10, 30, (1.5, 2.0), (3 / 4, 4 / 3), 10))
    assert (ch, cw) == (10, 13) and (i, j) == (0, 8)


def test_resize_window_identity_and_torch_interpolate():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 12, 10, 2)).astype("float32")
    np.testing.assert_allclose(resize_window(tf.constant(x), 0, 0, 12, 10).numpy(), x, atol=1e-6)
    torch = pytest.importorskip("torch")
    for i, j, ch, cw in [(2, 1, 7, 9), (0, 3, 12, 5), (5, 0, 4, 10)]:
        got = resize_window(tf.constant(x), i, j, ch, cw).numpy()
        win = torch.tensor(x[:, i:i + ch, j:j + cw]).permute(0, 3, 1, 2)
        for aa in (False, True):
            ref = torch.nn.functional.interpolate(win, size=(12, 10), mode="bilinear",
                                                  align_corners=False, antialias=aa)
            np.testing.assert_allclose(got, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def _np_gaussian_blur(x, k, sigma):
    """torchvision.transforms.functional.gaussian_blur on NHWC, in numpy."""
    half = (k - 1) * 0.5
    t = np.linspace(-half, half, k)
    ker = np.exp(-0.5 * (t / sigma) ** 2)
    ker /= ker.sum()
    r = k // 2
    p = np.pad(x, [(0, 0), (r, r), (r, r), (0, 0)], mode="reflect")
    h, w = x.shape[1:3]
    y = sum(ker[a] * p[:, a:a + h] for a in range(k))
    return sum(ker[b] * y[:, :, b:b + w] for b in range(k))


@pytest.mark.parametrize("k", [3, 5, 7, 9])
def test_gaussian_blur_masked_kernel_equals_torchvision(k):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 11, 13, 3)).astype("float32")
    for sigma in (0.3, 1.7, 5.0):
        got = gaussian_blur(tf.constant(x), tf.constant(k), sigma, max_kernel_size=9).numpy()
        np.testing.assert_allclose(got, _np_gaussian_blur(x, k, sigma), atol=1e-5)


def test_official_config_round_trip_and_errors():
    t = ConsistencyAugment("flip+blur", value_range=(-1.0, 2.0), mode="official")
    cfg = t.get_config()
    assert cfg["mode"] == "official"
    back = ConsistencyAugment.from_config(cfg)
    assert back.mode == "official" and back.names == ("flip", "blur")
    x = np.random.default_rng(8).uniform(-1, 2, (3, 9, 9, 1)).astype("float32")
    np.testing.assert_array_equal(t(x, seed=[1, 2]).numpy(), back(x, seed=[1, 2]).numpy())
    back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(t))
    assert isinstance(back, ConsistencyAugment) and back.mode == "official"
    # configs saved before `mode` existed load as per_sample
    old = dict(cfg)
    del old["mode"]
    assert ConsistencyAugment.from_config(old).mode == "per_sample"
    with pytest.raises(ValueError, match="mode"):
        ConsistencyAugment("all", mode="batch")
    augment.register_transform("_test_custom")(lambda images, seed, lo, hi: images)
    try:
        with pytest.raises(ValueError, match="official"):
            ConsistencyAugment("_test_custom", mode="official")
    finally:
        augment.TRANSFORMS.pop("_test_custom")
    assert OFFICIAL_COMPOSITION == ("resized_crop", "flip", "color_jitter", "blur")


@pytest.mark.slow
def test_official_in_tf_function_and_xla():
    x = np.random.default_rng(9).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    x[1:] = x[:1]
    t = ConsistencyAugment("all", value_range=(0.0, 255.0), mode="official")
    eager = [t(x, seed=[s, 3]).numpy() for s in range(3)]
    graph = tf.function(lambda z, s: t(z, seed=s))
    for s in range(3):
        np.testing.assert_allclose(graph(x, tf.constant([s, 3], tf.int64)).numpy(), eager[s], atol=1e-4)
    # XLA: compiles (gather-based resize), deterministic, batch-wide. Its stateless
    # random numbers differ from the non-XLA kernels' (TensorFlow's, in both modes).
    xla = tf.function(lambda z, s: t(z, seed=s), jit_compile=True)
    for s in range(3):
        a = xla(x, tf.constant([s, 3], tf.int64)).numpy()
        np.testing.assert_array_equal(a, xla(x, tf.constant([s, 3], tf.int64)).numpy())
        np.testing.assert_array_equal(a, np.repeat(a[:1], 4, axis=0))
        assert a.min() >= 0.0 and a.max() <= 255.0 + 1e-3
