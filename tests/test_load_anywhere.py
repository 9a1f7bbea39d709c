"""Saved models load in a user's own script: a fresh interpreter that imports only `amp_tf`.

In-process tests cannot see this: once any test module has imported, say,
`amp_tf.run.optimizers`, its classes are registered for the whole process. So the
slow test saves every kind of model amp-tf writes (every `.keras` file of a
main-job run, a `finetune_anchored` result, models compiled by user code) and
loads them all in ONE fresh interpreter, with and without `compile=False`, and
trains each kind one step. The fast tests check the clear messages for files
that are not `.keras` models (`amp_tf.run.files.check_keras_file`).
"""
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from amp_tf import data
from amp_tf.method.anchoring import AnchoredModel
from amp_tf.run.files import check_keras_file, load_keras_model, load_run
from amp_tf.models import build_backbone
from amp_tf.run.optimizers import CoupledSGD
from amp_tf.run.training import TrainConfig, compile_model, finetune_anchored, train
from tests.helpers import tiny_main_job

ROOT = Path(__file__).resolve().parents[1]


def _fresh(code, *args):
    """Runs `code` in a new interpreter; returns its stdout (fails with its stderr)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# Loads each path twice (compile=False, then compiled) and, for paths marked "fit:", trains one step
# with the optimizer and loss stored in the file (never re-compiled). One line per file.
LOAD_ALL = """
    import sys
    import numpy as np
    import keras
    import amp_tf
    rng = np.random.default_rng(1)
    for arg in sys.argv[1:]:
        fit, path = arg.startswith("fit:"), arg.removeprefix("fit:")
        try:
            keras.saving.load_model(path, compile=False)
            m = keras.saving.load_model(path)
            anchored = isinstance(m, amp_tf.AnchoredModel)
            net = m.backbone if anchored else m
            h, w, c = net.input_shape[1:]
            c = c // 2 if anchored else c
            loss = "-"
            if fit:
                x = rng.integers(0, 256, (8, h, w, c)).astype("uint8")
                y = rng.integers(0, net.output_shape[-1], 8)
                loss = m.fit(x, y, epochs=1, batch_size=8, verbose=0).history["loss"][-1]
                loss = "finite" if np.isfinite(loss) else f"not finite {loss}"
            print("OK", path, type(m).__name__, type(m.optimizer).__name__, loss)
        except Exception as err:
            print("FAIL", path, type(err).__name__, (str(err).splitlines() or [""])[0])
"""


def _user_models(folder):
    """.keras files a user's own code writes: our optimizers, schedules, models, a fine-tuned model."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 16, 16, 1)).astype("uint8")
    y = rng.integers(0, 3, 16)
    mean, std = [float(x.mean())], [float(x.std())]
    anchored = AnchoredModel(build_backbone("resnet_small", (16, 16, 1), 3, width=4), mean=mean, std=std)
    anchored.compile(optimizer=CoupledSGD(0.01, momentum=0.9, weight_decay_l2=5e-4),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    anchored.fit(x, y, epochs=1, batch_size=8, verbose=0)
    vanilla = build_backbone("resnet_small", (16, 16, 1), 3, anchored=False, width=4, mean=mean, std=std)
    compile_model(vanilla, TrainConfig(anchored=False, lr_milestones=(1,)), steps_per_epoch=2)  # a schedule
    vanilla.fit(x, y, epochs=1, batch_size=8, verbose=0)
    twin, _ = train(TrainConfig(anchored=False, epochs=1, batch_size=8, backbone_kwargs={"width": 4}),
                    x, y, 3, verbose=0)
    tuned, _ = finetune_anchored(twin, x, y, epochs=1, batch_size=8, lr=0.01, verbose=0)
    paths = []
    for name, model in (("user_anchored", anchored), ("user_vanilla", vanilla), ("finetuned", tuned)):
        model.save(folder / f"{name}.keras")
        paths.append(folder / f"{name}.keras")
    return paths


@pytest.mark.slow
def test_every_saved_model_loads_in_a_fresh_interpreter_and_keeps_training(tmp_path_factory, tmp_path):
    run = tiny_main_job(tmp_path_factory)
    run_files = sorted(run.rglob("*.keras"))
    names = {str(p.relative_to(run)) for p in run_files}
    assert {"anchored.keras", "vanilla.keras", "anchored/checkpoints/last.keras",
            "near_fmnist_holdout_id/anchored/checkpoints/last.keras"} <= names
    user = _user_models(tmp_path)
    # every kind trains a step; the checkpoints (the same classes) are loaded both ways
    args = [f"fit:{p}" for p in [run / "anchored.keras", run / "vanilla.keras", *user]]
    args += [str(p) for p in run_files if p.name == "last.keras"]
    out = _fresh(LOAD_ALL, *args)
    lines = out.strip().splitlines()
    assert len(lines) == len(args) and all(ln.startswith("OK ") for ln in lines), out
    by_name = {Path(ln.split()[1]).name if "checkpoints" not in ln else ln.split()[1]: ln for ln in lines}
    assert "CoupledSGD" in by_name["user_anchored.keras"]
    assert " AnchoredModel " in by_name["finetuned.keras"] and " AnchoredModel " in by_name["anchored.keras"]
    assert sum(ln.endswith(" finite") for ln in lines) == 5  # the five that trained a step


@pytest.mark.slow
def test_example_load_and_score_runs_on_a_run_folder(tmp_path_factory, tmp_path):
    run = tiny_main_job(tmp_path_factory)
    x, _ = data.to_numpy(data.load("fashion_mnist", "test"), limit=6)
    np.save(tmp_path / "mine.npy", x[..., 0])  # (N, H, W): the script adds the channel axis
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "load_and_score.py"), str(run),
                           str(tmp_path / "mine.npy")], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [r for r in map(str.split, proc.stdout.splitlines()) if len(r) == 5 and r[1].isdigit()]
    assert len(rows) == 6 and all(r[3] in ("ID", "OOD") for r in rows), proc.stdout
    loaded = load_run(run)  # the same answers in-process, from the run's shipped detector
    assert loaded.detector is not None and loaded.detector.threshold == pytest.approx(loaded.threshold)
    pred = loaded.predict(x)
    np.testing.assert_array_equal([int(r[1]) for r in rows], pred["predicted_class"])
    assert [r[3] == "OOD" for r in rows] == list(pred["is_ood"])
    served = tf.saved_model.load(str(run / "serving")).signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(pred["ood_score"], served["ood_score"].numpy(), rtol=1e-4, atol=1e-5)
    assert list(served["is_ood"].numpy()) == list(pred["is_ood"])
    assert f"{sum(r[3] == 'OOD' for r in rows)} of 6 flagged OOD" in proc.stdout


