"""The probe's outcome classes and its report (probe.json, probe.md).

* ``clear``: a correct answer: a clear error naming the problem (and the fix), early where it is a
  flag-only mistake (within 2 s, before TensorFlow is imported); or correct behaviour on valid input.
* ``late``: correct, but after work that was not needed (TensorFlow imported or data loaded before a
  flag-only check, more than 2 s for a check that needs nothing) or no answer in time.
* ``obscure``: a raw traceback, an internal Keras/TensorFlow/numpy message, an answer that does not
  name the flag / path / problem, a valid input refused, a conflicting flag silently ignored.
* ``wrong``: accepted silently (exit 0) with a wrong result, a mixed or half-written folder, a crash
  that loses work, a user's files modified or deleted, garbage numbers.

A case's `check` may decide (it returns ``(class, why)``), or return None to let the rules decide.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

CLASSES = ("clear", "late", "obscure", "wrong")
#: Texts of amp-tf's own checks: an error that carries one inside a TensorFlow error still names the problem.
OUR_TEXTS = ("amp-tf models take raw pixels", "images: expected", "contain NaN or Inf", "contain values above 255")
BUG_TYPES = ("AttributeError", "KeyError", "IndexError", "NameError", "UnboundLocalError", "ZeroDivisionError",
             "JSONDecodeError")
EARLY_S = 2.0


def _missing(names, text, ctx):
    text = text.lower()
    out = []
    for n in names:
        alts = [a.format(**ctx).lower() for a in str(n).split("|")]
        if not any(a in text for a in alts):
            out.append(n)
    return out


def classify(case, r, ctx):
    """``(class, why)`` of a case's result `r`."""
    if case.check is not None:
        try:
            verdict = case.check(ctx, r)
        except Exception as err:  # noqa: BLE001  (a check that cannot read the result: say so)
            verdict = ("obscure", f"the probe's check failed on this result: {type(err).__name__}: {err}")
        if verdict is not None:
            return verdict
    accepted = (r.get("exit") == 0) if case.kind != "lib" else not r.get("raised")
    if r.get("timeout"):
        return "late", f"no answer within {case.timeout:.0f} s (killed)"
    if r.get("crashed"):
        return "wrong", f"the process died: {r.get('answer', '')}"
    text = " ".join(str(r.get(k, "")) for k in ("answer", "message", "stderr_tail"))
    if case.expect == "error":
        if accepted:
            if r.get("ok") is True:
                return "clear", "accepted, and the result is correct"
            return "wrong", "accepted silently: " + (r.get("answer") or "exit 0")[:200]
        missing = _missing(case.names, str(r.get("answer", "")) + " " + str(r.get("message", "")), ctx)
        ours_inside = any(t in str(r.get("message", "")) for t in OUR_TEXTS)
        if (r.get("traceback") or r.get("foreign")) and not (ours_inside and not missing and r.get("exc_type") not in
                                                             BUG_TYPES):
            return "obscure", "a raw traceback / internal message"
        if missing:
            return "obscure", f"the answer does not name {missing}"
        if "[Errno" in str(r.get("answer", "")):
            return "obscure", "a raw OS error ([Errno ...]), not in our words"
        if case.early and r.get("tf"):
            return "late", "TensorFlow was imported before a flag-only check"
        if case.early and r["seconds"] > EARLY_S:
            return "late", f"{r['seconds']:.1f} s for a flag-only check"
        if case.max_s and r["seconds"] > case.max_s:
            return "late", f"{r['seconds']:.1f} s (> {case.max_s:.0f} s) before the answer"
        if "error" in text.lower() and "Traceback" in text:
            return "obscure", "a traceback in the output"
        if (r.get("traceback") or r.get("foreign")) and ours_inside:
            return "clear", "amp-tf's message, inside a TensorFlow error"
        return "clear", ""
    if not accepted and case.expect == "either":
        if r.get("traceback") or r.get("foreign"):
            return "obscure", "a raw traceback / internal message"
        missing = _missing(case.names, str(r.get("answer", "")) + " " + str(r.get("message", "")), ctx)
        return ("obscure", f"the answer does not name {missing}") if missing else ("clear", "refused clearly")
    if not accepted:
        if r.get("traceback") or r.get("foreign"):
            return "wrong", "a valid input crashed with a raw traceback"
        return "obscure", "a valid input was refused"
    if r.get("ok") is False:
        return "wrong", "accepted, but the result is wrong: " + str(r.get("answer", ""))[:200]
    if case.max_s and r["seconds"] > case.max_s:
        return "late", f"{r['seconds']:.1f} s (> {case.max_s:.0f} s)"
    return "clear", ""


def summary(results):
    counts = {c: sum(1 for r in results if r["outcome"] == c) for c in CLASSES}
    return {"cases": len(results), "new": sum(1 for r in results if r["new"]), **counts,
            "late_or_obscure": counts["late"] + counts["obscure"]}


def _cell(text, n=160):
    text = " ".join(str(text or "").split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 3] + "..."


def write(results, out_json, started, extra=None):
    """Writes probe.json and probe.md (beside it)."""
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    s = summary(results)
    keep = ("id", "door", "input", "new", "row", "kind", "expect", "outcome", "why", "seconds", "exit", "tf",
            "answer", "cmd", "stderr_tail", "exc_type", "origin")
    doc = {"summary": s, "runtime_s": round(time.time() - started, 1), **(extra or {}),
           "cases": [{k: r.get(k) for k in keep if k in r} for r in results]}
    out_json.write_text(portable(json.dumps(doc, indent=1, default=str)) + "\n")
    lines = [
        "# Input-contract probe (issue 30)", "",
        f"`python -m benchmarks.contract.probe --out {out_json}`: {s['cases']} cases ({s['new']} new: not rows of "
        f"docs/bad_inputs.md), {doc['runtime_s']:.0f} s.", "",
        "| clear | late | obscure | wrong |", "|---:|---:|---:|---:|",
        f"| {s['clear']} | {s['late']} | {s['obscure']} | {s['wrong']} |", "",
    ]
    bad = [r for r in results if r["outcome"] != "clear"]
    if bad:
        lines += ["## Not clear", "", "| case | door | input | outcome | why | first line of the answer |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['id']} | {_cell(r['door'], 40)} | {_cell(r['input'], 100)} | **{r['outcome']}** | "
                  f"{_cell(r.get('why'), 120)} | {_cell(r.get('answer'), 200)} |" for r in bad]
        lines.append("")
    lines += ["## Every case", "", "| case | door | input | new | outcome | seconds | first line of the answer |",
              "|---|---|---|:-:|---|---:|---|"]
    lines += [f"| {r['id']} | {_cell(r['door'], 40)} | {_cell(r['input'], 110)} | {'new' if r['new'] else r.get('row')}"
              f" | {r['outcome']} | {r.get('seconds', 0):.1f} | {_cell(r.get('answer'), 180)} |" for r in results]
    out_json.with_suffix(".md").write_text(portable("\n".join(lines)) + "\n")
    return s


def portable(text):
    """`text` without this machine's paths: the probe's temporary workspace is `<tmp>`, the checkout `<repo>`."""
    import re

    from benchmarks.harness import ROOT

    text = re.sub(r"/tmp/amp-probe-[A-Za-z0-9_]+", "<tmp>", text)
    text = re.sub(r"/tmp/[A-Za-z0-9_.-]*", "<tmp>", text)  # any other temporary path, or one cut off by a limit
    return text.replace(str(ROOT), "<repo>").replace(str(Path.home()) + "/", "~/")  # the home folder: ~
