"""CIFAR-10 / CIFAR-100 with the paper's recipe: anchored training, then AMP on the OOD suite.

Thin shell: `python -m trainers.cifar --help`; the command lives in `amp_tf.cli.cifar`.
"""

import sys

from amp_tf.cli.cifar import main, parser  # noqa: F401  (parser: for --help tooling and tests)

if __name__ == "__main__":
    sys.exit(0 if main() else 1)
