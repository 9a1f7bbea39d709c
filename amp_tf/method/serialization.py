"""Serialisation of a wrapped backbone, in one place.

`AnchoredModel` and `AnchoredPredictor` both wrap a backbone and a
`PixelNormalization`; `WrapsBackbone` writes and reads both in their
configs, so `.keras` files of either round-trip (keras-hub keeps this in its
`Task` base class for the same reason).
"""

from __future__ import annotations

import keras


class WrapsBackbone:
    """Mixin: `wrapped_config()` for `get_config`, and the matching `from_config`.

    The subclass keeps the backbone in `self.backbone` and its normalisation in
    `self.normalizer` (a `PixelNormalization`).
    """

    def wrapped_config(self):
        mean, std = self.normalizer.statistics()
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "check_pixels": self.normalizer.check,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
