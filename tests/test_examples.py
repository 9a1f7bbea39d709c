"""examples/*.py refuse bad input with one `error:` line and exit code 2, naming only flags they have;
export_litert.py --run sets its threshold on the run's own held-out ID validation images."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amp_tf.errors import cli_errors

ROOT = Path(__file__).resolve().parents[1]


def example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refused(main, argv, capsys):
    """The stderr of `main(argv)`, which must exit with code 2 and print one `error:` line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    return err


def flags_of(parser_fn):
    """The option strings of an example's parser (built by calling its parse function with --help)."""
    import argparse

    made = []
    original = argparse.ArgumentParser.parse_args

    def grab(self, *a, **kw):
        made.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(SystemExit):
            parser_fn([])
    finally:
        argparse.ArgumentParser.parse_args = original
    return {s for a in made[0]._actions for s in a.option_strings}


def assert_only_own_flags(err, flags):
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", err))
    assert named <= flags, (named - flags, err)


@pytest.fixture
def unfinished(tmp_path):
    (tmp_path / ".r.partial").mkdir()
    (tmp_path / ".r.partial" / "job.json").write_text("{}")
    (tmp_path / "r").mkdir()
    return tmp_path / "r"


def test_export_litert_refuses_bad_runs_and_outs(tmp_path, unfinished, capsys):
    ex = example("export_litert")
    out = ["--out", str(tmp_path / "new")]
    assert "no such folder" in refused(ex.main, ["--run", str(tmp_path / "nope"), *out], capsys)
    err = refused(ex.main, ["--run", str(unfinished), *out], capsys)
    assert "never finished" in err and str(unfinished.parent / ".r.partial") in err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "f").write_text("x")
    assert "is not empty" in refused(ex.main, ["--tiny", "--out", str(tmp_path / "used")], capsys)
    assert "goes with --tiny" in refused(ex.main, ["--run", str(unfinished), "--num-anchors", "3", *out], capsys)
    assert "K >= 2" in refused(ex.main, ["--tiny", "--num-anchors", "1", *out], capsys)
    assert "unrecognized arguments: --download" in refused(ex.main, ["--tiny", "--download", *out], capsys)
    with pytest.raises(ValueError, match="not a trainers.fmnist or trainers.cifar run"):
        ex.run_id_set({"dataset": "imagenet2012", "image_size": 224}, "runs/x")
    assert ex.run_id_set({"holdout": False}, "r") == "fashion_mnist"
    assert ex.run_id_set({"holdout": True}, "r") == "fmnist_holdout_id"
    assert ex.run_id_set({"dataset": "cifar100"}, "r") == "cifar100"
    # the same as a script: no traceback (refused before TensorFlow is imported)
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "export_litert.py"), "--run",
                           str(tmp_path / "nope"), *out], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and proc.stderr.startswith("error: --run") and "Traceback" not in proc.stderr


def test_anchor_your_model_refuses_bad_family_data_and_missing_data(tmp_path, capsys):
    ex = example("anchor_your_model")
    flags = flags_of(ex.parse)
    err = refused(ex.main, ["--family", "mobilenetv3small", "--tiny"], capsys)
    assert "not a keras.applications model; did you mean MobileNetV3Small?" in err
    err = refused(ex.main, ["--data", "cifar1O"], capsys)
    assert "unknown data set name 'cifar1O'" in err
    empty = tmp_path / "tfds"
    empty.mkdir()
    (empty / "README").write_text("no data here")
    err = refused(ex.main, ["--data", "cifar10", "--data-dir", str(empty)], capsys)
    assert "'cifar10' is not prepared" in err and "--download" in err and "--data-dir" in err
    assert_only_own_flags(err, flags)  # it names --download and --data-dir: this script has both
    err = refused(ex.main, ["--data", "fashion_mnist", "--limit", "100"], capsys)
    assert "its images are 28x28x1" in err and "--size 32" in err
    assert_only_own_flags(err, flags)
    assert "--epochs must be >= 1" in refused(ex.main, ["--epochs", "0"], capsys)
    (tmp_path / "notes.txt").write_text("mine")
    err = refused(ex.main, ["--tiny", "--out", str(tmp_path / "notes.txt")], capsys)
    assert f"--out {tmp_path / 'notes.txt'} is a file" in err and "Errno" not in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_anchor_your_model_answers_name_and_out_mistakes_before_tensorflow(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code = ("import runpy, sys; sys.argv = sys.argv[1:]\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "finally:\n    print('tensorflow' in sys.modules, 'keras' in sys.modules, file=sys.stderr)")
    for argv, said in ((["--family", "MobileNetV9"], "--family MobileNetV9: not a keras.applications model; did "
                        "you mean MobileNetV2?"), (["--data", "cifar-10"], "--data: unknown data set name 'cifar-10'"),
                       (["--tiny", "--out", str(tmp_path / "notes.txt" / "a")], "notes.txt is a file")):
        proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "examples" / "anchor_your_model.py"), *argv],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr
        assert proc.stderr.strip().endswith("False False"), proc.stderr  # neither TensorFlow nor Keras imported


