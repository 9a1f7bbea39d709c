"""Kill-and-resume: a SIGKILLed trainers.fmnist run, rerun, ends with the weights of an uninterrupted one.

Exact under these settings: --deterministic (TF op determinism), the default
strategy, in-memory data (epoch order and augmentation are functions of
(seed, epoch)), BackupAndRestore at epoch ends (weights + optimizer state + epoch).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras

import amp_tf  # noqa: F401  (registers AnchoredModel for load_model)
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--train-limit", "1536", "--epochs", "4", "--batch-size", "128", "--width", "8",
        "--skip-vanilla", "--eval-limit", "40", "--val-size", "100", "--num-anchors", "2",
        "--deterministic", "--verbose", "0", "--seed", "3"]


def _cmd(out):
    return [sys.executable, "-m", "trainers.fmnist", *ARGS, "--out", str(out)]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_is_exact(tmp_path):
    ref = subprocess.Popen(_cmd(tmp_path / "ref"), cwd=ROOT, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_cmd(tmp_path / "run"), cwd=ROOT, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = tmp_path / "run" / "anchored" / "backup" / "training_metadata.json"
    deadline = time.time() + 300
    try:
        while not meta.exists() and victim.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert meta.exists(), "the run never wrote a backup"
        time.sleep(0.4)  # into the next epoch
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(30) == -signal.SIGKILL, "the run finished before it could be killed"
    finally:
        if victim.poll() is None:
            victim.kill()
    assert not (tmp_path / "run" / "anchored.keras").exists()
    resumed = subprocess.run(_cmd(tmp_path / "run"), cwd=ROOT, env=_env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]
    a = keras.models.load_model(tmp_path / "ref" / "anchored.keras")
    b = keras.models.load_model(tmp_path / "run" / "anchored.keras")
    wa, wb = a.backbone.get_weights(), b.backbone.get_weights()
    assert len(wa) == len(wb) > 0
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)
    assert a.optimizer.iterations.numpy() == b.optimizer.iterations.numpy() == 4 * (1536 // 128)
