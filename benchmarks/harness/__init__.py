"""The shared harness of the benchmarks: what every benchmark may import, and which imports no benchmark.

* `timing`: contenders timed in alternation (rotating order, medians);
* `machine`: the CPU, its vector extensions, contention, peak memory, versions;
* `results`: `--quick` defaults, the log, the atomic results JSON;
* `seed_cache`: a benchmark's per-seed results cache (resumable over sessions);
* `model_store`: trained models kept beside it (without optimizer state).

`ROOT` is the repository root. Importing the harness imports no TensorFlow.
"""

from pathlib import Path

#: The repository root (benchmarks/harness/ is two levels below it).
ROOT = Path(__file__).resolve().parents[2]
