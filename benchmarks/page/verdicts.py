"""The verdicts of the benchmarks: the shipped score against the best baseline of each group, then AMP alone.

The shipped score is the row validation selected (`selection.shipped` of a results JSON: the lowest
validation FPR95 among every anchored candidate, as `amp_tf.detection.detectors.select_detector` chooses; for
runs that measured AMP variants only, the selected variant). Each verdict is a rule on the test groups' mean FPR95 (`res["groups"]` of a results JSON written
by `benchmarks.quality.ood_report`: `benchmarks.quality.ood`, `benchmarks.quality.converged`), so the answer
is computed the same way for both runs, never read off by eye:

    python -m benchmarks.page.verdicts benchmarks/results/ood_protocol.json benchmarks/results/converged.json

prints two markdown tables: each verdict, whether it holds in each run, and the numbers it rests on;
then every row's FPR95 per test group, the runs side by side.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # python benchmarks/page/verdicts.py
    sys.exit("run it as a module from the repository root: python -m benchmarks.page.verdicts")

from benchmarks.quality.ood_report import shipped_row  # noqa: E402

LOGIT = ("msp", "energy", "odin", "max_logit", "entropy", "temperature_scaling", "react")
FEATURE = ("knn", "mahalanobis", "gram")
#: "level" means within this many FPR95 points.
LEVEL = 2.0


def fpr(res, row, group):
    """Mean FPR95 (%) of `row` (e.g. "anchored/amp") on `group` (near, far, covariate, overall); None if absent."""
    g = res.get("groups", {}).get(row, {}).get(group)
    return None if g is None else 100 * g["fpr95"]["mean"]


def best(res, rows, group):
    """(row, FPR95) of the lowest mean FPR95 among `rows` present in `res`."""
    got = [(r, fpr(res, r, group)) for r in rows]
    got = [(r, v) for r, v in got if v is not None]
    return min(got, key=lambda rv: rv[1]) if got else (None, None)


def fpr_std(res, row, group):
    """The seed standard deviation (%) of `row`'s mean FPR95 on `group` (0 for one seed)."""
    g = res.get("groups", {}).get(row, {}).get(group)
    return 0.0 if g is None else 100 * g["fpr95"].get("std", 0.0)


def _shipped_vs_best(res, group):
    """The shipped score at or below the best vanilla baseline (logit or feature score) of `group`, within
    one seed standard deviation of the two."""
    row = shipped_row(res)
    s, (name, other) = fpr(res, row, group), best(res, [f"vanilla/{n}" for n in LOGIT + FEATURE], group)
    if s is None or other is None:
        return None, "–"
    sd = max(fpr_std(res, row, group), fpr_std(res, name, group))
    return s <= other + sd, f"{row.split('/')[-1]} {s:.1f} vs {name.split('/')[-1]} {other:.1f} (seed std {sd:.1f})"


def _shipped_vs_logits(res, group):
    row = shipped_row(res)
    s, (name, other) = fpr(res, row, group), best(res, [f"vanilla/{n}" for n in LOGIT], group)
    if s is None or other is None:
        return None, "–"
    return s < other, f"{row.split('/')[-1]} {s:.1f} vs {name.split('/')[-1]} {other:.1f}"


def _vs(res, group, rows, win):
    amp, (name, other) = fpr(res, "anchored/amp", group), best(res, rows, group)
    if amp is None or other is None:
        return None, "–"
    return win(amp, other), f"amp {amp:.1f} vs {name.split('/')[-1]} {other:.1f}"


def _selected(res):
    sel = ((res.get("selection") or {}).get("variant") or {}).get("selected")
    a, s = fpr(res, "anchored/amp", "overall"), fpr(res, f"anchored/{sel}", "overall")
    if sel is None or a is None or s is None:
        return None, "–"
    if sel == "amp":
        return False, "validation selects amp itself"
    return s > a, f"{sel} {s:.1f} vs amp {a:.1f}"


