"""amp-tf benchmarks, in layers: a shared harness, speed, quality, and the results page.

Run every benchmark as a module from the repository root (amp_tf installed,
or the root on PYTHONPATH):

    python -m benchmarks.speed --quick                     # anchored training / AMP inference speed
    python -m benchmarks.speed.peer --quick                # amp-tf vs a PyTorch reference, step profile
    python -m benchmarks.speed.against --against REV       # this revision vs REV, side by side
    python -m benchmarks.quality.ood --quick               # OOD quality: AMP vs the baselines, over seeds
    python -m benchmarks.quality.converged --quick         # section 1 on converged models, resumable per seed
    python -m benchmarks.quality.anchor_strategies --quick
    python -m benchmarks.quality.validate_models runs/x/anchored.keras
    python -m benchmarks.page --check                      # BENCHMARKS.md's tables match benchmarks/results/

`python benchmarks/speed/main.py` (a path) stops with a one-line message naming the
`-m` command: the modules import each other as `benchmarks.<layer>.<name>`.

Layers (tests/test_benchmarks_layers.py):

* `benchmarks.harness`: timing, machine info and contention, results JSON, the per-seed
  cache and model store; imports no other benchmark module;
* `benchmarks.speed` and `benchmarks.quality`: one CLI module per benchmark and modules
  by concern; each imports the harness, never the other;
* `benchmarks.page`: BENCHMARKS.md's tables and the verdicts, from the results files of both.

Every command parses its flags before TensorFlow is imported (`--help` answers at once);
importing the package imports no TensorFlow.
"""

import os

# Before any module of the package imports TensorFlow (they all come after this file).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
