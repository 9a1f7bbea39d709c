"""amp-tf benchmarks: one shared harness, one module per benchmark.

Run every benchmark as a module from the repository root (amp_tf installed,
or the root on PYTHONPATH):

    python -m benchmarks.speed --quick          # anchored training / AMP inference speed
    python -m benchmarks.peer_speed --quick     # amp-tf vs a PyTorch reference, step profile
    python -m benchmarks.ood_quality --quick    # OOD quality: AMP vs the baselines, over seeds
    python -m benchmarks.anchor_strategies --quick
    python -m benchmarks.converged --quick      # section 1 on converged models, resumable per seed
    python -m benchmarks.validate_models runs/x/anchored.keras

`python benchmarks/speed.py` (a path) stops with a one-line message naming the
`-m` command: the modules import each other as `benchmarks.<name>`.

Layout: `harness` (timing, machine info and contention, result JSON), then per
benchmark a CLI module (`speed`, `peer_speed`, `ood_quality`, ...) and modules by
concern (`speed_core`, `speed_report`, `peer_models`, `peer_torch`, `ood_runs`,
`ood_report`, `seed_cache`, `converged_pilot`, ...). Importing the package imports no TensorFlow.
"""

import os

# Before any module of the package imports TensorFlow (they all come after this file).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
