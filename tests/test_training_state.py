"""`train` leaves no global state behind: the dtype policy it sets is restored."""
import keras
import numpy as np

from amp_tf.run.training import TrainConfig, train


def test_mixed_precision_training_restores_the_global_policy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 16, 16, 1)).astype("uint8")
    y = rng.integers(0, 3, 32)
    before = keras.config.dtype_policy().name
    cfg = TrainConfig(anchored=False, epochs=1, batch_size=16, mixed_precision=True, backbone_kwargs={"width": 4})
    model, _ = train(cfg, x, y, 3, verbose=0, backup=False)
    assert keras.config.dtype_policy().name == before == "float32"
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in model.layers}  # it did train in bf16


def test_deterministic_training_scopes_op_determinism_to_the_run():
    from tensorflow.python.framework import config as tf_config

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 16, 16, 1)).astype("uint8")
    cfg = TrainConfig(anchored=False, epochs=1, batch_size=16, deterministic=True, backbone_kwargs={"width": 4})
    assert not tf_config.is_op_determinism_enabled()
    train(cfg, x, rng.integers(0, 3, 16), 3, verbose=0, backup=False)
    assert not tf_config.is_op_determinism_enabled()
