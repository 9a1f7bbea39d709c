"""Per-image latency on ONE CPU thread: the `.tflite` (LiteRT) vs the SavedModel, and their sizes.

The main job's serving model by default: anchored `resnet_small` width 16 on
28x28x1, K = 5 anchors (`amp_tf.recipe.NUM_ANCHORS`; random weights: latency does not depend on them), or a
run's `anchored.keras` with `--model`. Both exports are written to a temporary
folder; each is then timed in its own fresh process, one image per call:

* SavedModel: `tf.saved_model.load`, `serving_default` on a (1, H, W, C) uint8
  batch, with `tf.config.threading.set_intra_op_parallelism_threads(1)` and
  `set_inter_op_parallelism_threads(1)`;
* .tflite: the LiteRT interpreter (`ai-edge-litert`, else `tf.lite.Interpreter`)
  with `num_threads=1`, invoked on one uint8 image (the process does not import
  TensorFlow when `ai-edge-litert` is installed, as on a device).

Prints the median and the fastest of `--reps` timed calls after `--warmup`
calls, the ratio SavedModel / .tflite, the file sizes and the CPU model. Not a
test: timings depend on the machine and on what else runs on it.

    python -m benchmarks.speed.litert                       # main job's shape
    python -m benchmarks.speed.litert --model runs/X/anchored.keras
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/speed/litert.py
    sys.exit("run it as a module from the repository root: python -m benchmarks.speed.litert")

from amp_tf.recipe import NUM_ANCHORS  # noqa: E402  (light: no TensorFlow)
from benchmarks.harness.machine import cpu_model  # noqa: E402
from benchmarks.harness.results import check_k  # noqa: E402

SAVED_WORKER = r"""
import json, sys, time
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
path, warmup, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
loaded = tf.saved_model.load(path)
fn = loaded.signatures["serving_default"]
shape = [1] + [int(d) for d in json.loads(sys.argv[4])]
x = tf.constant(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
for _ in range(warmup):
    fn(images=x)["amp_score"].numpy()
times = []
for _ in range(reps):
    t = time.perf_counter(); fn(images=x)["amp_score"].numpy(); times.append(time.perf_counter() - t)
print(json.dumps(times))
"""

LITE_WORKER = r"""
import json, sys, time
import numpy as np
try:
    from ai_edge_litert.interpreter import Interpreter
    runtime = "ai_edge_litert"
except ImportError:
    import tensorflow as tf
    Interpreter, runtime = tf.lite.Interpreter, "tf.lite"
path, warmup, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
it = Interpreter(model_path=path, num_threads=1)
run = it.get_signature_runner("serving_default")
shape = run.get_input_details()["images"]["shape"]
x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
for _ in range(warmup):
    run(images=x)
times = []
for _ in range(reps):
    t = time.perf_counter(); run(images=x); times.append(time.perf_counter() - t)
print(json.dumps({"runtime": runtime, "times": times}))
"""


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed.litert", description=__doc__.splitlines()[0])
    p.add_argument("--model", help="an anchored.keras (default: the main job's shape, random weights)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--num-anchors", type=int, default=NUM_ANCHORS,
                   help=f"K (default {NUM_ANCHORS}, amp_tf.recipe.NUM_ANCHORS)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3,
                   help="fresh processes per format, alternating; the round with the lowest median counts")
    args = p.parse_args(argv)
    args.num_anchors = check_k(p, args.num_anchors, "--num-anchors")
    return args


def export_both(args, out):
    """Writes `out/serving` and `out/model.tflite`; returns the image shape (H, W, C)."""
    import keras
    import numpy as np

    import amp_tf
    from amp_tf.serve.export import export_for_serving, export_tflite
    from amp_tf.models import build_backbone
    from amp_tf.method.predictor import AnchoredPredictor, select_anchors

    x = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    if args.model:
        model = keras.saving.load_model(args.model, compile=False)
        x = np.random.default_rng(0).integers(0, 256, (64,) + tuple(model.backbone.input_shape[1:3])
                                              + (model.backbone.input_shape[3] // 2,), dtype=np.uint8)
    else:
        backbone = build_backbone("resnet_small", (28, 28, 1), 10, width=args.width)
        model = amp_tf.AnchoredModel(backbone, mean=72.9, std=90.0)
        model(x[:2])
    pred = AnchoredPredictor.from_model(model, select_anchors(x, args.num_anchors))
    head = export_for_serving(pred, out / "serving", id_images=x)
    export_tflite(head, out / "model.tflite")
    return tuple(int(d) for d in x.shape[1:])


def run_worker(code, *argv):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    res = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True,
                         env=env, timeout=1800)
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def _median(values):
    return sorted(values)[len(values) // 2]


def dir_size(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main(argv=None):
    args = parse(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t = time.time()
        shape = export_both(args, out)
        print(f"exported both in {time.time() - t:.1f} s; image shape {shape}, K = {args.num_anchors}")
        saved, lite = [], []
        for _ in range(args.rounds):  # alternating, so a busy spell on a shared machine hits both
            saved.append(run_worker(SAVED_WORKER, out / "serving", args.warmup, args.reps, json.dumps(shape)))
            lite.append(run_worker(LITE_WORKER, out / "model.tflite", args.warmup, args.reps))
        tflite_bytes, saved_bytes = (out / "model.tflite").stat().st_size, dir_size(out / "serving")
    runtime = lite[0]["runtime"]
    rounds = {"saved": saved, "lite": [r["times"] for r in lite]}
    med = {k: min(_median(t) for t in v) * 1e3 for k, v in rounds.items()}
    best = {k: min(min(t) for t in v) * 1e3 for k, v in rounds.items()}
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs visible); one thread each; "
          f"{args.reps} calls of one image after {args.warmup} warm-up calls, best of {args.rounds} rounds")
    print(f"SavedModel   per image: median {med['saved']:.2f} ms, fastest {best['saved']:.2f} ms; "
          f"size {saved_bytes / 1024:.0f} KiB")
    print(f".tflite      per image: median {med['lite']:.2f} ms, fastest {best['lite']:.2f} ms; "
          f"size {tflite_bytes / 1024:.0f} KiB ({runtime})")
    print(f"ratio SavedModel / .tflite: median {med['saved'] / med['lite']:.2f}x, "
          f"fastest {best['saved'] / best['lite']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
