"""The probe's case record and registry (pure Python: no TensorFlow, no numpy).

A case is one input at one door. `kind` says how it runs:

* ``cli``: a subprocess (``python -X importtime <argv>``, cwd a fresh case folder), `argv`
  formatted with the workspace's placeholders (``{ws}``, ``{run}``, ``{m}``, ``{img}``, ``{d}``, ...);
* ``lib``: a function ``fn(ctx)`` run in a worker process of its `group` (one TensorFlow import
  per group); it raises (the answer) or returns (accepted: a string, or ``{"ok": bool, "note": str}``);
* ``custom``: a function ``fn(ctx, d)`` run in the parent that returns a result dict itself
  (two processes on one --out, Ctrl-C, a full disk).

`expect` is ``error`` (the input is a mistake: a clear answer is expected) or ``ok`` (valid but
unusual: correct behaviour is expected). `names` are texts the answer must hold (each item may list
alternatives joined by ``|``); `early` marks a flag-only mistake (answer within 2 s, before
TensorFlow is imported). `row` is the row of docs/bad_inputs.md the case repeats (then ``new`` is
False).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

CASES: list = []


@dataclasses.dataclass
class Case:
    id: str
    door: str
    input: str
    new: bool = True
    kind: str = "cli"
    argv: list = dataclasses.field(default_factory=list)
    expect: str = "error"
    names: tuple = ()
    early: bool = False
    max_s: float | None = None
    setup: Callable | None = None
    check: Callable | None = None
    timeout: float = 150.0
    group: str | None = None
    fn: Callable | None = None
    row: int | None = None
    needs: tuple = ()
    heavy: bool = False
    note: str = ""

    def __post_init__(self):
        if self.row is not None:
            self.new = False


def add(**kw):
    """Registers a case (ids are unique)."""
    c = Case(**kw)
    if any(x.id == c.id for x in CASES):
        raise ValueError(f"duplicate case id {c.id}")
    CASES.append(c)
    return c


def cli(id, door, argv, input, **kw):
    """A command-line case: `argv` after ``python -X importtime`` (``-m module ...`` or ``script ...``)."""
    return add(id=id, door=door, argv=list(argv), input=input, kind="cli", **kw)


def lib(group, door, input, **kw):
    """Decorator: the function is a library case of worker `group` (its name is the case id)."""
    def deco(fn):
        add(id=kw.pop("id", f"{group}-" + fn.__name__.replace("_", "-")), door=door, input=input, kind="lib", group=group,
            fn=fn, **kw)
        return fn
    return deco


def custom(door, input, **kw):
    """Decorator: the function ``fn(ctx, d)`` is a parent-side case returning its result dict."""
    def deco(fn):
        add(id=kw.pop("id", fn.__name__.replace("_", "-")), door=door, input=input, kind="custom", fn=fn, **kw)
        return fn
    return deco


#: Flags that keep a trainers.fmnist run tiny (about 20 s on 2 cores).
FAST = ["--epochs", "1", "--train-limit", "256", "--eval-limit", "64", "--val-size", "64", "--batch-size", "64",
        "--width", "4", "--verbose", "0", "--no-plots"]
#: The same for eval.ood / eval.resize_study.
EVAL_FAST = ["--eval-limit", "64", "--train-limit", "256", "--no-plots", "--verbose", "1"]
