"""Multi-worker training with two local worker processes on 127.0.0.1, and the Keras bug check."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "scripts" / "multiworker_worker.py"


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run_workers(out, extra_env=None, timeout=240):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                   PYTHONPATH=str(ROOT), **(extra_env or {}))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out)], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            results.append((p.returncode, stdout, stderr))
    finally:
        for p in procs:  # never leave a worker behind
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


@pytest.mark.slow
def test_multiworker_two_local_workers_identical_weights(tmp_path):
    results = _run_workers(tmp_path)
    for rc, out, err in results:
        assert rc == 0, err[-3000:]
    logs = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    assert all(np.isfinite(l["loss"]).all() for l in logs)
    w0 = np.load(tmp_path / "weights_0.npz")
    w1 = np.load(tmp_path / "weights_1.npz")
    assert len(w0.files) == len(w1.files) > 0
    for k in w0.files:
        np.testing.assert_array_equal(w0[k], w1[k])
    # each worker has its own BackupAndRestore / checkpoint folder; worker 0 (chief) writes run/
    assert (tmp_path / "run" / "checkpoints" / "last.keras").exists()
    assert (tmp_path / "run" / "worker1" / "checkpoints").exists()


@pytest.mark.slow
def test_keras_bug_20585_still_needs_workaround(tmp_path):
    """If this fails, Keras fixed #20585: delete amp_tf/compat.py and its call in training.py."""
    results = _run_workers(tmp_path, {"AMP_TF_NO_COMPAT_PATCH": "1"}, timeout=240)
    errs = "\n".join(err for _, _, err in results)
    assert any(rc != 0 for rc, _, _ in results)
    assert "PerReplica" in errs or "Invalid reduction dimension" in errs, errs[-2000:]