def _features(res):
    a = fpr(res, "anchored/amp", "overall")
    got = {n: fpr(res, f"vanilla/{n}", "overall") for n in FEATURE}
    if a is None or None in got.values():
        return None, "–"
    return all(v < a for v in got.values()), f"amp {a:.1f}; " + ", ".join(f"{n} {v:.1f}" for n, v in got.items())


def _anchored_features(res):
    rows = [r for r in ("anchored/amp+mahalanobis", "anchored/mahalanobis") if fpr(res, r, "overall") is not None]
    van = fpr(res, "vanilla/mahalanobis", "overall")
    if not rows or van is None:
        return None, "–"
    name, v = best(res, rows, "overall")
    return v < van, f"{name.split('/')[-1]} {v:.1f} vs vanilla mahalanobis {van:.1f}"


VERDICTS = (
    *((f"the shipped score is at or below the best vanilla baseline on {g} (within one seed std)",
       lambda r, g=g: _shipped_vs_best(r, g)) for g in ("overall", "near", "far", "covariate")),
    ("the shipped score beats every logit score of its vanilla twin overall",
     lambda r: _shipped_vs_logits(r, "overall")),
    ("AMP beats every logit score of its vanilla twin overall",
     lambda r: _vs(r, "overall", [f"vanilla/{n}" for n in LOGIT], lambda a, o: a < o)),
    ("AMP beats every logit score on far-OOD",
     lambda r: _vs(r, "far", [f"vanilla/{n}" for n in LOGIT], lambda a, o: a < o)),
    ("AMP loses near-OOD to the best logit score",
     lambda r: _vs(r, "near", [f"vanilla/{n}" for n in LOGIT], lambda a, o: a > o)),
    (f"AMP is level (within {LEVEL:g} points) with the best logit score on covariate shift",
     lambda r: _vs(r, "covariate", [f"vanilla/{n}" for n in LOGIT], lambda a, o: abs(a - o) <= LEVEL)),
    ("the AMP variant selected on validation is worse on the test groups than the default amp", _selected),
    ("Gram, Mahalanobis and KNN each beat AMP overall", _features),
    ("the anchored model's Mahalanobis (alone or with AMP) beats the vanilla Mahalanobis overall",
     _anchored_features),
)


def check(res):
    """`[(verdict, holds: True / False / None when the run lacks the rows, evidence)]`."""
    return [(text, *rule(res)) for text, rule in VERDICTS]


def table(named_results):
    """Markdown: one row per verdict, one column per run (`{name: results}`)."""
    checked = {n: check(r) for n, r in named_results.items()}
    mark = {True: "holds", False: "does not hold", None: "not measured"}
    lines = ["| verdict | " + " | ".join(named_results) + " |", "|:--|" + ":--|" * len(named_results)]
    for i, (text, *_rest) in enumerate(VERDICTS):
        cells = [f"{mark[c[i][1]]} ({c[i][2]})" if c[i][1] is not None else mark[None] for c in checked.values()]
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def side_by_side(named_results, groups=("near", "far", "covariate", "overall")):
    """Markdown: the mean FPR95 of every row present in any run, per group, one column per run and group."""
    rows = list(dict.fromkeys(r for res in named_results.values() for r in res.get("groups", {})))
    head = [f"{g} ({n})" for g in groups for n in named_results]
    lines = ["| model/score | " + " | ".join(head) + " |", "|:--|" + "--:|" * len(head)]
    for r in rows:
        cells = [fpr(res, r, g) for g in groups for res in named_results.values()]
        lines.append(f"| {r} | " + " | ".join("–" if v is None else f"{v:.1f}" for v in cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.page.verdicts", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="results JSON files (benchmarks/results/*.json)")
    args = p.parse_args(argv)
    missing = [str(f) for f in args.results if not f.is_file()]
    if missing:
        p.error(f"no such results file: {', '.join(missing)}")
    runs = {f.stem: json.loads(f.read_text()) for f in args.results}
    print(table(runs) + "\n\nFPR95 (%) of each test group, mean over seeds:\n\n" + side_by_side(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
