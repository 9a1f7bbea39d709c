"""Saved models load in a user's own script: a fresh interpreter that imports only `amp_tf`.

In-process tests cannot see this: once any test module has imported, say,
`amp_tf.optimizers`, its classes are registered for the whole process.
"""
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from amp_tf.anchoring import AnchoredModel
from amp_tf.models import build_backbone
from amp_tf.optimizers import CoupledSGD


def _fresh(code, *args):
    """Runs `code` in a new interpreter; returns its stdout (fails with its stderr)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_models_with_our_optimizer_load_in_a_fresh_interpreter_and_keep_training(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 8, 8, 1)).astype("uint8")
    y = rng.integers(0, 3, 16)
    mean, std = [float(x.mean())], [float(x.std())]
    backbone = build_backbone("resnet_small", input_shape=(8, 8, 1), num_classes=3, width=8)
    anchored = AnchoredModel(backbone, mean=mean, std=std)
    anchored.compile(optimizer=CoupledSGD(0.01, momentum=0.9, weight_decay_l2=5e-4),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    anchored.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "anchored.keras"
    anchored.save(path)
    out = _fresh("""
        import sys
        import numpy as np
        import keras
        import amp_tf
        path = sys.argv[1]
        m = keras.saving.load_model(path, compile=False)
        m = keras.saving.load_model(path)
        print(type(m.optimizer).__name__)
        rng = np.random.default_rng(1)
        x = rng.integers(0, 256, (16, 8, 8, 1)).astype("uint8")
        h = m.fit(x, rng.integers(0, 3, 16), epochs=1, batch_size=8, verbose=0)
        print("loss", np.isfinite(h.history["loss"][-1]))
    """, path)
    assert "CoupledSGD" in out and "loss True" in out
