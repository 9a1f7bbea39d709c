import keras
import numpy as np
import pytest

from amp_tf.method.anchoring import AnchoredModel
from amp_tf.run.callbacks import OODMetricsCallback
from tests.helpers import tiny_backbone


def _data(rng, n=64):
    """Raw pixels (float 0..255): the class shifts the brightness."""
    y = rng.integers(0, 4, n)
    x = rng.uniform(0, 80, size=(n, 8, 8, 1)).astype("float32")
    x[..., 0] += y[:, None, None] * 50.0
    return x, y


@pytest.mark.parametrize("anchored", [True, False])
def test_callback_writes_metrics_into_logs(rng, anchored, tmp_path):
    x, y = _data(rng)
    ood = {"noise": rng.integers(0, 256, size=(32, 8, 8, 1)).astype("uint8"),
           "flat": np.zeros((16, 8, 8, 1), "float32")}
    if anchored:
        model = AnchoredModel(tiny_backbone(), consistency_every=0)
    else:
        inp = keras.Input((8, 8, 1))
        h = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)  # raw pixels in
        z = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3, activation="relu")(h))
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


def test_callback_checks_arguments_at_construction(rng):
    """Bad arguments raise at construction, before any fit (no model needed)."""
    x, _ = _data(rng, 8)
    ood = {"a": np.zeros((4, 8, 8, 1), "uint8")}
    normalised = (x - x.mean()) / x.std()  # has negative values
    with pytest.raises(ValueError, match="id_images: .*already normalised"):
        OODMetricsCallback(normalised, ood)
    with pytest.raises(ValueError, match=r"ood_sets\['a'\].*looks like `x / 255`"):
        OODMetricsCallback(x, {"a": rng.uniform(0, 1, (4, 8, 8, 1)).astype("float32")})
    with pytest.raises(ValueError, match=r"ood_sets\['b'\]: images of shape \(8, 8, 3\) differ"):
        OODMetricsCallback(x, {"b": np.zeros((4, 8, 8, 3), "uint8")})
    with pytest.raises(ValueError, match=r"ood_sets\['c'\]: images of shape \(6, 6, 1\) differ"):
        OODMetricsCallback(x, {"c": np.zeros((4, 6, 6, 1), "uint8")})
    with pytest.raises(ValueError, match="id_images: expected a non-empty"):
        OODMetricsCallback(x[0], ood)  # 3-D
    with pytest.raises(ValueError, match="id_images: expected a non-empty"):
        OODMetricsCallback(x[:0], ood)
    with pytest.raises(ValueError, match="num_anchors.*K >= 2"):
        OODMetricsCallback(x, ood, num_anchors=1)
    with pytest.raises(ValueError, match=r"anchors \(K = their number\): AMP needs K >= 2"):
        OODMetricsCallback(x, ood, anchors=x[:1])
    with pytest.raises(ValueError, match="anchors: expected .* like the ID images"):
        OODMetricsCallback(x, ood, anchors=x[:3, :5])
    with pytest.raises(ValueError, match="positive"):
        OODMetricsCallback(x, ood, positive="both")
    with pytest.raises(ValueError, match="score: unknown"):
        OODMetricsCallback(x, ood, score="no_such_score")
    # the valid counterparts construct fine (so the errors above come from the bad argument)
    cb = OODMetricsCallback(x, ood, num_anchors=2, verbose=0)
    assert cb.id_images.shape == x.shape and set(cb.ood_sets) == {"a"}
    OODMetricsCallback(x.astype("uint8"), ood, anchors=x[:2], score="energy")


@pytest.mark.parametrize("shape", [(4, 10, 10, 1), (4, 8, 8, 3)])
def test_callback_images_of_another_size_are_refused_before_the_first_step(rng, shape):
    x, y = _data(rng, 32)
    model = AnchoredModel(tiny_backbone(), consistency_every=0)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrong = np.zeros(shape, "uint8")
    cb = OODMetricsCallback(wrong, {"a": wrong}, verbose=0)
    with pytest.raises(ValueError, match=r"^id_images: expected \(batch, 8, 8, 1\), got \(4, "):
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert model.optimizer.iterations.numpy() == 0
