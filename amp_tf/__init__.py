"""amp-tf: out-of-distribution detection with neural network anchoring (AMP).

Importing the package registers its Keras serializables, so `.keras` files
saved by amp-tf load with `keras.models.load_model` after `import amp_tf`.

Example:

>>> import amp_tf
>>> from amp_tf import AnchoredModel, AnchoredPredictor, build_backbone, select_anchors
"""

__version__ = "0.1.0"

from amp_tf import metrics, scores  # noqa: E402,F401
# Every module that defines a Keras serializable (optimizers, layers, models) is
# imported here, so `keras.saving.load_model` works in a user's script after
# `import amp_tf` (tests/test_load_anywhere.py checks it in a fresh interpreter).
from amp_tf import folded, optimizers  # noqa: E402,F401
from amp_tf.anchoring import AnchoredModel  # noqa: E402
from amp_tf.augment import ConsistencyAugment  # noqa: E402
from amp_tf.callbacks import OODMetricsCallback  # noqa: E402
from amp_tf.export import ServingHead, export_for_serving  # noqa: E402
from amp_tf.models import anchor_backbone, build_backbone  # noqa: E402
from amp_tf.predictor import AnchoredPredictor, select_anchors  # noqa: E402
from amp_tf.training import finetune_anchored  # noqa: E402

__all__ = [
    "AnchoredModel", "AnchoredPredictor", "ConsistencyAugment", "OODMetricsCallback",
    "ServingHead", "anchor_backbone", "build_backbone", "export_for_serving", "finetune_anchored", "metrics",
    "scores", "select_anchors",
]
