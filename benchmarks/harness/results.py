"""What a benchmark's command shares around its measurements: `--quick` defaults, the log, the results file.

`parse_quick` (the `--quick` settings as defaults, explicit flags still override), `check_k`
(K anchors, checked where the library checks it),
`ints` ("1,2,5" flags), `Log` for a benchmark's `main` (which answers user errors
with `amp_tf.errors.cli_errors`, as the CLIs do), `write_json` (atomic), `round_floats` (a
large results file kept small).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def _json_default(o):
    if hasattr(o, "item") and getattr(o, "ndim", None) == 0:  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):  # arrays
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def round_floats(obj, digits=6):
    """`obj` with every float rounded to `digits` significant digits (dicts, lists and tuples walked).

    >>> round_floats({"a": [0.123456789, 2], "b": 1e-9 / 3})
    {'a': [0.123457, 2], 'b': 3.33333e-10}
    """
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    return obj


def write_json(path, obj, indent=2):
    """Writes `obj` as JSON (indented unless `indent=None`), atomically (a temporary file, then a rename).

    NumPy scalars and arrays become numbers and lists, paths strings.

    Example:

    >>> import json, tempfile, numpy as np
    >>> p = Path(tempfile.mkdtemp()) / "sub" / "r.json"
    >>> write_json(p, {"x": np.float32(0.5), "n": np.int64(3)})
    >>> json.loads(p.read_text())
    {'x': 0.5, 'n': 3}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent, default=_json_default))
    os.replace(tmp, path)


class Log:
    """Prints a line at once (flushed), prefixed by `[name <seconds since t0> s]` when named.

    `t0`: a `time.time()` to count from (default: now).
    """

    def __init__(self, name=None, width=7, t0=None):
        self.name, self.width, self.t0 = name, width, time.time() if t0 is None else t0

    def __call__(self, msg):
        if self.name:
            msg = f"[{self.name} {time.time() - self.t0:{self.width}.0f} s] {msg}"
        print(msg, flush=True)


def ints(text):
    """'1, 2,5' -> [1, 2, 5]."""
    return [int(v) for v in str(text).replace(" ", "").split(",") if v]


def parse_quick(parser, argv, quick):
    """`(args, argv)`: `argv` (None: the command line) parsed with `quick` as the defaults when
    `--quick` is given, so explicit flags still override the quick settings."""
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    if "--quick" in argv:
        parser.set_defaults(**quick)
    return parser.parse_args(argv), argv


def check_k(parser, k, flag):
    """`k` as an int, or `parser.error` naming `flag`: AMP's K >= 2 (`amp_tf.recipe.check_num_anchors`, the one
    home of the check; light, no TensorFlow)."""
    from amp_tf.recipe import check_num_anchors

    try:
        return check_num_anchors(k, flag)
    except ValueError as e:
        parser.error(str(e))
