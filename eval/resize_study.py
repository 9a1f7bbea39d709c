"""Resize study (the paper's Table 7): how the resize method of an OOD set changes OOD detection.

Thin shell: `python -m eval.resize_study --help`; the command lives in `amp_tf.cli.resize_study`.
"""

import sys

from amp_tf.cli.resize_study import main, parser  # noqa: F401

if __name__ == "__main__":
    main()
