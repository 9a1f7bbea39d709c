"""ImageNet-1k with the paper's recipe: anchored ResNet-50, streaming tf.data input.

Thin shell: `python -m trainers.imagenet --help`; the command lives in `amp_tf.cli.imagenet`.
"""

import sys

from amp_tf.cli.imagenet import main, parser  # noqa: F401  (parser: for --help tooling and tests)

if __name__ == "__main__":
    sys.exit(0 if main() else 1)
