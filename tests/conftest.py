"""Shared test set-up.

Runs before any TensorFlow op: splits the CPU into two logical devices so that
MirroredStrategy tests have two replicas on a CPU-only machine, and keeps TF quiet.
"""
import os

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


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: longer end-to-end tests (still run in CI)")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
