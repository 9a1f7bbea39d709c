"""Cases of eval.ood and eval.resize_study: flags, models, OOD folders, --out folders."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.contract import checks
from benchmarks.contract.spec import EVAL_FAST, cli

E = ["-m", "eval.ood"]
R = ["-m", "eval.resize_study"]
A = ["--model", "{run}/anchored.keras", "--id", "fashion_mnist"]
V = ["--model", "{run}/vanilla.keras", "--id", "fashion_mnist"]

FLAGS = [
    ("no-model", ["--id", "fashion_mnist", "--ood", "digits"], "no --model", ["--model"], None),
    ("no-ood", A, "no --ood", ["--ood"], None),
    ("ood-empty", A + ["--ood", ""], "--ood ''", ["--ood"], None),
    ("ood-unknown", A + ["--ood", "mnist"], "--ood mnist (the set is digits)", ["mnist"], None),
    ("id-unknown", ["--model", "{run}/anchored.keras", "--id", "fmnist", "--ood", "digits"], "--id fmnist",
     ["fmnist"], None),
    ("model-missing", ["--model", "{ws}/nope.keras", "--id", "fashion_mnist", "--ood", "digits"], "--model missing",
     ["--model", "nope.keras"], None),
    ("model-serving-dir", ["--model", "{run}/serving", "--id", "fashion_mnist", "--ood", "digits"],
     "--model pointing at the serving/ folder", ["--model", "serving"], 55),
    ("model-text", ["--model", "{img_notes}", "--id", "fashion_mnist", "--ood", "digits"], "--model a text file",
     ["--model", "notes.txt"], None),
    ("model-tflite", ["--model", "{run}/model.tflite", "--id", "fashion_mnist", "--ood", "digits"],
     "--model the run's model.tflite", ["--model", "model.tflite"], None),
    ("format-typo", A + ["--ood", "digits", "--format", "xml"], "--format xml", ["--format"], None),
    ("anchors-1", A + ["--ood", "digits", "--num-anchors", "1"], "--num-anchors 1", ["--num-anchors"], None),
    ("eval-limit-0", A + ["--ood", "digits", "--limit", "0"], "--limit 0", ["--eval-limit"], 89),
    ("batch-0", A + ["--ood", "digits", "--batch-size", "0"], "--batch-size 0", ["--batch-size"], None),
    ("batch-neg", A + ["--ood", "digits", "--batch-size", "-8"], "--batch-size -8", ["--batch-size"], None),
    ("odin-t-0", V + ["--ood", "digits", "--odin-temperature", "0"], "--odin-temperature 0", ["--odin-temperature"],
     None),
    ("odin-t-nan", V + ["--ood", "digits", "--odin-temperature", "nan"], "--odin-temperature nan",
     ["--odin-temperature"], None),
    ("odin-eps-neg", V + ["--ood", "digits", "--odin-epsilon", "-0.1"], "--odin-epsilon -0.1", ["--odin-epsilon"],
     None),
    ("train-limit-0", A + ["--ood", "digits", "--train-limit", "0"], "--train-limit 0", ["--train-limit"], None),
    ("resize-typo", A + ["--ood", "digits", "--resize", "area"], "--resize area", ["--resize"], None),
    ("seed-neg", A + ["--ood", "digits", "--seed", "-1"] + EVAL_FAST + ["--out", "{d}/o"], "--seed -1", ["--seed"],
     None),
    ("out-file", A + ["--ood", "digits", "--out", "{img_notes}"], "--out naming a file", ["notes.txt"], None),
    ("out-under-file", A + ["--ood", "digits", "--out", "{img_notes}/o"], "--out under a file",
     ["notes.txt"], None),
    ("out-run", A + ["--ood", "digits", "--out", "{run}"], "--out a training run's folder", ["training run"], 54),
    ("out-proc", A + ["--ood", "digits", "--out", "/proc/amp-probe-eval"], "--out under /proc", ["/proc"], None),
    ("ood-folder-missing", A + ["--ood", "folder:{ws}/no-such-ood"] + EVAL_FAST + ["--out", "{d}/o"],
     "--ood folder:<missing path>", ["no-such-ood"], None),
    ("ood-folder-file", A + ["--ood", "folder:{img_notes}"] + EVAL_FAST + ["--out", "{d}/o"],
     "--ood folder:<a file>", ["notes.txt"], None),
    ("data-dir-missing", A + ["--ood", "digits", "--data-dir", "{ws}/no-data"], "--data-dir missing",
     ["--data-dir"], None),
]
cli("eval-preset-fmnist", "eval.ood", E + A + ["--ood", "digits", "--preset", "fmnist-offline", "--out", "{d}/o"] +
    EVAL_FAST, "--preset fmnist-offline (its eval section) on eval.ood", expect="ok", needs=("run",), heavy=True)
for _id, _argv, _input, _names, _row in FLAGS:
    cli(f"eval-{_id}", "eval.ood", E + _argv, _input, names=tuple(_names), early=True, row=_row, needs=("run",),
        timeout=90)


def _report(key="out", rows=()):
    """A check: exit 0, report.json in ctx[key] holding the score `rows` (keys of its scores)."""
    def check(ctx, r):
        if r.get("exit") != 0:
            return None
        p = Path(ctx[key]) / "report.json"
        if not p.exists():
            return "wrong", f"exit 0 but no {p}"
        rep = json.loads(p.read_text())
        keys = list(rep.get("scores", {}))
        missing = [k for k in rows if k not in keys]
        if missing:
            return "wrong", f"report.json lacks {missing} (has {keys[:6]})"
        return "clear", f"report.json with {len(keys)} score rows"
    return check


def _o(ctx, d):
    return {"out": f"{d}/o"}


OK = [
    ("anchored", A + ["--ood", "digits"], "an anchored model, digits", ["anchored/amp"]),
    ("vanilla", V + ["--ood", "digits"], "a vanilla model, digits", ["vanilla/msp"]),
    ("anchored-features", A + ["--ood", "digits", "--scores", "knn,mahalanobis,amp+knn,amp+mahalanobis"],
     "--scores knn,mahalanobis,amp+knn,amp+mahalanobis on an anchored model", ["anchored/knn"]),
    ("folder-rgb-resize", A + ["--ood", "folder:{img_rgb32}", "--resize", "tf", "--channels"],
     "an OOD folder of 32x32 RGB PNGs with --resize tf --channels", []),
    ("folder-mixed-resize", A + ["--ood", "folder:{img_mixed_sizes}", "--resize", "pil_bilinear"],
     "an OOD folder of mixed sizes with --resize pil_bilinear", []),
    ("folder-gray", A + ["--ood", "folder:{img_gray28},digits"], "an OOD folder of 28x28 PNGs and digits", []),
    ("anysize-model", ["--model", "{m}/anysize.keras", "--id", "fashion_mnist", "--ood", "digits"],
     "a vanilla model that takes any image size", []),
    ("classes5-model", ["--model", "{m}/classes5.keras", "--id", "fashion_mnist", "--ood", "digits"],
     "a 5-class vanilla model scored on 10-class Fashion-MNIST", []),
    ("id-folder-classes", A + ["--ood", "digits", "--id", "folder:{img_classes}"],
     "--id a folder with class subfolders (a user's own ID set)", []),
]
for _id, _argv, _input, _rows in OK:
    cli(f"eval-ok-{_id}", "eval.ood", E + _argv + EVAL_FAST + ["--out", "{d}/o"], _input, expect="ok", heavy=True,
        row=136 if _id == "anchored-features" else None,
        needs=("run", "models"), setup=_o, check=_report("out", _rows), timeout=180)

ERR = [
    ("folder-rgb-no-resize", A + ["--ood", "folder:{img_rgb32}"], "an OOD folder of 32x32 RGB PNGs, no --resize",
     ["--channels"]),
    ("folder-empty", A + ["--ood", "folder:{img_empty}"], "--ood folder:<empty folder>", ["empty|no readable"]),
    ("folder-nonimg", A + ["--ood", "folder:{img_nonimg}"], "--ood folder:<only .txt/.csv files>",
     ["no readable|not an image"]),
    ("folder-corrupt-only", A + ["--ood", "folder:{img_corrupt_only}"], "--ood folder:<only corrupt .png files>",
     ["unreadable|no readable"]),
    ("anchors-gt-train", A + ["--ood", "digits", "--num-anchors", "300"], "--num-anchors 300 --train-limit 256",
     ["--num-anchors"]),
    ("scores-unknown", A + ["--ood", "digits", "--scores", "amp,maha"], "--scores amp,maha on an anchored model",
     ["maha"]),
    ("scores-odin-anchored", A + ["--ood", "digits", "--scores", "odin"], "--scores odin on an anchored model",
     ["odin"]),

    ("softmax-model", ["--model", "{m}/softmax28.keras", "--id", "fashion_mnist", "--ood", "digits"],
     "a vanilla model ending in softmax", ["softmax"]),
    ("id-cifar-missing", ["--model", "{m}/rgb32.keras", "--id", "cifar10", "--ood", "folder:{img_rgb32}"],
     "--id cifar10 (not on this machine)", ["cifar10"]),
    ("id-digits-no-train", A[:2] + ["--id", "digits", "--ood", "fashion_mnist"],
     "--id digits (a set with no train split) for an anchored model", ["digits"]),
    ("dense-vec-model", ["--model", "{m}/dense_vec.keras", "--id", "fashion_mnist", "--ood", "digits"],
     "a model over 784-vectors", ["--model", "image"]),
    ("truncated-model", ["--model", "{m}/truncated.keras", "--id", "fashion_mnist", "--ood", "digits"],
     "a truncated .keras", ["truncated"]),
    ("rgb-model-gray-id", ["--model", "{m}/rgb32.keras", "--id", "fashion_mnist", "--ood", "digits"],
     "a 32x32 RGB model, 28x28 grayscale ID set, no --resize/--channels", ["--resize|--channels|resize"]),
]
for _id, _argv, _input, _names in ERR:
    cli(f"eval-err-{_id}", "eval.ood", E + _argv + EVAL_FAST + ["--out", "{d}/o"], _input, names=tuple(_names),
        row=132 if _id == "softmax-model" else None,
        heavy=True, needs=("run", "models"), max_s=25, timeout=150)

cli("eval-ok-knn-vanilla", "eval.ood", E + V + ["--ood", "digits", "--scores", "knn,mahalanobis"] + EVAL_FAST +
    ["--out", "{d}/o"], "--scores knn,mahalanobis on a vanilla model (detectors amp_tf.detectors offers for plain "
    "models; issue 30: eval.ood scores every detector amp_tf.detectors offers for the model kind)", expect="ok",
    heavy=True, needs=("run",), setup=_o, check=_report("out", ["vanilla/knn"]))
cli("eval-overwrite-user", "eval.ood", E + A + ["--ood", "digits", "--out", "{user}", "--overwrite"] + EVAL_FAST,
    "--overwrite of a folder of a user's files (notes.txt, photo.png)", names=("notes.txt|amp-tf|report",),
    heavy=True, needs=("run",), setup=checks.user_folder(files=("notes.txt", "photo.png")),
    check=checks.untouched("user", ["notes.txt", "photo.png"]))
cli("eval-out-user-no-overwrite", "eval.ood", E + A + ["--ood", "digits", "--out", "{user}"] + EVAL_FAST,
    "--out a folder of a user's files, no --overwrite", names=("--out",), early=True, needs=("run",),
    setup=checks.user_folder(), check=checks.untouched("user", ["notes.txt"]))

RS = ["--model", "{run}/anchored.keras", "--id", "fashion_mnist"] + EVAL_FAST
RFLAGS = [
    ("no-folder", RS, "no --ood-folder", ["--ood-folder"], None),
    ("methods-typo", RS + ["--ood-folder", "{img_rgb64}", "--methods", "bicubic"], "--methods bicubic",
     ["--methods"], None),
    ("methods-empty", RS + ["--ood-folder", "{img_rgb64}", "--methods", ""], "--methods ''", ["--methods"], None),
    ("save-images-neg", RS + ["--ood-folder", "{img_rgb64}", "--save-images", "-1"], "--save-images -1",
     ["--save-images"], None),
    ("with-ood", RS + ["--ood-folder", "{img_rgb64}", "--ood", "digits"], "--ood given to the resize study",
     ["--ood"], None),
    ("folder-missing", RS + ["--ood-folder", "{ws}/no-such-folder", "--out", "{d}/o"], "--ood-folder missing",
     ["no-such-folder"], None),
    ("folder-file", RS + ["--ood-folder", "{img_notes}", "--out", "{d}/o"], "--ood-folder a file",
     ["notes.txt"], None),
    ("out-run", RS + ["--ood-folder", "{img_rgb64}", "--channels", "--out", "{run}"], "--out a training run's folder",
     ["training run|--out"], None),
    ("out-user", RS + ["--ood-folder", "{img_rgb64}", "--channels", "--out", "{user}"],
     "--out a folder of a user's files, no --overwrite", ["--out"], None),
]
for _id, _argv, _input, _names, _row in RFLAGS:
    cli(f"resize-{_id}", "eval.resize_study", R + _argv, _input, names=tuple(_names), early=True, row=_row,
        needs=("run",), timeout=120, setup=checks.user_folder() if _id == "out-user" else None,
        check=checks.untouched("user", ["notes.txt"]) if _id == "out-user" else None)
cli("resize-ok", "eval.resize_study", R + RS + ["--ood-folder", "{img_rgb64}", "--channels", "--methods",
    "tf,pil_nearest", "--save-images", "2", "--out", "{d}/o"], "a folder of 64x64 RGB images (valid)", expect="ok",
    heavy=True, needs=("run",), setup=_o, check=_report("out"), timeout=180)
cli("resize-same-size", "eval.resize_study", R + RS + ["--ood-folder", "{img_gray28}", "--out", "{d}/o"],
    "--ood-folder of images already 28x28", names=("28x28|already",), heavy=True, needs=("run",), max_s=25)
