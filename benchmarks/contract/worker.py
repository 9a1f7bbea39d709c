"""A worker process of the probe: runs the library cases of one group in-process (one TensorFlow
import for many cases) and writes one JSON line per case.

    python -m benchmarks.contract.worker GROUP CTX.json OUT.jsonl ID [ID ...]

Each case writes ``{"start": id}`` first, so that the parent can name a case that crashed or hung
the process.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

#: Exception types that are bugs wherever they come from (never a user-facing answer).
BUG_TYPES = ("AttributeError", "KeyError", "IndexError", "NameError", "UnboundLocalError", "AssertionError",
             "ZeroDivisionError", "RecursionError", "NotImplementedError", "JSONDecodeError", "UnicodeDecodeError",
             "StopIteration", "OverflowError")
#: Packages whose own exceptions (or a raise inside them) are internal messages to an amp-tf user.
FOREIGN = ("keras", "tensorflow", "numpy", "PIL", "absl", "google", "ml_dtypes", "h5py", "zipfile", "json",
           "keras_tuner", "tensorflow_datasets")


def describe(err):
    """The record of an exception: type, message, where it was raised, whether it is ours."""
    tb = traceback.extract_tb(err.__traceback__)
    origin = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
    mod = type(err).__module__ or ""
    ours = "/amp_tf/" in origin or "/examples/" in origin or "/benchmarks/contract/" in origin
    foreign = (mod.split(".")[0] in FOREIGN) or not ours or type(err).__name__ in BUG_TYPES
    msg = str(err).strip()
    first = msg.splitlines()[0] if msg else ""
    return {"raised": True, "exc_type": type(err).__name__, "exc_module": mod, "origin": origin,
            "foreign": foreign, "answer": f"{type(err).__name__}: {first}"[:600],
            "message": msg if len(msg) <= 4000 else msg[:2000] + " ... " + msg[-2000:],
            "traceback": foreign, "trace": "".join(traceback.format_exception(err))[-2500:]}


def run_case(case, ctx):
    t0 = time.time()
    try:
        value = case.fn(ctx)
    except BaseException as err:  # noqa: BLE001  (the answer is what we record)
        if isinstance(err, KeyboardInterrupt):
            raise
        rec = describe(err)
    else:
        rec = {"raised": False, "foreign": False, "traceback": False}
        if isinstance(value, dict) and "exit" in value:  # a command run in-process (libkit.run_example)
            rec.update(raised=value["exit"] != 0, exit=value["exit"], answer=str(value["answer"])[:600],
                       traceback=bool(value.get("traceback")), foreign=bool(value.get("traceback")),
                       stdout=value.get("stdout", ""))
        elif isinstance(value, dict) and "ok" in value:
            rec.update(ok=bool(value["ok"]), answer=str(value.get("note", ""))[:600])
        else:
            rec.update(ok=None, answer=str(value)[:600] if value is not None else "returned")
    rec["seconds"] = round(time.time() - t0, 2)
    rec["id"] = case.id
    return rec


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    group, ctx_path, out_path, ids = argv[0], argv[1], argv[2], set(argv[3:])
    from benchmarks.contract import probe

    cases = [c for c in probe.all_cases() if c.kind == "lib" and c.group == group and c.id in ids]
    ctx = json.loads(Path(ctx_path).read_text())
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    with open(out_path, "a") as out:
        for case in cases:
            out.write(json.dumps({"start": case.id}) + "\n")
            out.flush()
            rec = run_case(case, ctx)
            out.write(json.dumps(rec, default=str) + "\n")
            out.flush()
            print(f"[worker {group}] {case.id}: {rec['seconds']} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
