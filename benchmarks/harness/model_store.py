"""What lets a converged seed span sessions: trained models kept with their cost, scores packed small.

`trained(path, make, log)` returns the Keras model saved at `path` (and the wall / CPU time of its
training, stored beside it in `<path>.json`), or trains it with `make()` and saves it atomically;
`pack` / `unpack` turn a float array into compact JSON (float16, zlib, base64) and back.

Example:

>>> import numpy as np
>>> x = np.linspace(-3, 3, 12, dtype="float32").reshape(3, 4)
>>> bool(np.allclose(unpack(pack(x)), x, atol=2e-3))
True
"""
from __future__ import annotations

import base64
import json
import os
import time
import zlib

from benchmarks.harness.machine import cpu_model
from benchmarks.harness.results import write_json


def trained(path, make, log):
    """(model, wall s, cpu s): the model saved at `path` (with the training time stored beside it), or
    `make()` saved there atomically. Saved without its optimizer state (half the size: nothing trains a
    saved model further; fine-tuning starts its own optimizer), and with `<path>.json` holding the
    training's wall / CPU time and CPU model, so a seed finished across sessions still states its cost."""
    import keras

    side = path.with_suffix(".json")
    if path.exists():
        t = json.loads(side.read_text()) if side.exists() else {"wall_s": 0.0, "cpu_s": 0.0}
        log(f"  reusing {path} (trained in {t['wall_s'] / 60:.1f} min wall)")
        return keras.models.load_model(path, compile=False), t["wall_s"], t["cpu_s"]
    t, c = time.time(), time.process_time()
    model = make()
    wall, cpu = time.time() - t, time.process_time() - c
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, bare = (path.with_name(f".{path.stem}.{k}.keras") for k in ("partial", "bare"))
    model.save(tmp)
    model = keras.models.load_model(tmp, compile=False)  # the same weights, no optimizer
    model.save(bare)
    tmp.unlink()
    write_json(side, {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cpu": cpu_model()}, indent=None)
    os.replace(bare, path)
    return model, wall, cpu


def pack(arr):
    """float16 logits -> compact base64 text (zlib), with the shape."""
    import numpy as np

    a16 = np.asarray(arr, "float16")
    return {"shape": list(a16.shape), "f16_zlib_b64": base64.b64encode(zlib.compress(a16.tobytes(), 9)).decode()}


def unpack(p):
    import numpy as np

    raw = zlib.decompress(base64.b64decode(p["f16_zlib_b64"]))
    return np.frombuffer(raw, "float16").reshape(p["shape"]).astype("float32")
