"""The child process of `benchmarks.speed.against`: times ONE revision of amp_tf.

Run by `benchmarks.speed.against` as a script (never imported by the package), with
`PYTHONPATH=<a checkout of the revision>` so that `import amp_tf` loads that
revision's code. It imports nothing else of this repository (older revisions
lack this file), and uses only the amp_tf API that has been stable since the
last release point (`build_backbone`, `resnet_small`, `AnchoredModel`,
`AnchoredPredictor`, `export_for_serving`, `export_tflite` where it exists),
found wherever the revision keeps it (`HOMES`: the package's layout moves).

Protocol (one JSON object per line): argv[1] holds the settings; the child
builds every measure, prints `SA_READY {"measures": [...], "skipped": {...}}`,
then answers each request read from stdin with one `SA_REPLY {...}` line:

* `{"op": "calibrate", "measure": m, "min_s": s}` -> `{"calls": n}` (calls per sample);
* `{"op": "time", "measure": m, "calls": n}` -> `{"s": wall s per call, "cpu_s": ...}`;
* `{"op": "quit"}` -> exits.

Every measure returns the images it processed per call, so the parent turns
seconds into images/s. A measure this revision cannot build is skipped with
the reason (e.g. no `.tflite` export before it existed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time

PREFIX_READY, PREFIX_REPLY = "SA_READY ", "SA_REPLY "
CYCLE = 5  # the anchored step applies T on every 5th step


def reply(prefix, obj):
    sys.stdout.write(prefix + json.dumps(obj) + "\n")
    sys.stdout.flush()


#: Where each name has lived (the package's layout changes between revisions): first found wins.
HOMES = {
    "AnchoredModel": ("amp_tf", "amp_tf.anchoring", "amp_tf.method.anchoring"),
    "AnchoredPredictor": ("amp_tf", "amp_tf.predictor", "amp_tf.method.predictor"),
    "export_for_serving": ("amp_tf", "amp_tf.export", "amp_tf.serve.export"),
    "export_tflite": ("amp_tf", "amp_tf.export", "amp_tf.serve.export"),
    "TFLiteModel": ("amp_tf", "amp_tf.export", "amp_tf.serve.export"),
}


def find(name):
    """`name` from the first module of `HOMES[name]` that has it, else None."""
    import importlib

    for module in HOMES[name]:
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    return None


def make_images(n, seed, classes=10):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 28, 28, 1)).astype("float32")  # whole-number raw pixels
    return x, rng.integers(0, classes, n).astype("int32")


def build_measures(cfg, tmp):
    """`({name: (fn, images per call)}, {name: reason skipped})` for one revision."""
    import inspect

    import keras
    import numpy as np
    import tensorflow as tf

    from amp_tf.models import build_backbone
    from amp_tf.models.resnet import resnet_small

    b, k, width, seed = cfg["batch_size"], cfg["k"], cfg["width"], cfg["seed"]
    want = set(cfg["measures"])
    measures, skipped = {}, {}

    def anchored_backbone():
        keras.utils.set_random_seed(seed)
        return build_backbone("resnet_small", (28, 28, 1), 10, anchored=True, width=width)

    def anchored_model():
        AnchoredModel = find("AnchoredModel")
        kw = dict(consistency="all", consistency_every=CYCLE, seed=seed, num_classes=10)
        if "value_range" in inspect.signature(AnchoredModel.__init__).parameters:
            kw["value_range"] = (0.0, 255.0)
        model = AnchoredModel(anchored_backbone(), **kw)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=5e-4),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        return model

    if "train" in want:  # AnchoredModel.fit on in-memory arrays, as a user writes it
        xt_, yt_ = make_images(cfg["n_train"], seed)
        model = anchored_model()

        def train():
            model.fit(xt_, yt_, batch_size=b, epochs=1, verbose=0)
        measures["train"] = (train, len(xt_))
    if "train_step" in want:  # the compiled step alone on a fixed batch, CYCLE steps (T once)
        xs_, ys_ = make_images(b, seed + 3)
        stepper = anchored_model()
        stepper.train_on_batch(xs_[:8], ys_[:8])  # builds the weights, slots and train_function
        batches = iter(tf.data.Dataset.from_tensors((tf.constant(xs_), tf.constant(ys_))).repeat())

        def train_step():
            for _ in range(CYCLE):
                out = stepper.train_function(batches)
            tf.nest.flatten(out)[0].numpy()
        measures["train_step"] = (train_step, CYCLE * b)

    x, _ = make_images(b, seed + 1)
    anchors, _ = make_images(k, seed + 2)
    if "vanilla" in want:  # the plain 1-channel backbone's inference forward, compiled
        keras.utils.set_random_seed(seed)
        inp = keras.Input((28, 28, 1))
        vanilla = keras.Model(inp, resnet_small(inp, 10, width=width), name="resnet_small_vanilla")
        xt = tf.constant((x - 127.5) / 127.5)
        van_fn = tf.function(lambda z: vanilla(z, training=False))
        measures["vanilla"] = (lambda: van_fn(xt).numpy(), b)

    pred = None
    if want & {"amp", "amp_call", "savedmodel", "tflite"}:
        pred = find("AnchoredPredictor")(anchored_backbone(), anchors, mean=127.5, std=127.5)
    if "amp" in want:  # AnchoredPredictor.predict on a numpy batch (its checks included)
        measures["amp"] = (lambda: pred.predict(x, batch_size=b)["amp_score"], b)
    if "amp_call" in want:  # the compiled call alone (no numpy-side checks)
        amp_fn = tf.function(lambda z: pred(z)["amp_score"])
        xp = tf.constant(x)
        measures["amp_call"] = (lambda: amp_fn(xp).numpy(), b)

    one = np.asarray(x[:1], np.uint8)
    head = None
    if want & {"savedmodel", "tflite"}:
        path = os.path.join(tmp, "saved")
        head = find("export_for_serving")(pred, path, threshold=0.0)
        if "savedmodel" in want:
            serve = tf.saved_model.load(path).signatures["serving_default"]
            img = tf.constant(one)
            measures["savedmodel"] = (lambda: serve(images=img)["amp_score"].numpy(), 1)
    if "tflite" in want:
        export_tflite, TFLiteModel = find("export_tflite"), find("TFLiteModel")
        if export_tflite is None or TFLiteModel is None:
            skipped["tflite"] = "this revision has no .tflite export (export_tflite, TFLiteModel)"
        else:
            path = os.path.join(tmp, "model.tflite")
            export_tflite(head, path)
            lite = TFLiteModel(path)
            measures["tflite"] = (lambda: lite(one)["amp_score"], 1)
    return measures, skipped


def serve(measures):
    """Answers the parent's requests until it says quit (or closes stdin)."""
    for line in sys.stdin:
        req = json.loads(line)
        op = req.get("op")
        if op == "quit":
            return
        fn, _ = measures[req["measure"]]
        if op == "calibrate":
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            reply(PREFIX_REPLY, {"calls": max(1, math.ceil(req["min_s"] / max(dt, 1e-6)))})
        elif op == "time":
            n = int(req["calls"])
            c, t = time.process_time(), time.perf_counter()
            for _ in range(n):
                fn()
            reply(PREFIX_REPLY, {"s": (time.perf_counter() - t) / n, "cpu_s": (time.process_time() - c) / n})
        else:
            reply(PREFIX_REPLY, {"error": f"unknown op {op!r}"})


def main():
    cfg = json.loads(sys.argv[1])
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    import amp_tf

    tmp = tempfile.mkdtemp(prefix="amp_tf_speed_against_")
    try:
        measures, skipped = build_measures(cfg, tmp)
        for name in list(measures):  # warm-up: traces, first calls, caches
            fn, _ = measures[name]
            for _ in range(cfg.get("warmup", 2)):
                fn()
        reply(PREFIX_READY, {"measures": {n: v[1] for n, v in measures.items()}, "skipped": skipped,
                             "amp_tf_file": os.path.dirname(amp_tf.__file__),
                             "tensorflow": tf.__version__})
        serve(measures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
