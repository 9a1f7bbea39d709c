"""ConsistencyAugment(mode="official"): the official code's torchvision transform on the
normalised tensor, one parameter draw per batch (checked against a numpy re-implementation
of torchvision's functional ops and, where torch/torchvision are installed, torchvision
itself); and mode="per_sample" unchanged."""

import importlib.util
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf.method import augment
from amp_tf.method.anchoring import AnchoredModel, permute_batch
from amp_tf.method.augment import (
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


# -- the official T is torchvision's, on the normalised tensor -------------------
# numpy re-implementations of torchvision's functional ops for float tensors (NHWC).


def _np_blend(a, b, r):
    return np.clip(r * a + (1.0 - r) * b, 0.0, 1.0)


def _np_gray(x):
    if x.shape[-1] == 1:
        return x
    return (0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]


def _np_hue(x, f):
    if x.shape[-1] == 1:
        return x
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    maxc, minc = x.max(-1), x.min(-1)
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / np.where(eqc, 1.0, maxc)
    div = np.where(eqc, 1.0, cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    h = ((maxc == r) * (bc - gc) + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
         + ((maxc != g) & (maxc != r)) * (4.0 + gc - rc))
    h = np.mod(np.fmod(h / 6.0 + 1.0, 1.0) + f, 1.0)
    i = np.floor(h * 6.0)
    ff = h * 6.0 - i
    i = i.astype(int) % 6
    v = maxc
    p = np.clip(v * (1 - s), 0, 1)
    q = np.clip(v * (1 - s * ff), 0, 1)
    t = np.clip(v * (1 - s * (1 - ff)), 0, 1)
    sext = ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))
    return np.stack([np.choose(i, c) for c in sext], axis=-1)


NP_JITTER = {
    "brightness": lambda x, f: _np_blend(x, 0.0, f),
    "contrast": lambda x, f: _np_blend(x, _np_gray(x).mean(axis=(1, 2, 3), keepdims=True), f),
    "saturation": lambda x, f: x if x.shape[-1] == 1 else _np_blend(x, _np_gray(x), f),
    "hue": _np_hue,
}


def _np_kernel(k, sigma):
    t = np.arange(k) - (k - 1) * 0.5
    ker = np.exp(-0.5 * (t / sigma) ** 2)
    return ker / ker.sum()


def _np_gaussian_blur(x, kx, ky, sigma):
    """torchvision's gaussian_blur(img, [kx, ky], [sigma, sigma]): kx across, ky down."""
    rx, ry = kx // 2, ky // 2
    p = np.pad(x, [(0, 0), (ry, ry), (rx, rx), (0, 0)], mode="reflect")
    h, w = x.shape[1:3]
    kv, kh = _np_kernel(ky, sigma), _np_kernel(kx, sigma)
    y = sum(kv[a] * p[:, a:a + h] for a in range(ky))
    return sum(kh[b] * y[:, :, b:b + w] for b in range(kx))


