"""The guards every training run gets (`amp_tf.run.training.train`): `DivergenceStop` (stops a loss
that became NaN / Inf or grew 1000-fold, with the likely causes) and `FolderCheck` (the run
folder's check at every epoch end). Every name still imports from `amp_tf.run.training`."""
from __future__ import annotations

import keras
import numpy as np


class TrainingDiverged(ValueError):
    """The training loss became NaN / Inf or grew 1000-fold over its first value: training stopped."""


class DivergenceStop(keras.callbacks.Callback):
    """Stops training (raises `TrainingDiverged`) when the loss becomes NaN / Inf or grows `factor`-fold
    over its first value, with the likely causes: pixels without statistics, or a learning rate too high.

    Example:
        >>> stop = DivergenceStop()
        >>> stop.on_train_batch_end(0, {"loss": 2.3})
        >>> stop.on_train_batch_end(1, {"loss": float("nan")})
        Traceback (most recent call last):
        ...
        amp_tf.run.guards.TrainingDiverged: training stopped at epoch 1, batch 2: the loss became nan. Likely causes: ...
    """

    def __init__(self, factor=1000.0):
        super().__init__()
        self.factor, self.first, self.epoch = float(factor), None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(np.asarray(loss))
        if self.first is None and np.isfinite(loss):
            self.first = loss
        if np.isfinite(loss) and not (self.first and self.first > 0 and loss > self.factor * self.first):
            return
        what = (f"the loss became {loss}" if not np.isfinite(loss) else
                f"the loss grew from {self.first:.4g} to {loss:.4g} (over {self.factor:g}-fold)")
        raise TrainingDiverged(
            f"training stopped at epoch {self.epoch + 1}, batch {batch + 1}: {what}. Likely causes: pixels "
            "without statistics (a model that sees raw 0..255 pixels without normalising them: give it the "
            "training mean/std, e.g. finetune_anchored(..., mean=, std=), or a Normalization layer), or a "
            "learning rate too high for this model (lower --lr / lr=, e.g. 10x).")


class FolderCheck(keras.callbacks.Callback):
    """Runs a run folder's check (`RunFolder.check_intact`) at every epoch end, before any callback writes."""

    def __init__(self, check):
        super().__init__()
        self.check = check

    def on_epoch_end(self, epoch, logs=None):
        self.check()
