"""Short functions (issue 19): no function in amp_tf/ over 80 lines, at most 5 over 60; short files
(issue 31): no .py file in amp_tf/ over 450 lines.

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


FILE_LIMIT = 450


def file_lengths(root=PACKAGE):
    """``{"amp_tf/path.py": lines}`` of every .py file under `root`."""
    return {f.relative_to(root.parent).as_posix(): len(f.read_text(encoding="utf-8").splitlines())
            for f in sorted(root.rglob("*.py"))}


def test_file_lengths_are_measured(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n" * (FILE_LIMIT + 1))
    (tmp_path / "pkg" / "b.py").write_text("y = 2\n")
    lengths = file_lengths(tmp_path / "pkg")
    assert lengths == {"pkg/a.py": FILE_LIMIT + 1, "pkg/b.py": 1}
    assert [k for k, n in lengths.items() if n > FILE_LIMIT] == ["pkg/a.py"]  # the check below can fail


def test_no_long_files():
    """No module of amp_tf/ over 450 lines (issue 31): split a long one by concern, within its layer."""
    lengths = file_lengths()
    assert len(lengths) > 50
    too_long = {k: n for k, n in lengths.items() if n > FILE_LIMIT}
    assert not too_long, f"files over {FILE_LIMIT} lines (split them by concern, in the same layer): {too_long}"