def test_load_and_score_refuses_missing_and_unfinished_runs_and_images(tmp_path, unfinished, capsys):
    ex = example("load_and_score")
    main = cli_errors(ex.main)  # as the script runs it
    assert "no such folder" in refused(main, [str(tmp_path / "nope"), "x.npy"], capsys)
    err = refused(main, [str(unfinished), "x.npy"], capsys)
    assert "the run never finished" in err and "--resume" in err  # its trainer's flag, said so
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        ex.read_images(tmp_path / "nope.npy", 28, 28, 1)
    with pytest.raises(FileNotFoundError, match="holds no readable images"):  # DataNotFoundError
        ex.read_images(tmp_path / "r", 28, 28, 1)
    assert "required: images" in refused(main, [str(unfinished)], capsys)
    gone = tmp_path / "gone"  # a run that never finished: only its .partial is there
    (tmp_path / ".gone.partial").mkdir()
    err = refused(main, [str(gone), "x.npy"], capsys)
    assert "never finished" in err and str(tmp_path / ".gone.partial") in err and "--resume" in err


def test_load_and_score_names_npy_files_that_hold_no_pixels(tmp_path):
    ex = example("load_and_score")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (tmp_path / "fake.npy").write_text("these are not pixels\n")
    np.save(tmp_path / "c64.npy", np.zeros((2, 28, 28, 1), np.complex64))
    np.save(tmp_path / "f01.npy", np.full((2, 28, 28, 1), 0.5, np.float32))
    for name, why in (("obj", "Python objects"), ("fake", "not a numpy .npy file"), ("c64", "dtype complex64"),
                      ("f01", "x / 255")):
        with pytest.raises(ValueError, match=f"{name}.npy.*{re.escape(why)}") as info:
            ex.read_images(tmp_path / f"{name}.npy", 28, 28, 1)
        assert "uint8, or float 0..255" in str(info.value) or name == "f01", info.value
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt: neither a folder nor an .npy file"):
        ex.read_images(tmp_path / "notes.txt", 28, 28, 1)


def test_load_and_score_reads_folders_with_the_librarys_reader(tmp_path):
    """The example's pixels are `data.load("folder:...")`'s (16-bit PNGs scaled alike), resized to the run's
    size; a corrupt image among good ones is refused by name."""
    from PIL import Image

    from amp_tf import data

    ex = example("load_and_score")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 65536, (28, 28)).astype(np.uint16)).save(tmp_path / f"{i}.png")
    want, _ = data.to_numpy(data.load(f"folder:{tmp_path}"))
    np.testing.assert_array_equal(ex.read_images(tmp_path, 28, 28, 1), want)
    assert ex.read_images(tmp_path, 32, 32, 3).shape == (3, 32, 32, 3)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"bad\.png \(unreadable.*Remove or fix them: this example scores every"):
        ex.read_images(tmp_path, 28, 28, 1)


def test_load_and_score_answers_flag_mistakes_before_tensorflow(tmp_path):
    script = str(ROOT / "examples" / "load_and_score.py")
    code = ("import runpy, sys; sys.argv = sys.argv[1:]\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "finally:\n    print('tensorflow' in sys.modules, 'keras' in sys.modules, file=sys.stderr)")
    for argv, code_want, said in (([script, "--help"], 0, "usage:"), ([script], 2, "required"),
                                  ([script, str(tmp_path / "norun"), "x.npy"], 2, "no such folder"),
                                  ([script, str(tmp_path), "x.npy"], 2, "no job.json")):
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == code_want and said in proc.stdout + proc.stderr, proc.stderr
        assert proc.stderr.strip().endswith("False False"), proc.stderr  # neither TensorFlow nor Keras imported


@pytest.mark.slow
def test_export_litert_threshold_from_the_runs_held_out_validation_images(tmp_path_factory, tmp_path):
    """A run with a shipped detector exports it with its own threshold (set by the run on its held-out
    validation images); a run from before the detector sets AMP's on the run's held-out images."""
    import shutil

    from tests.helpers import MAIN_JOB_ARGS, tiny_main_job

    from amp_tf import data
    from amp_tf.run.files import load_run
    from amp_tf.run.pipeline import split_id

    run = tiny_main_job(tmp_path_factory)
    ex = example("export_litert")
    args = ex.parse(["--run", str(run), "--out", str(tmp_path / "out")])
    _, anchors, val, images, detector = ex.model_and_images(args)
    assert detector is not None and val is None and anchors.shape[0] == 5 and len(images) == 8
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "export_litert.py"), "--run", str(run),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"its shipped detector {detector.label}" in proc.stdout
    assert f"threshold {load_run(run).detector.threshold:.4f}" in proc.stdout
    assert "verdicts agree on all 8 images" in proc.stdout
    # a run folder from before the detector: AMP alone, threshold on the run's own held-out images
    old = tmp_path / "old_run"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("detector.*", "near_*", "*.png"))
    _, anchors, val, images, detector = ex.model_and_images(ex.parse(["--run", str(old), "--out", str(tmp_path / "o2")]))
    # the run's split: val = the first val_size of permutation(seed) of the training split, never trained on
    val_size = int(MAIN_JOB_ARGS[MAIN_JOB_ARGS.index("--val-size") + 1])
    x_all, y_all = data.to_numpy(data.load("fashion_mnist", "train"))
    d = split_id("fashion_mnist", x_all, y_all, x_all[:1], y_all[:1], val_size, seed=0)
    assert detector is None
    np.testing.assert_array_equal(val, d.x_val)
    order = np.random.default_rng(0).permutation(len(x_all))
    assert len(val) == val_size and not np.isin(order[:val_size], order[val_size:]).any()
