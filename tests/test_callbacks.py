import keras
import numpy as np
import pytest

from amp_tf.anchoring import AnchoredModel
from amp_tf.callbacks import OODMetricsCallback
from tests.helpers import tiny_backbone


def _data(rng, n=64):
    y = rng.integers(0, 4, n)
    x = rng.normal(scale=0.3, size=(n, 8, 8, 1)).astype("float32")
    x[..., 0] += y[:, None, None] * 0.5
    return x, y


@pytest.mark.parametrize("anchored", [True, False])
def test_callback_writes_metrics_into_logs(rng, anchored, tmp_path):
    x, y = _data(rng)
    ood = {"noise": rng.normal(scale=3.0, size=(32, 8, 8, 1)).astype("float32"),
           "flat": np.zeros((16, 8, 8, 1), "float32")}
    if anchored:
        model = AnchoredModel(tiny_backbone(), consistency_every=0)
    else:
        inp = keras.Input((8, 8, 1))
        z = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3, activation="relu")(inp))
        model = keras.Model(inp, keras.layers.Dense(4)(z))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = OODMetricsCallback(x[:32], ood, every=2, verbose=0)
    ckpt = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "best.weights.h5"), monitor="val_ood_auroc", mode="max",
        save_best_only=True, save_weights_only=True)
    hist = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[cb, ckpt])
    for key in ("val_ood_auroc", "val_ood_fpr95", "val_ood_aupr_in", "val_ood_aupr_out",
                "val_ood_detection_accuracy", "val_ood_noise_auroc", "val_ood_flat_fpr95"):
        assert key in hist.history and len(hist.history[key]) == 3, key
        assert all(0.0 <= v <= 1.0 for v in hist.history[key])
    mean = (hist.history["val_ood_noise_auroc"][-1] + hist.history["val_ood_flat_auroc"][-1]) / 2
    assert hist.history["val_ood_auroc"][-1] == pytest.approx(mean)
    assert (tmp_path / "best.weights.h5").exists()


def test_callback_bad_arguments(rng):
    with pytest.raises(ValueError, match="ood_sets"):
        OODMetricsCallback(np.zeros((4, 8, 8, 1)), {})
    with pytest.raises(ValueError, match="every"):
        OODMetricsCallback(np.zeros((4, 8, 8, 1)), {"a": np.zeros((4, 8, 8, 1))}, every=0)
