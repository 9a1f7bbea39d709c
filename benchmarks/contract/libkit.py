"""What the library cases share inside a worker process (TensorFlow is imported on first use): the
Fashion-MNIST test images, the tiny run's models, small Keras models, and the fixture model files."""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np


@functools.lru_cache(None)
def images(n=512):
    """(x uint8 (n, 28, 28, 1), y int64) Fashion-MNIST test images as `data.load` gives them."""
    from amp_tf import data

    return data.to_numpy(data.load("fashion_mnist", "test"), limit=n)


@functools.lru_cache(None)
def run(path):
    """The tiny run's `load_run` (anchored, vanilla, anchors, threshold, detector)."""
    import amp_tf  # noqa: F401
    from amp_tf.run.files import load_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_run(path)


def predictor(ctx):
    from amp_tf import AnchoredPredictor

    r = run(ctx["run"])
    return AnchoredPredictor.from_model(r.anchored, r.anchors)


def conv(shape=(28, 28, 1), classes=10, head=None, pre=True, name="m", features=False):
    """A small functional classifier: [Rescaling(1/255)] -> Conv2D -> GAP -> Dense(classes, head); `features`
    names the pooling layer 'features' (amp-tf's convention for the feature detectors)."""
    import keras

    inp = keras.Input(shape)
    z = keras.layers.Rescaling(1 / 255.0)(inp) if pre else inp
    z = keras.layers.Conv2D(8, 3, activation="relu", name="stem")(z)
    z = keras.layers.GlobalAveragePooling2D(name="features" if features else None)(z)
    return keras.Model(inp, keras.layers.Dense(classes, activation=head, name="predictions")(z), name=name)


def mlp(shape=(28, 28, 1)):
    import keras

    inp = keras.Input(shape)
    z = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inp)))
    return keras.Model(inp, keras.layers.Dense(10, name="predictions")(z), name="mlp")


def make_models(folder):
    """The model files of the CLI cases (trainers' --init-from, eval.ood --model)."""
    import keras

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "plain28": conv(), "softmax28": conv(head="softmax"), "sigmoid28": conv(head="sigmoid"),
        "logsoftmax28": conv(head="log_softmax"), "anysize": conv((None, None, 1)), "rgb32": conv((32, 32, 3)),
        "classes5": conv(classes=5), "flat_dense": mlp(),
    }
    base = conv()
    made["act_softmax28"] = keras.Model(base.input, keras.layers.Activation("softmax")(base.output))
    base2 = conv(name="m2")
    made["softmax_layer28"] = keras.Model(base2.input, keras.layers.Softmax()(base2.output))
    vec = keras.Input((784,))
    made["dense_vec"] = keras.Model(vec, keras.layers.Dense(10)(vec))
    inp = keras.Input((28, 28, 1))
    z = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(keras.layers.Rescaling(1 / 255.0)(inp)))
    made["two_out"] = keras.Model(inp, [keras.layers.Dense(10, name="a")(z), keras.layers.Dense(3, name="b")(z)])
    made["plain28f"] = conv(name="mf", features=True)
    nan = conv(name="nanm", features=True)
    w = nan.get_layer("stem").get_weights()
    w[0][0, 0, 0, 0] = np.nan
    nan.get_layer("stem").set_weights(w)
    made["nan28"] = nan
    for name, model in made.items():
        model.save(folder / f"{name}.keras")
    data = (folder / "plain28.keras").read_bytes()
    (folder / "truncated.keras").write_bytes(data[: len(data) // 2])
    made["plain28"].save(folder / "legacy.h5")
    made["plain28"].save_weights(folder / "plain28.weights.h5")
    return sorted(p.name for p in folder.iterdir())


def same(a, b, tol=1e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=tol, atol=tol))


def ok(flag, note):
    return {"ok": bool(flag), "note": note}


def caught_warnings(fn):
    """`(value, [warning texts])` of `fn()` (Python warnings and amp_tf's logging warnings)."""
    import logging

    texts = []

    class H(logging.Handler):
        def emit(self, record):
            texts.append(record.getMessage())

    h = H(level=logging.WARNING)
    logging.getLogger("amp_tf").addHandler(h)
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            value = fn()
    finally:
        logging.getLogger("amp_tf").removeHandler(h)
    return value, texts + [str(x.message) for x in w]


_EXAMPLES = {}


def run_example(path, argv):
    """Runs an example script's `main(argv)` in this process exactly as its ``__main__`` block does
    (`amp_tf.errors.cli_errors`: one ``error:`` line and exit code 2); an exception that escapes is what
    the script would print as a traceback. Returns ``{"exit", "answer", "traceback", ...}``."""
    import contextlib
    import io
    import runpy

    from amp_tf.errors import cli_errors

    if path not in _EXAMPLES:
        _EXAMPLES[path] = runpy.run_path(path, run_name="probe_example")
    out, err, code, tb = io.StringIO(), io.StringIO(), 0, False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rv = cli_errors(_EXAMPLES[path]["main"])(list(argv))
            code = rv if isinstance(rv, int) else 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except Exception as e:  # noqa: BLE001  (the script would end in this traceback)
            code, tb = 1, True
            err.write(f"Traceback (most recent call last):\n{type(e).__name__}: {e}\n")
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    outl = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    if code:
        answer = lines[-1] if tb else next((ln for ln in lines if "error:" in ln), lines[-1] if lines else "")
    else:
        answer = outl[0] if outl else ""
    return {"exit": code, "answer": answer, "traceback": tb, "stdout": out.getvalue()[-4000:]}
