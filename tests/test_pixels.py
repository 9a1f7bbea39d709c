"""Raw pixels in: the input rule measured on every offline set, the natural mistakes, the layer."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf import data
from amp_tf.run.pipeline import RunFolder
from amp_tf.models.pixels import PixelNormalization, check_images, check_pixels, check_stats


def _offline_sets():
    names = ["fashion_mnist", "digits"] + [f"fmnist_blur_{i}" for i in (1, 5)]
    names += [n for n in ("font_letters", "skimage_patches", "fmnist_jpeg_5", "fmnist_contrast_5",
                          "fmnist_pixelate_5") if n in data.names()]
    return names


@pytest.mark.parametrize("name", _offline_sets())
def test_no_legitimate_set_is_rejected(name):
    """Every offline ID/OOD set passes as loaded (uint8) and as float pixels, also resized."""
    split = "train" if name == "fashion_mnist" else "test"
    x, _ = data.to_numpy(data.load(name, split), limit=2000)  # scripts/setup.sh installs every one
    check_pixels(x)
    check_pixels(x.astype("float32"))
    check_pixels(data.resize_images(x[:64], (32, 32), "tf").astype("float32"))
    for i in range(0, len(x), 256):  # every batch a model could see
        check_pixels(x[i:i + 256].astype("float32"))


def test_the_natural_mistakes_are_rejected_with_the_fix():
    x, _ = data.to_numpy(data.load("fashion_mnist", "test"), limit=256)
    mean, std = data.channel_stats(x)
    with pytest.raises(ValueError, match=r"x / 255"):
        check_pixels(x / 255.0)
    with pytest.raises(ValueError, match="already normalised"):
        check_pixels((x - mean) / std)
    with pytest.raises(ValueError, match="above 255"):
        check_pixels(x.astype("float32") * 2.0)
    bad = x.astype("float32")
    bad[7, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="first at index 7"):
        check_pixels(bad)
    # a black image (all zeros) is a legitimate image, as float too
    check_pixels(np.zeros((2, 28, 28, 1), "float32"))


def test_stats_in_unit_range_are_refused():
    with pytest.raises(ValueError, match="pixel units"):
        check_stats([0.286], [0.353], 1)
    with pytest.raises(ValueError, match="std"):
        check_stats([72.9], [0.0], 1)
    m, s = check_stats([72.9], [90.0], 3)
    assert m.tolist() == pytest.approx([72.9] * 3) and s.tolist() == pytest.approx([90.0] * 3)


def test_layer_normalises_checks_in_graph_and_round_trips(tmp_path):
    layer = PixelNormalization([10.0, 20.0], [2.0, 4.0])
    x = np.stack([np.full((3, 3), 12.0), np.full((3, 3), 24.0)], -1)[None].astype("float32")
    np.testing.assert_allclose(layer(x).numpy(), np.ones_like(x))
    with pytest.raises(tf.errors.InvalidArgumentError, match="already normalised"):
        layer(-x)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x / 255"):
        layer(np.concatenate([x, x]) / 255.0)  # (one image this dark alone passes: see the dark-image test)
    off = PixelNormalization([10.0, 20.0], [2.0, 4.0], check_pixels=False)  # the escape hatch
    np.testing.assert_allclose(off(-x).numpy(), (-x - [10.0, 20.0]) / [2.0, 4.0], rtol=1e-6)
    inp = keras.Input((3, 3, 2))
    model = keras.Model(inp, layer(inp))
    model.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(back(x).numpy(), model(x).numpy())


# ------------------------------------------------------------------ run folders
def test_run_folder_refuses_mixing_and_commits_atomically(tmp_path):
    out = tmp_path / "run"
    folder = RunFolder(out, {"seed": 0}, log=lambda m: None)
    assert folder.work.exists() and not out.exists()  # a run in progress never looks finished
    (folder.work / "report.md").write_text("a")
    assert folder.commit() == out and (out / "report.md").read_text() == "a"
    assert not folder.work.exists()
    with pytest.raises(ValueError, match="holds an earlier run.*--resume.*--overwrite"):
        RunFolder(out, {"seed": 1})
    with pytest.raises(ValueError, match="already complete"):
        RunFolder(out, {"seed": 1}, resume=True)
    assert (out / "report.md").read_text() == "a"  # untouched by the refusals
    again = RunFolder(out, {"seed": 1}, overwrite=True, log=lambda m: None)
    assert json.loads((again.work / "job.json").read_text()) == {"seed": 1}
    assert (out / "report.md").read_text() == "a"  # replaced only when the new run is complete
    again.commit()
    assert not (out / "report.md").exists() and json.loads((out / "job.json").read_text()) == {"seed": 1}


def test_run_folder_resumes_only_an_identical_interrupted_run(tmp_path):
    out = tmp_path / "run"
    killed = RunFolder(out, {"lr": 0.1}, log=lambda m: None)
    (killed.work / "backup").mkdir()
    killed.release()  # its process ended (a kill)
    with pytest.raises(ValueError, match="interrupted run"):
        RunFolder(out, {"lr": 0.1})
    with pytest.raises(ValueError, match=r"\['lr'\]"):
        RunFolder(out, {"lr": 0.5}, resume=True)
    said = []
    resumed = RunFolder(out, {"lr": 0.1}, resume=True, log=said.append)
    assert (resumed.work / "backup").exists() and "resuming" in said[0]
    with pytest.raises(ValueError, match="no run to resume"):
        RunFolder(tmp_path / "fresh", {"lr": 0.1}, resume=True)


def test_a_dark_image_is_not_mistaken_for_x_over_255():
    x, _ = data.to_numpy(data.load("fashion_mnist", "test"), limit=64)
    dark = (x[:1] * 0.0015).astype("float32")  # one legitimate dark image: every pixel <= 0.5
    assert 0 < dark.max() <= 0.5 and np.any(dark != np.round(dark))
    check_pixels(dark)
    layer = PixelNormalization(72.9, 90.0)
    layer(dark)  # in-graph too, as the last batch of one image of a larger array
    check_pixels(np.concatenate([x.astype("float32"), dark]))  # judged as a whole
    with pytest.raises(ValueError, match=r"x / 255.*check_pixels=False"):  # the override is named
        check_pixels(np.concatenate([dark, dark]))
    with pytest.raises(ValueError, match=r"x / 255"):
        check_pixels(x[:1] / 255.0)  # one real image divided by 255 still is refused
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x / 255"):
        layer(x[:1] / 255.0)


def test_check_images_gives_the_predictor_messages():
    with pytest.raises(ValueError, match=r"^images: expected \(batch, 28, 28, 1\), got \(2, 28, 28, 3\)\. Resize"):
        check_images(np.zeros((2, 28, 28, 3), np.uint8), (28, 28, 1))
    with pytest.raises(ValueError, match=r"^x: expected \(N, H, W, C\), got shape \(28, 28, 1\)"):
        check_images(np.zeros((28, 28, 1), np.uint8), (28, 28, 1), what="x")
    with pytest.raises(ValueError, match="^images: got an empty array"):
        check_images(tf.zeros([0, 28, 28, 1], tf.uint8), (None, None, 1))
    assert check_images(tf.zeros([2, 5, 5, 1]), (None, None, 1)).shape == (2, 5, 5, 1)