def _np_resized_crop(x, i, j, ch, cw):
    """Crop, then torch's bilinear interpolate (align_corners=False) back to the input size."""
    win = x[:, i:i + ch, j:j + cw]
    h, w = x.shape[1:3]

    def taps(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        a = np.minimum(np.floor(src).astype(int), n_in - 1)
        return a, np.minimum(a + 1, n_in - 1), src - a

    ya, yb, wy = taps(ch, h)
    xa, xb, wx = taps(cw, w)
    rows = win[:, ya] + (win[:, yb] - win[:, ya]) * wy[None, :, None, None]
    return rows[:, :, xa] + (rows[:, :, xb] - rows[:, :, xa]) * wx[None, None, :, None]


def _normalised(c, seed=0, shape=(3, 14, 12)):
    """Fashion-MNIST-like pixels normalised like the model does: values in about [-0.8, 2]."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, shape + (c,)).astype("float32")
    pixels[0, :3] = 0.0  # some black rows
    return (pixels - 72.9) / 90.0


def _uniform(seed, lo=0.0, hi=1.0, shape=()):
    return tf.random.stateless_uniform(list(shape), seed=seed, minval=lo, maxval=hi).numpy()


def _draws(seed, names, h, w, jitter):
    """The parameters ConsistencyAugment(mode="official") draws for `seed` (same splits)."""
    p = augment.OFFICIAL_PARAMS
    seeds = tf.random.experimental.stateless_split(tf.constant(seed, tf.int64), len(names) + 1)
    d = {"group": bool(_uniform(seeds[len(names)]) < p["jitter_blur_p"])}
    for k, name in enumerate(names):
        s = seeds[k]
        if name == "resized_crop":
            d["crop"] = [int(v) for v in augment._official_crop_box(s, h, w, p["crop_scale"], p["crop_ratio"], 10)]
        elif name == "flip":
            d["flip"] = bool(_uniform(s) < p["flip_p"])
        elif name == "color_jitter":
            ranges = augment.jitter_ranges(*jitter)
            active = [op for op in augment.JITTER_OPS if ranges[op] is not None]
            sub = tf.random.experimental.stateless_split(s, len(active) + 1)
            d["factors"] = {op: float(_uniform(sub[i], *ranges[op])) for i, op in enumerate(active)}
            order = np.argsort(_uniform(sub[-1], shape=[len(active)])) if len(active) > 1 else [0]
            d["order"] = [active[o] for o in order]
        elif name == "blur":
            d["sigma"] = float(_uniform(s, *p["blur_sigma"]))
        elif name == "grayscale":
            d["gray"] = bool(_uniform(s) < p["grayscale_p"])
    return d


def _np_official(x, names, d):
    """The official Compose on `x` with the parameters `d`, in numpy."""
    x = x.astype("float64")
    for name in names:
        if name == "resized_crop":
            x = _np_resized_crop(x, *d["crop"])
        elif name == "flip" and d["flip"]:
            x = x[:, :, ::-1]
        elif name == "color_jitter" and d["group"]:
            for op in d["order"]:
                x = NP_JITTER[op](x, d["factors"][op])
        elif name == "blur" and d["group"]:
            x = _np_gaussian_blur(x, 3, 9, d["sigma"])
        elif name == "grayscale" and d["gray"]:
            x = np.broadcast_to(_np_gray(x), x.shape)
    return x


def _tv_official(x, names, d, jitter):
    """The official code's own torchvision transform objects, their draws fixed to `d`."""
    import torch
    from torchvision import transforms as T

    img = torch.tensor(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    h, w = x.shape[1:3]
    cj = T.ColorJitter(*jitter)
    index = {"brightness": 0, "contrast": 1, "saturation": 2, "hue": 3}
    if "order" in d:
        f = d["factors"]
        perm = [index[op] for op in d["order"]] + [i for op, i in index.items() if op not in d["order"]]
        cj.get_params = lambda *a: (torch.tensor(perm), f.get("brightness"), f.get("contrast"),
                                    f.get("saturation"), f.get("hue"))
    blur = T.GaussianBlur(kernel_size=(3, 9), sigma=(0.1, 5))
    blur.get_params = lambda lo, hi: d.get("sigma", 1.0)
    crop = T.RandomResizedCrop(size=(h, w), scale=(0.6, 1.0))
    crop.get_params = lambda *a: d["crop"]
    step = {"resized_crop": crop, "flip": T.RandomHorizontalFlip(p=float(d.get("flip", 0))),
            "grayscale": T.RandomGrayscale(p=float(d.get("gray", 0)))}
    group = [{"color_jitter": cj, "blur": blur}[n] for n in names if n in ("color_jitter", "blur")]
    ops = []
    for n in names:
        if n in step:
            ops.append(step[n])
        elif n == "color_jitter" or (n == "blur" and "color_jitter" not in names):
            ops.append(T.RandomApply(group, p=float(d["group"])))
    return T.Compose(ops)(img).permute(0, 2, 3, 1).numpy()


OFFICIAL_JITTER = (0.5, 0.0, 0.0, 0.0)  # ColorJitter(0.5), as the official script
FULL_JITTER = (0.5, 0.4, 0.4, 0.1)  # every ColorJitter op on: order matters


@pytest.fixture
def full_jitter(monkeypatch):
    for k, v in zip(("brightness", "contrast", "saturation", "hue"), FULL_JITTER):
        monkeypatch.setitem(augment.OFFICIAL_PARAMS, k, v)
    return FULL_JITTER


def _check_official(x, names, jitter, reference, seeds=range(12)):
    t = ConsistencyAugment(names, mode="official")
    orders, diffs = set(), []
    for s in seeds:
        d = _draws([s, 17], t.names, x.shape[1], x.shape[2], jitter)
        orders.add(tuple(d.get("order", ())))
        y = t(x, seed=[s, 17]).numpy()
        ref = reference(x, t.names, d)
        np.testing.assert_allclose(y, ref, atol=1e-5, rtol=0, err_msg=f"seed {s}: {d}")
        diffs.append(float(np.abs(y - ref).max()))
    return orders, max(diffs)


@pytest.mark.parametrize("c", [1, 3])
def test_official_t_equals_numpy_torchvision_reimplementation(c):
    x = _normalised(c)
    _check_official(x, "all", OFFICIAL_JITTER, _np_official)
    # the grayscale-free Algorithm 1 too
    _check_official(x, OFFICIAL_COMPOSITION, OFFICIAL_JITTER, _np_official, seeds=range(4))


@pytest.mark.parametrize("c", [1, 3])
def test_official_jitter_random_order_equals_numpy(c, full_jitter):
    orders, _ = _check_official(_normalised(c, 1), "color_jitter+blur", full_jitter, _np_official,
                                seeds=range(16))
    assert len(orders) >= 4  # the op order is drawn per call, as torchvision's randperm


@pytest.mark.parametrize("c", [1, 3])
def test_official_t_equals_torchvision(c):
    pytest.importorskip("torchvision")
    x = _normalised(c, 2)
    _, diff = _check_official(x, "all", OFFICIAL_JITTER, lambda *a: _tv_official(*a, OFFICIAL_JITTER))
    assert diff < 1e-5


@pytest.mark.parametrize("c", [1, 3])
def test_official_jitter_random_order_equals_torchvision(c, full_jitter):
    pytest.importorskip("torchvision")
    x = _normalised(c, 3)
    orders, _ = _check_official(x, "color_jitter+blur", full_jitter,
                                lambda *a: _tv_official(*a, full_jitter), seeds=range(16))
    assert len(orders) >= 4


FUNCTIONAL_CASES = [("adjust_brightness", NP_JITTER["brightness"], 1.3),
                    ("adjust_contrast", NP_JITTER["contrast"], 0.6),
                    ("adjust_saturation", NP_JITTER["saturation"], 1.4),
                    ("adjust_hue", _np_hue, -0.3), ("adjust_hue", _np_hue, 0.45)]


def _functional_ours(c):
    x = np.concatenate([_normalised(c, 4), np.random.default_rng(5).uniform(0, 1, (2, 14, 12, c))]).astype("float32")
    xt = tf.constant(x)
    got = {(name, f): getattr(augment, name)(xt, f).numpy() for name, _, f in FUNCTIONAL_CASES}
    got["blur"] = gaussian_blur(xt, (3, 9), 2.5).numpy()
    got["gray"] = augment.rgb_to_grayscale(xt).numpy()
    return x, got


@pytest.mark.parametrize("c", [1, 3])
def test_functional_ops_equal_numpy(c):
    x, got = _functional_ours(c)
    for name, ref, f in FUNCTIONAL_CASES:
        np.testing.assert_allclose(got[name, f], ref(x.astype("float64"), f), atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got["blur"], _np_gaussian_blur(x.astype("float64"), 3, 9, 2.5), atol=1e-5)
    np.testing.assert_allclose(got["gray"], _np_gray(x), atol=1e-6)
    if c == 1:  # torchvision: saturation, hue and grayscale leave one channel as it is
        for key in (("adjust_saturation", 1.4), ("adjust_hue", -0.3), "gray"):
            np.testing.assert_array_equal(got[key], x)
    else:
        assert np.abs(got["adjust_hue", -0.3] - x).max() > 0.1


@pytest.mark.parametrize("c", [1, 3])
def test_functional_ops_equal_torchvision(c):
    pytest.importorskip("torchvision")
    import torch
    from torchvision.transforms import functional as F

    x, got = _functional_ours(c)
    img = torch.tensor(x).permute(0, 3, 1, 2)
    back = lambda t: t.permute(0, 2, 3, 1).numpy()  # noqa: E731
    for name, _, f in FUNCTIONAL_CASES:
        np.testing.assert_allclose(got[name, f], back(getattr(F, name)(img, f)), atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got["blur"], back(F.gaussian_blur(img, [3, 9], [2.5, 2.5])), atol=1e-5)
    np.testing.assert_allclose(got["gray"], back(F.rgb_to_grayscale(img)), atol=1e-6)


def test_official_blur_is_3_wide_9_tall_with_one_sigma():
    x = np.zeros((1, 15, 15, 1), "float32")
    x[0, 7, 7] = 1.0  # an impulse: the blur's footprint is its kernel
    sigmas = []
    for s in range(6):
        y = augment.official_blur(tf.constant(x), tf.constant([s, 1], tf.int64)).numpy()[0, :, :, 0]
        sigma = float(_uniform(tf.constant([s, 1], tf.int64), 0.1, 5.0))
        want = np.zeros_like(y)
        want[3:12, 6:9] = np.outer(_np_kernel(9, sigma), _np_kernel(3, sigma))  # one sigma, both axes
        np.testing.assert_allclose(y, want, atol=1e-6)
        if sigma > 1.0:
            rows, cols = np.nonzero(y > 1e-6)
            assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 11, 6, 8)
        sigmas.append(sigma)
    assert max(sigmas) > 1.0 and np.ptp(sigmas) > 1.0


def test_official_brightness_scales_the_normalised_tensor_and_clamps_to_0_1():
    x = _normalised(3, 6)
    t = ConsistencyAugment("color_jitter", mode="official")
    factors, off = [], 0
    for s in range(30):
        y = t(x, seed=[s, 5]).numpy()
        if np.array_equal(y, x):
            off += 1
            continue
        assert y.min() >= 0.0 and y.max() <= 1.0  # every below-mean value went to 0
        assert np.all(y[x <= 0] == 0)
        inside = (x > 0.01) & (y < 1.0 - 1e-4)
        f = (y[inside] / x[inside])
        assert np.ptp(f) < 1e-4, "one brightness factor for the whole batch"
        factors.append(float(np.median(f)))
    assert 1 <= off <= 14  # RandomApply p = 0.8
    assert 0.5 - 1e-5 <= min(factors) and max(factors) <= 1.5 + 1e-5 and np.ptp(factors) > 0.3


def test_official_jitter_and_blur_share_one_switch():
    x = _normalised(1, 7)
    t = ConsistencyAugment("color_jitter+blur", mode="official")
    on = 0
    for s in range(30):
        seed = tf.constant([s, 9], tf.int64)
        y = t(x, seed=seed).numpy()
        sub = tf.random.experimental.stateless_split(seed, 3)
        both = augment.official_blur(augment.official_color_jitter(x, sub[0]), sub[1])
        if np.array_equal(y, x):
            continue
        np.testing.assert_allclose(y, both.numpy(), atol=1e-5)  # never just one of the two
        on += 1
    assert 16 <= on <= 29


def test_official_determinism_and_value_range_unused():
    x = _normalised(3, 8, shape=(5, 20, 18))
    outs = []
    for s in range(8):
        a = ConsistencyAugment("all", mode="official")(x, seed=[s, 1]).numpy()
        b = ConsistencyAugment("all", value_range=(-5.0, 5.0), mode="official")(x, seed=[s, 1]).numpy()
        np.testing.assert_array_equal(a, b)
        assert a.shape == x.shape
        outs.append(a)
    assert len({o.tobytes() for o in outs}) == len(outs)
    assert ConsistencyAugment("all", mode="official").on_normalised
    assert not ConsistencyAugment("all").on_normalised


def test_official_refuses_what_torchvision_refuses():
    with pytest.raises(ValueError, match="1- or 3-channel"):
        ConsistencyAugment("all", mode="official")(np.zeros((2, 12, 12, 2), "float32"))
    # crop, flip and blur take any channel count, as torchvision's do
    y = ConsistencyAugment("resized_crop+flip+blur", mode="official")(np.ones((2, 12, 12, 4), "float32"))
    assert y.shape == (2, 12, 12, 4)
    with pytest.raises(ValueError, match="at least 5 pixels tall"):
        ConsistencyAugment("blur", mode="official")(np.zeros((2, 4, 12, 1), "float32"))
    with pytest.raises(ValueError, match="hue"):
        augment.jitter_ranges(hue=0.7)


def _flat_model(mode, c=1):
    inp = keras.Input((10, 9, 2 * c))
    backbone = keras.Model(inp, keras.layers.Flatten()(inp))
    return AnchoredModel(backbone, consistency="all", consistency_mode=mode, mean=[72.9] * c,
                         std=[90.0] * c, num_classes=10)


@pytest.mark.parametrize("c", [1, 3])
def test_anchored_model_official_t_on_normalised_anchors(c):
    x = np.random.default_rng(10).integers(0, 256, (6, 10, 9, c)).astype("uint8")
    seed = tf.constant([3, 8], tf.int64)
    perm_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    anchors = permute_batch(tf.cast(x, tf.float32), perm_seed)
    norm = (anchors - 72.9) / 90.0
    for mode in ("official", "per_sample"):
        m = _flat_model(mode, c)
        rows = m(x, seed=seed, apply_consistency=True).numpy().reshape(6, 10, 9, 2 * c)
        if mode == "official":
            want = m.augment(norm, seed=aug_seed)
        else:
            want = (m.augment(anchors, seed=aug_seed) - 72.9) / 90.0
        np.testing.assert_allclose(rows[..., :c], want.numpy(), atol=1e-5)
        np.testing.assert_allclose(rows[..., c:], (x - anchors.numpy()) / 90.0, atol=1e-5)
        clean = m(x, seed=seed, apply_consistency=False).numpy().reshape(6, 10, 9, 2 * c)
        np.testing.assert_allclose(clean[..., :c], norm.numpy(), atol=1e-5)


@pytest.mark.slow
def test_official_in_tf_function_and_xla():
    x = _normalised(3, 9, shape=(4, 16, 16))
    x[1:] = x[:1]
    t = ConsistencyAugment("all", mode="official")
    eager = [t(x, seed=[s, 3]).numpy() for s in range(2)]
    graph = tf.function(lambda z, s: t(z, seed=s))
    for s in range(2):
        np.testing.assert_allclose(graph(x, tf.constant([s, 3], tf.int64)).numpy(), eager[s], atol=1e-5)
    # XLA: compiles (gather-based resize), deterministic, batch-wide. Its stateless
    # random numbers differ from the non-XLA kernels' (TensorFlow's, in both modes).
    xla = tf.function(lambda z, s: t(z, seed=s), jit_compile=True)
    for s in range(2):
        a = xla(x, tf.constant([s, 3], tf.int64)).numpy()
        np.testing.assert_array_equal(a, xla(x, tf.constant([s, 3], tf.int64)).numpy())
        np.testing.assert_array_equal(a, np.repeat(a[:1], 4, axis=0))
        assert np.isfinite(a).all()
