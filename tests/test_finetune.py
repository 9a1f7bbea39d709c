"""Anchored fine-tuning from a vanilla model: function-preserving start, then anchored training."""
import numpy as np
import pytest

from amp_tf import data
from amp_tf.method.predictor import AnchoredPredictor, select_anchors
from amp_tf.run.training import TrainConfig, finetune_anchored, train


@pytest.fixture(scope="module")
def fmnist():
    return data.to_numpy(data.load("fashion_mnist", "train"), limit=512)


@pytest.mark.slow  # fine-tunes for real
def test_finetune_starts_from_the_vanilla_function_and_learns_to_use_anchors(fmnist):
    x, y = fmnist
    vanilla, _ = train(TrainConfig(anchored=False, epochs=1, batch_size=64, backbone_kwargs={"width": 4}),
                       x, y, 10, verbose=0, backup=False)
    before = vanilla.predict(x[:64], verbose=0)
    model, hist = finetune_anchored(vanilla, x, y, epochs=1, batch_size=64, lr=0.02, verbose=0, backup=False)
    assert model.backbone.input.shape[-1] == 2 and len(hist.history["loss"]) == 1
    np.testing.assert_allclose(model.normalizer.mean.numpy(), vanilla.get_layer("pixel_normalization").mean.numpy())
    np.testing.assert_allclose(vanilla.predict(x[:64], verbose=0), before)  # the vanilla model is untouched
    tau = AnchoredPredictor.from_model(model, select_anchors(x, 5)).predict(x[:64])["tau"]
    assert np.all(np.isfinite(tau)) and tau.mean() > 1e-4  # the fine-tuned model depends on the anchor


def test_init_from_checks_the_model(fmnist, tmp_path):
    x, y = fmnist
    cfg = TrainConfig(epochs=1, batch_size=64, backbone_kwargs={"width": 4}, init_from=str(tmp_path / "no.keras"))
    with pytest.raises(FileNotFoundError, match="vanilla .keras"):
        train(cfg, x, y, 10, verbose=0, backup=False)
    vanilla, _ = train(TrainConfig(anchored=False, epochs=1, batch_size=64, backbone_kwargs={"width": 4}),
                       x, y, 10, verbose=0, backup=False)
    with pytest.raises(ValueError, match="10 outputs"):
        finetune_anchored(vanilla, x, y, num_classes=6, epochs=1, batch_size=64, verbose=0, backup=False)