# ------------------------------------------------------------------ files that are not .keras models (fast)
@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras_files")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(folder / "good.keras")
    model.save_weights(folder / "w.weights.h5")
    return folder, model


def test_a_good_file_loads_and_bad_ones_say_what_they_are(good):
    folder, model = good
    assert load_keras_model(folder / "good.keras", "--model").output_shape == (None, 2)
    data = (folder / "good.keras").read_bytes()
    cases = {
        "truncated.keras": (data[: len(data) // 2], r"is not a Keras model: the file is truncated or corrupt"),
        "empty.keras": (b"", "the file is empty"),
        "weights.keras": ((folder / "w.weights.h5").read_bytes(), "the file is an HDF5 file"),
        "notes.keras": (b"just some text\n", "the file is text, not a .keras zip archive"),
        "random.keras": (bytes(range(200, 256)) * 4, "the file is not a zip archive"),
    }
    for name, (content, pattern) in cases.items():
        (folder / name).write_bytes(content)
        with pytest.raises(ValueError, match=pattern) as info:
            check_keras_file(folder / name, "--model")
        assert str(info.value).startswith(f"--model {folder / name} is not a Keras model")
        with pytest.raises(ValueError, match=pattern):
            load_keras_model(folder / name, "--model")
    with zipfile.ZipFile(folder / "other.keras", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="a zip archive without a model in it"):
        check_keras_file(folder / "other.keras")
    with pytest.raises(FileNotFoundError, match="no such file"):
        check_keras_file(folder / "missing.keras")
    with pytest.raises(ValueError, match="is a folder"):
        check_keras_file(folder)


def test_example_reads_a_folder_of_images_as_raw_pixels(tmp_path):
    import importlib.util

    from PIL import Image

    spec = importlib.util.spec_from_file_location("load_and_score", ROOT / "examples" / "load_and_score.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rng = np.random.default_rng(0)
    pics = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    for i, p in enumerate(pics):
        Image.fromarray(p).save(tmp_path / f"{i}.png")
    x = example.read_images(tmp_path, 28, 28, 1)
    assert x.shape == (3, 28, 28, 1) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[..., 0], pics)  # raw pixels, unscaled
    (tmp_path / "notes.txt").write_text("not an image")  # it scores every file: one it cannot is named
    with pytest.raises(ValueError, match=r"notes\.txt \(not an image file"):
        example.read_images(tmp_path, 28, 28, 1)
    (tmp_path / "notes.txt").unlink()
    np.save(tmp_path / "a.npy", pics)
    assert example.read_images(tmp_path / "a.npy", 28, 28, 1).shape == (3, 28, 28, 1)


def test_a_committed_converged_model_scores_as_it_did_before_the_restructuring():
    """benchmarks/results/converged_models/.../seed0 (trained before the layers moved) loads and gives the
    AMP outputs that the code before the restructuring gave (082fe64, tests/data/...npz, made by loading the
    same file there): 64 Fashion-MNIST test images, the first 5 training images as anchors."""
    import keras

    from amp_tf import AnchoredPredictor, data

    root = Path(__file__).resolve().parents[1]
    model = keras.saving.load_model(
        root / "benchmarks/results/converged_models/a43ca4358a/seed0/fashion_mnist-anchored.keras", compile=False)
    x, _ = data.to_numpy(data.load("fashion_mnist", "test"), limit=64)
    anchors, _ = data.to_numpy(data.load("fashion_mnist", "train"), limit=5)
    out = AnchoredPredictor.from_model(model, anchors).predict(x)
    golden = np.load(root / "tests/data/converged_seed0_amp_at_082fe64.npz")
    assert set(golden.files) == {"logits", "tau", "calibrated_logits", "probabilities", "predicted_class",
                                 "amp_score", "msp", "energy"}
    for key in golden.files:
        np.testing.assert_allclose(np.asarray(out[key]), golden[key], rtol=1e-5, atol=1e-5, err_msg=key)
