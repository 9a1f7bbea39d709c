"""Score a saved model on an ID set and OOD sets; write the report and plots.

Thin shell: `python -m eval.ood --help`; the command lives in `amp_tf.cli.ood`.
"""

import sys

from amp_tf.cli.ood import main, parser  # noqa: F401

if __name__ == "__main__":
    main()
