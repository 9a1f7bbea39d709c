"""Every Keras serializable amp-tf defines, registered in one call (`register_all`).

`keras.saving.load_model` finds a class saved by amp-tf (``amp_tf>AnchoredModel``,
``amp_tf>BatchNorm``, the optimizers and schedules, ...) only once the module that
defines it has run. Code inside the package that loads a model calls `register_all`
rather than importing the package `amp_tf` itself: the package is the top layer
(tests/test_import_graph.py). After `import amp_tf` it also runs by itself once Keras
is imported (`amp_tf.import_all`), so a user's script needs nothing more.

Example:
    >>> register_all()
    >>> import keras
    >>> keras.saving.get_registered_object("amp_tf>AnchoredModel").__name__
    'AnchoredModel'
"""


def register_all():
    """Imports every module that defines a Keras serializable (idempotent; cheap once done)."""
    import amp_tf.method.anchoring  # noqa: F401  AnchoredModel
    import amp_tf.method.augment  # noqa: F401  ConsistencyAugment
    import amp_tf.serve.export  # noqa: F401  ServingHead
    import amp_tf.serve.folded  # noqa: F401  FoldedAnchoredPredictor
    import amp_tf.models  # noqa: F401  BatchNorm, Conv2D (models/batchnorm.py, models/conv.py)
    import amp_tf.run.optimizers  # noqa: F401  CoupledSGD
    import amp_tf.models.pixels  # noqa: F401  PixelNormalization
    import amp_tf.method.predictor  # noqa: F401  AnchoredPredictor
