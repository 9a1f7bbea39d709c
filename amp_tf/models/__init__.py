"""Backbone models for anchored (AMP) training and ``anchor_backbone``: plain Keras.

Nothing here imports the method layer (`amp_tf.method.anchoring` builds the `AnchoredModel`
around these backbones; tests/test_import_graph.py checks it).

Example:
    >>> from amp_tf.models import build_backbone, backbone_names
    >>> "wrn40_2" in backbone_names()
    True
    >>> build_backbone("resnet_small", (28, 28, 1), 10).input.shape
    (None, 28, 28, 2)
"""
from amp_tf.models.registry import backbone_names, build_backbone, register_backbone
from amp_tf.models import resnet as _resnet  # noqa: F401  (registers builders)
from amp_tf.models import wrn as _wrn  # noqa: F401
from amp_tf.models.anchor import anchor_backbone, anchor_with_statistics, model_normalization, softmax_output

__all__ = ["anchor_backbone", "anchor_with_statistics", "backbone_names", "build_backbone",
           "model_normalization", "register_backbone", "softmax_output"]
