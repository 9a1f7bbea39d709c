"""Small real Keras models for fast unit tests."""
import keras
import numpy as np


def tiny_backbone(h=8, w=8, c=1, n=4, seed=0):
    """Conv -> ReLU -> GAP -> Dense over 2c channels (first layer named stem_conv)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((h, w, 2 * c))
    z = keras.layers.Conv2D(6, 3, padding="same", name="stem_conv")(inp)
    z = keras.layers.ReLU()(z)
    z = keras.layers.GlobalAveragePooling2D(name="features")(z)
    out = keras.layers.Dense(n)(z)
    return keras.Model(inp, out)


def linear_backbone(h=4, w=4, c=1, n=3, seed=0):
    """Flatten -> Dense: per-anchor logits are computable in numpy."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((h, w, 2 * c))
    out = keras.layers.Dense(n)(keras.layers.Flatten()(inp))
    return keras.Model(inp, out)


def pixel_images(rng, shape, dtype="float32"):
    """Random raw pixels: uint8 in 0..255, or float in [0, 255] (what amp-tf models take)."""
    if np.dtype(dtype) == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.uniform(0.0, 255.0, shape).astype(dtype)


def linear_logits_numpy(model, x, anchors, mean=0.0, std=1.0):
    """(K, B, N) logits of linear_backbone for every (anchor, image), in numpy float64.

    `x` and `anchors` are raw pixels; rows are `[(c - mean) / std, (x - c) / std]`
    (mean 0 / std 1: the identity normalisation).
    """
    kernel, bias = (np.asarray(v, "float64") for v in model.layers[-1].get_weights())
    x = (np.asarray(x, "float64") - mean) / std
    anchors = (np.asarray(anchors, "float64") - mean) / std
    out = []
    for c in anchors:
        cs = np.broadcast_to(c, x.shape)
        rows = np.concatenate([cs, x - cs], axis=-1).reshape(len(x), -1)
        out.append(rows @ kernel + bias)
    return np.stack(out)


def run_cli(main, argv):
    """Calls a CLI main in-process; returns its result, or the exit code on SystemExit."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code


#: The tiny main job (trainers.fmnist, near-OOD included) that the end-to-end tests share; through
#: the main job's preset, so that one run also checks `--preset fmnist-offline` end to end.
MAIN_JOB_ARGS = ["--preset", "fmnist-offline", "--train-limit", "768", "--eval-limit", "120", "--val-size", "200",
                 "--epochs", "1", "--batch-size", "64", "--width", "4", "--verbose", "0", "--near"]
_MAIN_JOB = {}


def tiny_main_job(tmp_path_factory):
    """The run folder of one tiny trainers.fmnist run (MAIN_JOB_ARGS), made once per test session.

    Test modules that call it share the run, so every end-to-end check of a run's files costs one
    training. Under pytest-xdist (`-n 2`) the workers share it too: the first to ask trains it
    under a file lock in the run's common temporary folder, the others wait and read it.
    """
    if "out" not in _MAIN_JOB:
        import fcntl
        import os

        from amp_tf.cli import fmnist

        root = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            root = root.parent  # one folder per pytest run, above the workers' own
        out = root / "tiny_main_job"
        with open(root / "tiny_main_job.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / "report.json").exists():
                fmnist.main([*MAIN_JOB_ARGS, "--out", str(out)])
        _MAIN_JOB["out"] = out
    return _MAIN_JOB["out"]
