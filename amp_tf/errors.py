"""How a command answers a user error: one ``error: <message>`` line and exit code 2.

Shared by the CLIs (`amp_tf.cli`) and the benchmarks; no TensorFlow, no argparse.

Example:

>>> @cli_errors
... def main(argv=None):
...     raise ValueError("--epochs: expected an int >= 1, got 0.")
>>> main([])                                   # doctest: +SKIP
error: --epochs: expected an int >= 1, got 0.
"""

from __future__ import annotations

import functools
import os
import sys


def cli_errors(main):
    """Wraps a command's `main(argv=None)`: user errors (ValueError, OSError incl.
    DataNotFoundError) print ``error: <message>`` to stderr and exit with code 2,
    without a traceback. Set AMP_TF_DEBUG=1 to get the traceback instead."""

    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            return main(argv)
        except (ValueError, OSError) as err:
            if os.environ.get("AMP_TF_DEBUG"):
                raise
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapped


def first_line(err):
    """The first line of an exception's message (its type name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
