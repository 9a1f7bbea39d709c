"""What every block of BENCHMARKS.md shares: the results folder, the groups, and the number formats.

Light on purpose: JSON only, no TensorFlow.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks.harness import ROOT
from benchmarks.page import verdicts

RESULTS = ROOT / "benchmarks" / "results"
GROUPS = ("near", "far", "covariate")
ALL = (*GROUPS, "overall")
#: A generated block: its marker line, then the lines up to the first blank line.
BLOCK = re.compile(r"^<!-- table: (?P<name>[\w-]+) -->\n(?P<body>(?:[^\n]*\S[^\n]*\n)*)", re.M)
#: Names of the scores in prose.
PRETTY = {"gram": "Gram", "react": "ReAct", "knn": "KNN", "mahalanobis": "Mahalanobis", "energy": "Energy",
          "odin": "ODIN", "msp": "MSP", "max_logit": "MaxLogit", "entropy": "Entropy",
          "temperature_scaling": "temperature scaling"}
LABEL = {"overall": "overall", "near": "near-OOD", "far": "far-OOD", "covariate": "covariate shift"}
VANILLA_BASELINES = [f"vanilla/{n}" for n in verdicts.LOGIT + verdicts.FEATURE]
FPR_HEAD = ["near FPR95", "far FPR95", "covariate FPR95", "overall FPR95", "overall AUROC ↑"]


def load(name, results=RESULTS):
    return json.loads((Path(results) / name).read_text())


def p(x, digits=1):
    """A fraction as a percentage."""
    return f"{100 * x:.{digits}f}"


def signed(v, digits=2):
    return f"{'−' if v < 0 else '+'}{abs(v):.{digits}f}"


def pm(e, digits=1):
    """`{"mean", "std"}` (fractions) as "m ± s" in %."""
    return f"{p(e['mean'], digits)} ± {p(e['std'], digits)}"


def short(row):
    return row.split("/", 1)[1]


def name(row):
    return PRETTY.get(short(row), short(row))


def share(x):
    """Other processes' share of the machine's CPU, as the tables print it."""
    return f"{100 * x:.0f} %" if x >= 0.01 else f"{100 * x:.1f} %"


def table(head, rows, align=None):
    align = align or ["--:"] * (len(head) - 1)
    return "\n".join(["| " + " | ".join(head) + " |", "|:--|" + "|".join(align) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def seeds(results=RESULTS):
    seeds = load("converged.json", results)["settings"]["seeds"]
    return [load(f"converged/seed{s}.json", results)["result"] for s in seeds]


def group_rows(res, labels, extra=None):
    """Rows of a group table: near / far / covariate / overall FPR95 and overall AUROC (mean ± std over
    seeds), the best of each column in bold among the rows that have every group."""
    g = res["groups"]
    full = [r for r in labels if all(x in g[r] for x in GROUPS)]
    best = {grp: min(full, key=lambda r: g[r][grp]["fpr95"]["mean"]) for grp in ALL}
    best["auroc"] = max(full, key=lambda r: g[r]["overall"]["auroc"]["mean"])

    def cell(r, grp, m="fpr95"):
        e = g[r].get(grp)
        if e is None:
            return "–"
        text = pm(e[m]) if g[r]["n_seeds"] > 1 else p(e[m]["mean"])
        return f"**{text}**" if best["auroc" if m == "auroc" else grp] == r else text

    return [[label] + [cell(r, grp) for grp in ALL] + [cell(r, "overall", "auroc")] + ([extra(r)] if extra else [])
            for r, label in labels.items()]
