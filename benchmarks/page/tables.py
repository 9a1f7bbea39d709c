"""The tables of BENCHMARKS.md, generated from the committed results files under `benchmarks/results/`.

BENCHMARKS.md is written by hand except its marked blocks: the lines after a line
``<!-- table: NAME -->``, up to the first blank line, are what `render(NAME)` returns from the committed
JSON, so every figure in a table (and in the setup and machine line above it) comes from a results
file. `tests/test_benchmarks_doc.py` checks that the file holds exactly that:

    python -m benchmarks.page            # print every block
    python -m benchmarks.page --check    # exit 1 (and name the blocks) if BENCHMARKS.md differs
    python -m benchmarks.page --write    # rewrite the marked blocks of BENCHMARKS.md in place

Light on purpose: JSON and the verdict rules of `benchmarks.page.verdicts`, no TensorFlow.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from statistics import mean, stdev

from benchmarks.harness import ROOT
from benchmarks.page import verdicts
from benchmarks.quality.ood_report import shipped_row
from benchmarks.speed.targets import verdict

from benchmarks.page.fmt import (  # noqa: F401  (the shared formats, under their names here)
    ALL, BLOCK, FPR_HEAD, GROUPS, LABEL, PRETTY, RESULTS, VANILLA_BASELINES, load, p as _p, signed as _signed,
    pm as _pm, short as _short, name as _name, share as _share, table as _table, seeds as _seeds,
    group_rows as _group_rows,
)
from benchmarks.page.converged import (  # noqa: F401  (section 1's blocks)
    HEADLINE_VERDICTS, converged_accuracy, converged_groups, converged_headline, converged_selection,
    converged_setup, converged_verdict, verdict_table,
)

DOC = ROOT / "BENCHMARKS.md"

#: The rows of the reduced-scale table besides the selected AMP variant (every row: ood_protocol.md).
PROTOCOL_ROWS = ("anchored/amp", "anchored/amp[sum,exp]", "vanilla/msp", "vanilla/energy", "vanilla/entropy",
                 "vanilla/react", "vanilla/knn", "vanilla/mahalanobis", "vanilla/gram")


def protocol_setup(results=RESULTS):
    res = load("ood_protocol.json", results)
    st, m, mach, draws = res["settings"], res["models"], res["machine"], res["anchor_draws"]["draws"]
    acc = {k: f"{_p(m[k]['id_accuracy_mean'], 2)} ± {_p(m[k]['id_accuracy_std'], 2)}" for k in ("anchored", "vanilla")}
    return (f"`{st['arch']}` width {st['width']}, {st['train_limit']:,} training images per model, vanilla twin "
            f"{st['epochs']} epochs, anchored model fine-tuned from it {st['finetune_epochs']} epoch{'' if st['finetune_epochs'] == 1 else 's'}; K = "
            f"{st['num_anchors']}; {st['eval_limit']} images per ID / OOD set; fitted baselines on {st['fit_limit']:,} "
            f"images; {st['num_seeds']} training seeds; anchor spread = std of overall FPR95 over "
            f"{draws if isinstance(draws, int) else len(draws)} anchor draws on the seed-0 model. ID accuracy: "
            f"anchored {acc['anchored']}, vanilla {acc['vanilla']}, {m['ensemble']['members']}-model ensemble "
            f"{_p(m['ensemble']['id_accuracy_mean'], 2)}. Machine: {mach['cpu_model']}, {mach['cpu_count']} cores; "
            f"{res['wall_time_s'] / 60:.1f} min.")


def protocol_groups(results=RESULTS):
    res = load("ood_protocol.json", results)
    ship, spread = shipped_row(res), res["anchor_draws"]["summary"]
    rows = [ship] + [r for r in PROTOCOL_ROWS if r != ship and r in res["groups"]]
    labels = {r: (f"**{r} (selected on validation)**" if r == ship else r) for r in rows}

    def sp(r):
        s = spread.get(_short(r)) if r.startswith("anchored/") else None
        return "–" if s is None else _p(s["fpr95_std"])

    return _table(["model/score", *FPR_HEAD, "anchor spread"], _group_rows(res, labels, sp))


def features_setup(results=RESULTS):
    res = load("anchored_features.json", results)
    st, ft, info = res["settings"], res["settings"]["finetune"], res["info"]
    acc = {m: [100 * i[f"{m}_test_acc"] for i in info.values()] for m in ("anchored", "vanilla")}
    acc = {m: f"{mean(v):.2f} ± {stdev(v):.2f}" for m, v in acc.items()}
    return (f"`resnet_small` width {ft['width']}, all 55,000 training images, vanilla twin 2 epochs, anchored model "
            f"fine-tuned from it {ft['epochs']} epochs at lr {ft['lr']:g} ({ft['consistency_mode'].replace('_', '-')} "
            f"T, {ft['weight_decay_mode']} weight decay); {len(res['seeds'])} seeds; K = {st['num_anchors']}; "
            f"{st['eval_limit']:,} images per ID / OOD test set; validation: {st['val_ood_size']:,} ID validation "
            f"images against the validation OOD sets; KNN / Mahalanobis fitted on {st['fit_limit']:,} training "
            f"images. ID accuracy ({st['eval_limit']:,} test images): anchored {acc['anchored']}, vanilla "
            f"{acc['vanilla']}. Machine: {res['cpu']}, {res['cores']} cores; {res['wall_time_s'] / 60:.1f} min.")


def features_table(results=RESULTS):
    res = load("anchored_features.json", results)
    val, test, sel = res["summary"]["validation"], res["summary"]["test_groups"], res["summary"]["selected"]
    keys = sorted((k for k in val if not re.search(r"\[w=(0|1)\]$", k)), key=lambda k: val[k]["fpr95"])
    rows = [[f"**{k} (selected)**" if k == sel else k, f"{val[k]['fpr95']:.1f} ± {val[k]['fpr95_sd']:.1f}"]
            + [_pm(test[k][grp]["fpr95"]) for grp in ALL] + [_pm(test[k]["overall"]["auroc"])] for k in keys]
    return _table(["model/score", "validation-OOD FPR95", *FPR_HEAD], rows)


def finetune_setup(results=RESULTS):
    res = load("finetune_select.json", results)
    return (f"Seeds {', '.join(map(str, res['seeds']))}; validation: the 5,000 ID validation images (accuracy) and "
            f"the validation OOD sets (FPR95); test accuracy on all 10,000 test images. Machine: {res['cpu']}, "
            f"{res['cores']} cores, shared with other jobs (no times quoted).")


def finetune_table(results=RESULTS):
    res, rows = load("finetune_select.json", results), []
    for r in res["table"]:
        mode, ep, lr = r["setting"].split(":")
        label = {"official": "official T", "per_sample": "per-sample T", "none": "no T"}[mode] + f" : {ep} : {lr}"
        rows.append([f"**{label}**" if r["setting"] == res["chosen"] else label,
                     f"{_signed(r['val_acc_gap'])} ± {r['val_acc_gap_sd']:.2f}", _signed(r["test_acc_gap"]),
                     f"{r['val_ood_fpr95_amp']:.1f}"])
    return _table(["fine-tuning (T : epochs : lr)", "val acc − vanilla (points, mean ± std)", "test acc − vanilla",
                   "val-OOD FPR95, AMP"], rows)


ANCHOR_STRATEGIES = {"fixed-5": "`fixed-5`: K = 5 training images for every input (the default)",
                     "strat-10": "`strat-10`: class-stratified, one per class",
                     "pool-5-1000": "`pool-5-1000`: per image, 5 of a 1,000-image pool"}


def anchor_setup(results=RESULTS):
    res = load("anchor_strategies.json", results)
    return (f"{res['args']['draws']} draws per strategy (mean ± std over draws), {res['args']['eval_limit']} images "
            f"per set; the median draw of the default `fixed-5` has overall FPR95 "
            f"{_p(res['fixed5_median_overall_fpr95'])}. Machine: {res['cpu']}, {res['cores']} cores; "
            f"{res['wall_time_s'] / 60:.1f} min.")


def anchor_table(results=RESULTS):
    res, rows = load("anchor_strategies.json", results), []
    for name, s in res["strategies"].items():
        cells = [_pm(s[k]) for k in ("val_fpr95", "far_fpr95", "covariate_fpr95", "overall_fpr95", "overall_auroc")]
        if name == res["selected_on_validation"]:
            cells[0] = f"**{cells[0]}**"
        rows.append([ANCHOR_STRATEGIES.get(name, f"`{name}`"), *cells])
    return _table(["strategy", "val FPR95", "far FPR95", "covariate FPR95", "overall FPR95", "overall AUROC"], rows)


QUICK, QUIET = "speed_quick.json", "speed_peer_internals_quiet.json"
SPEED_RATIOS = {
    "train_overhead": (QUICK, "training", "`train_overhead` (anchored step / vanilla step, T at its 1-in-5 frequency)"),
    "amp_k_efficiency": (QUICK, "inference",
                         "`amp_k_efficiency` (AMP img/s × 5 / vanilla img/s, `AnchoredPredictor()` defaults)"),
    "tiled_vs_loop": (QUICK, "inference", "`tiled_vs_loop` (a Python loop over anchors / the default execution)"),
    "peer_training": (QUIET, "peer",
                      "`peer_training`: amp-tf's training pipeline / PyTorch's reference loop, img/s (width {w})"),
    "peer_amp_inference": (QUIET, "peer", "`peer_amp_inference`: `AnchoredPredictor.predict` / PyTorch's loop over "
                                          "anchors (width {w})"),
}
SPEED_PEER = (("peer_training", "training, amp-tf's pipeline (img/s)"),
              ("peer_training_fit_arrays", "training, `fit` on arrays"),
              ("peer_training_cpu_time", "training, on CPU time"),
              ("peer_training_vs_torch_1thread", "training, against PyTorch with 1 thread"),
              ("peer_amp_inference", "AMP inference"), ("peer_vanilla_inference", "vanilla inference"))


def speed_setup(results=RESULTS):
    q, p = load(QUICK, results), load(QUIET, results)
    machines = sorted({f"{r['machine']['cpu_model']}, {r['machine']['cpu_count']} cores, "
                       f"{', '.join(r['machine']['gpus']) or 'no GPU'}" for r in (q, p)})
    return (f"Machine: {'; '.join(machines)} (both files); `resnet_small` at its default width unless a "
            f"row says, batch {q['settings']['batch_size']}, K = {q['settings']['k']}; `{QUICK}` ran "
            f"{q['wall_time_s']:.0f} s on {q['date'][:10]}, `{QUIET}` {p['wall_time_s']:.0f} s.")


def speed_ratios(results=RESULTS):
    rows = []
    for key, (fname, section, text) in SPEED_RATIOS.items():
        res = load(fname, results)
        t = verdict(key, res["targets"][key]["value"])  # today's target, also for a run made before it moved
        others = res["peer"]["other_processes_cpu_share"] if section == "peer" else \
            res["contention"]["by_section"][section]
        target = t["target"].replace("<=", "≤").replace(">=", "≥") + (" — met" if t["met"] else " — missed")
        w = (res.get("peer") or {}).get("settings", {}).get("width")
        rows.append([text.format(w=w), f"**{t['value']:.3f}**", target, f"{fname} ({_share(others)})"])
    return _table(["ratio", "value", "target", "run (others' CPU share)"], rows, ["--:", ":--", ":--"])


def speed_peer(results=RESULTS):
    quiet, busy = load(QUIET, results)["peer"], load(QUICK, results)["peer"]
    rows = [[text, f"{quiet['ratios'][k]:.3f}", f"{busy['ratios'][k]:.3f}"] for k, text in SPEED_PEER]
    rows.append(["others' share of the CPU", *(_share(r["other_processes_cpu_share"]) for r in (quiet, busy))])
    s = quiet["settings"]
    return _table([f"amp-tf / PyTorch {quiet['torch']} (width {s['width']}, {s['n_train']:,} images, "
                   f"{s['rounds']} rounds)", "quiet run", "contended run"], rows)


def speed_internals(results=RESULTS):
    runs = [load(QUIET, results)["internals"], load(QUICK, results)["internals"]]

    def bn(i):
        ms, x = i["batchnorm"]["ms_per_step"], i["batchnorm"]["speedup"]
        return f"{x:.3f}x ({ms['step_fused_batchnorm']:.0f} vs {ms['step_keras_batchnorm']:.0f} ms)"

    rows = [["`BatchNorm` (`amp_tf/models/batchnorm.py`): Keras' BatchNormalization on TF's fused kernel, same "
             "variables and maths; one training step of the anchored backbone", *(bn(i) for i in runs)],
            [f"tf.data autotuning off, fixed parallelism (`amp_tf/data/tfdata.py`): fit epochs of "
             f"{runs[0]['tf_data']['steps_per_epoch']} steps, median",
             *(f"{i['tf_data']['speedup']:.3f}x" for i in runs)]]
    return _table(["change (in `amp_tf/`, so `fit`, `train` and the trainers all get it)", "quiet run",
                   "contended run"], rows, ["--:", ":--"])


RENDER = {
    "converged-setup": converged_setup, "converged-headline": converged_headline,
    "converged-verdict": converged_verdict, "converged-selection": converged_selection,
    "converged-verdicts": verdict_table, "converged-groups": converged_groups, "converged-accuracy": converged_accuracy,
    "protocol-setup": protocol_setup, "protocol-groups": protocol_groups,
    "features-setup": features_setup, "features-groups": features_table,
    "finetune-setup": finetune_setup, "finetune-select": finetune_table,
    "anchor-setup": anchor_setup, "anchor-strategies": anchor_table,
    "speed-setup": speed_setup, "speed-ratios": speed_ratios, "speed-peer": speed_peer,
    "speed-internals": speed_internals,
}


def render(name, results=RESULTS):
    """The text of block `name` (ends with a newline, no blank line inside), from the results files in `results`."""
    text = RENDER[name](results).strip("\n") + "\n"
    assert "\n\n" not in text, f"block {name} has a blank line: it would end the block"
    return text


def blocks(text):
    """`{name: body}` of every marked block of a document, in order."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def regenerate(text, results=RESULTS):
    """`text` with every marked block replaced by its rendering."""
    return BLOCK.sub(lambda m: f"<!-- table: {m['name']} -->\n{render(m['name'], results)}", text)


def stale(text, results=RESULTS):
    """Names of the blocks whose body differs from the rendering, and of known blocks that are missing."""
    have = blocks(text)
    return [n for n, body in have.items() if n not in RENDER or body != render(n, results)] + \
           [n for n in RENDER if n not in have]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.page", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="rewrite the marked blocks of BENCHMARKS.md")
    p.add_argument("--check", action="store_true", help="exit 1 if a marked block of BENCHMARKS.md is out of date")
    p.add_argument("--doc", type=Path, default=DOC, help="the document (default: %(default)s)")
    args = p.parse_args(argv)
    if not (args.write or args.check):
        print("\n".join(f"<!-- table: {name} -->\n{render(name)}" for name in RENDER), end="")
        return 0
    text = args.doc.read_text()
    missing = [n for n in RENDER if n not in blocks(text)]
    if args.write:
        args.doc.write_text(regenerate(text))
        print(f"{args.doc}: {len(blocks(text))} blocks written" + (f"; no marker for {missing}" if missing else ""))
        return 0
    bad = stale(text)
    print(f"{args.doc}: out of date: {', '.join(bad)} (python -m benchmarks.page --write)" if bad
          else f"{args.doc}: every block matches the results files")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
