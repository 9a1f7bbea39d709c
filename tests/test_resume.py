"""Kill-and-resume: a SIGKILLed trainers.fmnist run, rerun with --resume, ends with the weights of an
uninterrupted one.

The kill is deterministic: the victim runs with AMP_TF_TEST_KILL_AFTER_BACKUP=1, which makes the
training function SIGKILL its own process right after the first epoch's backup is written (no
sleep races).

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
        "--skip-vanilla", "--finetune-epochs", "0", "--eval-limit", "40", "--val-size", "100", "--num-anchors", "2",
        "--deterministic", "--verbose", "0", "--seed", "3"]


def _cmd(out):
    return [sys.executable, "-m", "trainers.fmnist", *ARGS, "--out", str(out)]


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **extra)


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_is_exact(tmp_path):
    ref = subprocess.Popen(_cmd(tmp_path / "ref"), cwd=ROOT, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.run(_cmd(tmp_path / "run"), cwd=ROOT, env=_env(AMP_TF_TEST_KILL_AFTER_BACKUP="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    assert victim.returncode == -signal.SIGKILL, "the run was not killed after its first backup"
    partial = tmp_path / ".run.partial"
    assert (partial / "anchored" / "backup" / "training_metadata.json").exists()
    assert not (tmp_path / "run").exists()  # a killed run never looks finished
    rerun = subprocess.run(_cmd(tmp_path / "run"), cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 2 and "--resume" in rerun.stderr  # never silently resumed
    changed = subprocess.run(_cmd(tmp_path / "run") + ["--resume", "--lr", "0.05"], cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert changed.returncode == 2 and "['lr']" in changed.stderr  # settings must match
    assert not (tmp_path / "run" / "anchored.keras").exists()
    resumed = subprocess.run(_cmd(tmp_path / "run") + ["--resume"], cwd=ROOT, env=_env(), capture_output=True,
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
