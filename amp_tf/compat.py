"""Workarounds for known Keras bugs, each isolated here and covered by a test.

keras-team/keras#20585 -- `fit` under `MultiWorkerMirroredStrategy` fails in
`_maybe_symbolic_build` with "Attempt to convert a value (PerReplica...) to a
Tensor": to build the model symbolically, Keras reduces the first distributed
batch with `strategy.reduce("MEAN", ...)`, which a multi-worker strategy cannot
do for a batch of images. Since any single replica's share has the right
structure, shapes and dtypes for a symbolic build, the patch takes the first
local replica's share instead.

Same bug report: under a multi-worker strategy Keras reduces the logs returned
by `train_step`/`test_step` with `strategy.reduce("MEAN", v, axis=0)`, which
needs rank >= 1; scalar logs fail ("Invalid reduction dimension 0 for input
with 0 dimensions"). The patch returns each log as a rank-1 tensor of length 1,
which that reduction turns back into the scalar mean.

`tests/test_distributed.py` checks that the bug
is still there (so we notice when Keras fixes it and this can go).
"""

from __future__ import annotations

import types

import tensorflow as tf

try:
    from keras.src import tree
except ImportError:  # pragma: no cover
    tree = tf.nest


def _local_share(value, strategy):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _maybe_symbolic_build_local(self, iterator=None, data_batch=None):
    strategy = self._distribute_strategy
    if strategy is None:
        return
    if iterator is not None:
        for _, _, it in iterator:
            data_batch = tree.map_structure(lambda v: _local_share(v, strategy), next(it))
            break
    with strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _rank1_logs(step_fn):
    def wrapped(data):
        return {k: tf.reshape(v, [1]) for k, v in step_fn(data).items()}

    return wrapped


def needs_multiworker_patch(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def patch_multiworker_fit(model, strategy):
    """Applies the #20585 workaround to `model` (an instance) when `strategy` is multi-worker."""
    if needs_multiworker_patch(strategy):
        model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build_local, model)
        model.train_step = _rank1_logs(model.train_step)
        model.test_step = _rank1_logs(model.test_step)
    return model
