"""Shared test set-up.

Runs before any TensorFlow op: splits the CPU into two logical devices so that
MirroredStrategy tests have two replicas on a CPU-only machine, and keeps TF quiet.
"""
import os
import re

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:  # already initialised by an earlier import
    pass

import pytest  # noqa: E402
from _pytest.doctest import DoctestItem  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: longer end-to-end tests (still run in CI)")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


# Doctests that train a model or load Fashion-MNIST belong to the slow tier: the
# fast tier (`-m "not slow"`) is the edit loop. Judged from the examples' source.
_SLOW_DOCTEST = re.compile(r"\.fit\(|\btrain\(|finetune_anchored\(|run_job\(|fashion_mnist")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if isinstance(item, DoctestItem) and item.dtest is not None:
            if any(_SLOW_DOCTEST.search(ex.source) for ex in item.dtest.examples):
                item.add_marker(pytest.mark.slow)
