"""Hyper-parameter search with KerasTuner for anchored training: T, its schedule, lr, width.

Thin shell: `python -m trainers.tune --help`; the command lives in `amp_tf.cli.tune`.
"""

import sys

from amp_tf.cli.tune import main, parser  # noqa: F401  (parser: for --help tooling and tests)

if __name__ == "__main__":
    sys.exit(0 if main() else 1)
