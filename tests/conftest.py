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


#: Under `-n 2 --dist loadfile --no-loadscope-reorder` each worker takes the next module in this
#: order when it runs low: the longest modules (end-to-end runs) first, so that the two workers end
#: together, and test_load_anywhere last, when the tiny main job it shares with test_fmnist_job
#: (tests/helpers.py) is long made. Within a module the order is the file's.
_LONGEST_FIRST = ("test_converged.py", "test_resume.py", "test_applications.py", "test_cli.py", "test_fmnist_job.py",
                  "test_anchored_features.py", "test_anchoring.py", "test_detectors.py", "test_distributed.py",
                  "test_baselines.py", "test_litert.py", "test_tune.py", "test_recipe.py", "test_models.py")
_LAST = ("test_load_anywhere.py",)


def _rank(item):
    name = item.path.name
    if name in _LONGEST_FIRST:
        return _LONGEST_FIRST.index(name)
    return len(_LONGEST_FIRST) + (1 if name in _LAST else 0)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    items.sort(key=_rank)  # stable
    for item in items:
        if isinstance(item, DoctestItem) and item.dtest is not None:
            if any(_SLOW_DOCTEST.search(ex.source) for ex in item.dtest.examples):
                item.add_marker(pytest.mark.slow)
