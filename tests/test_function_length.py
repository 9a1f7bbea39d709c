"""Short functions (issue 19): no function in amp_tf/ over 80 lines, at most 5 over 60.

A function's length is ``end_lineno - lineno + 1`` of its ``def`` (docstring and
nested functions included), read with `ast`: no TensorFlow, no import of amp_tf.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "amp_tf"
HARD_LIMIT = 80
SOFT_LIMIT = 60
MAX_OVER_SOFT = 5


def function_lengths(root=PACKAGE):
    """``{"path::Class.method": lines}`` of every function and method under `root`."""
    out = {}

    def walk(node, path, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                out[f"{path}::{name}"] = child.end_lineno - child.lineno + 1
                walk(child, path, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, path, f"{prefix}{child.name}.")
            else:
                walk(child, path, prefix)

    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root.parent).as_posix()
        walk(ast.parse(file.read_text(encoding="utf-8"), filename=str(file)), rel, "")
    return out


def test_lengths_are_measured():
    lengths = function_lengths()
    assert lengths["amp_tf/recipe.py::as_dict"] == 5
    assert len(lengths) > 300


def test_no_long_functions():
    lengths = function_lengths()
    too_long = {k: n for k, n in lengths.items() if n > HARD_LIMIT}
    long_ = {k: n for k, n in lengths.items() if n > SOFT_LIMIT}
    assert not too_long, f"functions over {HARD_LIMIT} lines: {too_long}"
    assert len(long_) <= MAX_OVER_SOFT, f"{len(long_)} functions over {SOFT_LIMIT} lines (at most {MAX_OVER_SOFT}): {long_}"
