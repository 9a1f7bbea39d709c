"""The main job, offline: Fashion-MNIST, AMP vs the standard scores.

Thin shell: `python -m trainers.fmnist --help`; the command lives in `amp_tf.cli.fmnist`.
"""

import sys

from amp_tf.cli.fmnist import main, parser  # noqa: F401  (parser: for --help tooling and tests)

if __name__ == "__main__":
    sys.exit(0 if main() else 1)
