"""Cases of trainers.tune, the examples and the benchmark commands (--help and a wrong flag)."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.contract import checks, runner
from benchmarks.contract.runner import REPO
from benchmarks.contract.spec import add, cli

T = ["-m", "trainers.tune"]
TINY = ["--max-trials", "1", "--epochs", "1", "--train-limit", "256", "--val-size", "64", "--ood-size", "32",
        "--batch-size", "64", "--width", "4", "--consistency", "none", "--consistency-every", "1", "--verbose", "0"]

TUNE = [
    ("trials-0", ["--max-trials", "0"], "--max-trials 0", ["--max-trials"]),
    ("epochs-0", ["--epochs", "0"], "--epochs 0", ["--epochs"]),
    ("hyperband-1", ["--tuner", "hyperband", "--hyperband-factor", "1"], "--hyperband-factor 1",
     ["--hyperband-factor"]),
    ("val-size-5", ["--val-size", "5"], "--val-size 5", ["--val-size"]),
    ("ood-size-0", ["--ood-size", "0"], "--ood-size 0", ["--ood-size"]),
    ("anchors-1", ["--num-anchors", "1"], "--num-anchors 1", ["--num-anchors"]),
    ("lr-0", ["--lr", "0"], "--lr 0", ["--lr"]),
    ("lr-text", ["--lr", "fast"], "--lr fast", ["--lr"]),
    ("lr-three", ["--lr", "0.1,0.2,0.3"], "--lr 0.1,0.2,0.3 (three values)", ["--lr"]),
    ("lr-nan", ["--lr", "nan,0.1"], "--lr nan,0.1", ["--lr"]),
    ("lr-inf", ["--lr", "0.01,inf"], "--lr 0.01,inf", ["--lr"]),
    ("width-0", ["--width", "0"], "--width 0", ["--width"]),
    ("width-text", ["--width", "8,wide"], "--width 8,wide", ["--width"]),
    ("width-wrn", ["--arch", "wrn40_2", "--width", "4,8"], "--arch wrn40_2 --width 4,8", ["--width"]),
    ("consistency-typo", ["--consistency", "none,blurr"], "--consistency none,blurr", ["blurr"]),
    ("consistency-empty", ["--consistency", ","], "--consistency ','", ["--consistency"]),
    ("every-neg", ["--consistency-every", "1,-2"], "--consistency-every 1,-2", ["--consistency-every"]),
    ("every-text", ["--consistency-every", "often"], "--consistency-every often", ["--consistency-every"]),
    ("blur-neg", ["--blur-sigma", "-3"], "--blur-sigma -3", ["--blur-sigma"]),
    ("blur-nan", ["--blur-sigma", "nan"], "--blur-sigma nan", ["--blur-sigma"]),
    ("wd-neg", ["--weight-decay", "-0.1"], "--weight-decay -0.1", ["--weight-decay"]),
    ("train-limit-neg", ["--train-limit", "-5"], "--train-limit -5", ["--train-limit"]),
    ("batch-0", ["--batch-size", "0"], "--batch-size 0", ["--batch-size"]),
    ("id-unknown", ["--id", "fashion-mnist"], "--id fashion-mnist", ["fashion-mnist"]),
    ("arch-typo", ["--arch", "resnet_smal"], "--arch resnet_smal", ["--arch|resnet_smal"]),
    ("objective-typo", ["--objective", "val_auroc"], "--objective val_auroc", ["--objective"]),
    ("data-dir-missing", ["--data-dir", "{ws}/none"], "--data-dir missing", ["--data-dir"]),
    ("out-file", ["--out", "{img_notes}"], "--out naming a file", ["notes.txt"]),
]
for _id, _argv, _input, _names in TUNE:
    cli(f"tune-{_id}", "trainers.tune", T + TINY + ["--out", "{d}/t"] + _argv, _input, names=tuple(_names),
        early=True, timeout=120, check=(lambda ctx, r: ("obscure", "answers about --width, not the unknown --arch")
                                        if "--width" in str(r.get("answer")) else None) if _id == "arch-typo" else None)


def _tuned(ctx, r):
    if r.get("exit") != 0:
        return None
    out = Path(ctx["out"])
    missing = [n for n in ("best.json", "trials.csv", "trials.md") if not (out / n).exists()]
    return ("wrong", f"exit 0 but {out} lacks {missing}") if missing else ("clear", "search done, best.json written")


def _tune_out(ctx, d):
    return {"out": f"{d}/t"}


cli("tune-ok", "trainers.tune", T + TINY + ["--out", "{d}/t"], "a one-trial search (valid)", expect="ok", heavy=True,
    setup=_tune_out, check=_tuned, timeout=240)


def _tune_twice(ctx, d):
    """The same search twice into one --out: the second resumes (the help says so) or is refused clearly."""
    from benchmarks.contract import runner

    first = runner.run(T + TINY + ["--out", f"{d}/t"], Path(d) / "first", 240)
    second = runner.run(T + TINY + ["--out", f"{d}/t"], Path(d) / "second", 240)
    second["answer"] = f"(first exit {first['exit']}) " + str(second.get("answer"))
    return second


add(id="tune-same-out-twice", door="trainers.tune", input="the same search twice into one --out (the help: "
    "'--overwrite: start afresh instead of resuming tuner/ in --out')", kind="custom", fn=_tune_twice,
    expect="ok", heavy=True, timeout=480)
cli("tune-overwrite-user", "trainers.tune", T + TINY + ["--out", "{user}", "--overwrite"],
    "--overwrite of a folder of a user's files", names=("notes.txt|amp-tf",), heavy=True,
    setup=checks.user_folder(files=("notes.txt", "data.csv")), check=checks.untouched("user", ["notes.txt", "data.csv"]),
    timeout=240)
cli("tune-overwrite-run", "trainers.tune", T + TINY + ["--out", "{copy}", "--overwrite"],
    "--overwrite of a finished trainers.fmnist run folder", names=("run",), heavy=True, needs=("run",),
    setup=checks.copy_run(), check=checks.untouched("copy", ["job.json", "anchored.keras"]), timeout=240)

# --- the examples -------------------------------------------------------------------------------------
X1, X2, X3 = "{repo}/examples/anchor_your_model.py", "{repo}/examples/export_litert.py", "{repo}/examples/load_and_score.py"
EXAMPLES = [
    ("anchor-family", [X1, "--tiny", "--family", "MobileNetV9"], "--family MobileNetV9", ["MobileNetV9"], True),
    ("anchor-size-16", [X1, "--tiny", "--size", "16"], "--size 16", ["--size"], True),
    ("anchor-epochs-0", [X1, "--tiny", "--epochs", "0"], "--epochs 0", ["--epochs"], True),
    ("anchor-limit-3", [X1, "--limit", "3"], "--limit 3", ["--limit"], True),
    ("anchor-data-unknown", [X1, "--data", "cifar-10"], "--data cifar-10", ["cifar-10"], True),
    ("anchor-data-gray", [X1, "--data", "fashion_mnist", "--size", "32", "--limit", "64"],
     "--data fashion_mnist (28x28 grayscale) --size 32", ["fashion_mnist", "3"], False),
    ("anchor-data-missing", [X1, "--data", "cifar10", "--limit", "64"], "--data cifar10 (not on this machine)",
     ["cifar10"], False),
    ("anchor-out-file", [X1, "--tiny", "--out", "{img_notes}"], "--out naming a file", ["--out|notes.txt"], True),
    ("export-both", [X2, "--run", "{run}", "--tiny", "--out", "{d}/e"], "--run and --tiny", ["--run", "--tiny"], True),
    ("export-no-out", [X2, "--tiny"], "no --out", ["--out"], True),
    ("export-run-missing", [X2, "--run", "{ws}/norun", "--out", "{d}/e"], "--run missing", ["--run", "norun"], True),
    ("export-run-user", [X2, "--run", "{img_gray28}", "--out", "{d}/e"], "--run a folder of images (no run)",
     ["--run", "job.json"], True),
    ("export-out-nonempty", [X2, "--tiny", "--out", "{img_gray28}"], "--out a non-empty folder", ["--out"], True),
    ("export-out-file", [X2, "--tiny", "--out", "{img_notes}"], "--out a file", ["--out"], True),
    ("export-k1", [X2, "--tiny", "--num-anchors", "1", "--out", "{d}/e"], "--tiny --num-anchors 1",
     ["--num-anchors"], True),
    ("export-k-with-run", [X2, "--run", "{run}", "--num-anchors", "3", "--out", "{d}/e"], "--num-anchors with --run",
     ["--num-anchors"], True),
    ("score-no-args", [X3], "no arguments", ["run|images|required"], True),
    ("score-run-missing", [X3, "{ws}/norun", "{img_gray28}"], "a run folder that does not exist", ["norun"], True),
    ("score-run-user", [X3, "{img_gray28}", "{img_gray28}"], "a folder of images as the run", ["job.json"], True),
    ("score-images-missing", [X3, "{run}", "{ws}/noimg"], "an image path that does not exist", ["noimg"], False),
    ("score-images-empty", [X3, "{run}", "{img_empty}"], "an empty image folder", ["empty"], False),
    ("score-npy-f01", [X3, "{run}", "{npy_f01}"], "an .npy of x / 255", ["255"], False),
    ("score-npy-u16", [X3, "{run}", "{npy_u16_full}"], "an .npy of 16-bit pixels (0..65535)", ["255"], False),
    ("score-npy-rgb32", [X3, "{run}", "{npy_rgb32}"], "an .npy of 32x32 RGB images for a 28x28 model", ["28"], False),
    ("score-npy-nan", [X3, "{run}", "{npy_nan}"], "an .npy with a NaN pixel", ["nan"], False),
    ("score-npy-empty", [X3, "{run}", "{npy_empty}"], "an .npy of zero images", ["empty|at least one"], False),
    ("score-npy-obj", [X3, "{run}", "{npy_obj}"], "an .npy of Python objects (pickled)", ["obj.npy"], False),
    ("score-npy-fake", [X3, "{run}", "{npy_fake}"], "a text file named .npy", ["fake.npy"], False),
    ("score-npy-complex", [X3, "{run}", "{npy_c64}"], "an .npy of complex numbers", ["complex|dtype"], False),
    ("score-npy-rank5", [X3, "{run}", "{npy_rank5}"], "an .npy of rank 5", ["rank|shape|(N, H, W"], False),
    ("score-corrupt-png", [X3, "{run}", "{img_corrupt}"], "a folder with a corrupt PNG among good ones",
     ["bad.png|zero.png"], False),
    ("score-partial-run", [X3, "{iv}", "{img_gray28}"], "a run that never finished (only its .partial)",
     ["never finished|.iv.partial"], True),
]
def _in_process(argv):
    def fn(ctx):
        from benchmarks.contract import libkit

        return libkit.run_example(argv[0].format(**ctx), [a.format(**ctx) for a in argv[1:]])
    return fn


for _id, _argv, _input, _names, _early in EXAMPLES:
    door = "examples/" + Path(_argv[0]).name
    if _early or _id == "score-partial-run":  # a flag-only mistake: the whole script, timed, as a user runs it
        cli(f"ex-{_id}", door, _argv, _input, names=tuple(_names), early=_early, needs=("run",), timeout=150,
            setup=checks.partial_of_run(lock=checks.lock_text()) if _id == "score-partial-run" else None)
    else:  # the answer after the run is loaded: main(argv) in a worker (one TensorFlow import for all)
        add(id=f"ex-{_id}", door=door, input=_input, kind="lib", group="examples", fn=_in_process(_argv),
            names=tuple(_names), timeout=120)


def _scored(n):
    def check(ctx, r):
        if r.get("exit") != 0:
            return None
        if f"of {n} flagged OOD" not in r.get("stdout", ""):
            return "wrong", "exit 0 but no verdict line for every image"
        return None
    return check


def _grey_levels(ctx, r):
    """16-bit PNGs: the pixels the example scores must be the library loader's (16-bit scaled by 1/257)."""
    if r.get("exit") != 0:
        return None
    import subprocess

    from benchmarks.contract.runner import PY, env

    code = ("import sys,runpy,numpy as np;from amp_tf import data;"
            "ex=runpy.run_path(sys.argv[1]);a=ex['read_images'](sys.argv[2],28,28,1);"
            "b,_=data.to_numpy(data.load('folder:'+sys.argv[2]));"
            "d=np.abs(a.astype(int)-b.astype(int));print(int(d.max()),round(float(d.mean()),1),int((d>1).mean()*100))")
    p = subprocess.run([PY, "-c", code, str(runner.REPO / "examples" / "load_and_score.py"), ctx["img_png16_rand"]],
                       capture_output=True, text=True, env=env(), timeout=120)
    vals = p.stdout.split()
    if len(vals) != 3:
        return "obscure", "the probe could not compare the pixels: " + p.stderr[-200:]
    if len(vals) == 3 and int(vals[0]) > 1:
        return "wrong", (f"exit 0, but the example scores other pixels than amp_tf.data reads from the same files: "
                         f"{vals[2]} % of the pixels differ, by {vals[1]} on average (max {vals[0]}) of 255: "
                         "keras.utils.load_img keeps the 16-bit values and read_images' astype('uint8') wraps them "
                         "modulo 256, where the library scales by 1/257: silently wrong verdicts")
    return None


for _id, _src, _input, _n in (("folder", "{img_gray28}", "a folder of 30 28x28 PNGs", 30),
                               ("rgb-folder", "{img_rgb64}", "a folder of 64x64 RGB PNGs (converted and resized, "
                                "the docstring says)", 12),
                               ("npy-nhw", "{npy_u8_nhw}", "an (N, 28, 28) uint8 .npy", 8)):
    add(id=f"ex-score-{_id}", door="examples/load_and_score.py", input=_input, kind="lib", group="examples",
        fn=_in_process([X3, "{run}", _src]), expect="ok", check=_scored(_n))
add(id="ex-score-images-webp-only", door="examples/load_and_score.py", input="a folder of .webp images (the library "
    "reads webp)", kind="lib", group="examples", fn=_in_process([X3, "{run}", "{img_webp}"]), expect="ok",
    check=_scored(6), note="was expect=error: the example now reads folders with the library's reader, which reads "
    "webp, so scoring them is the right answer")
add(id="ex-score-npy-single", door="examples/load_and_score.py", input="an .npy of one 28x28 image without a batch "
    "axis", kind="lib", group="examples", fn=_in_process([X3, "{run}", "{npy_u8_single_hw}"]),
    names=("(n, h, w, c)|batch|one image",))
add(id="ex-score-png16", door="examples/load_and_score.py", input="a folder of 16-bit grayscale PNGs (photographs "
    "in 16 bits)", kind="lib", group="examples", fn=_in_process([X3, "{run}", "{img_png16_rand}"]), expect="ok",
    check=_grey_levels)
cli("ex-score-help", "examples/load_and_score.py", [X3, "--help"], "--help", expect="ok", max_s=2.0,
    check=lambda ctx, r: ("late", f"--help took {r['seconds']:.1f} s (TensorFlow imported first)")
    if r.get("exit") == 0 and (r.get("tf") or r["seconds"] > 2) else None)
cli("ex-anchor-tiny", "examples/anchor_your_model.py", [X1, "--tiny", "--out", "{d}/a"], "--tiny --out new (valid)",
    expect="ok", heavy=True, timeout=240, setup=lambda ctx, d: {"out": f"{d}/a"},
    check=lambda ctx, r: None if r.get("exit") != 0 or (Path(ctx["out"]) / "serving").is_dir() else
    ("wrong", "exit 0 but no serving/"))
cli("ex-export-tiny", "examples/export_litert.py", [X2, "--tiny", "--out", "{d}/e"], "--tiny --out new (valid)",
    expect="ok", heavy=True, timeout=240)
cli("ex-export-run", "examples/export_litert.py", [X2, "--run", "{run}", "--out", "{d}/e"], "--run of the tiny run",
    expect="ok", heavy=True, needs=("run",), timeout=240, setup=lambda ctx, d: {"out": f"{d}/e"},
    check=lambda ctx, r: None if r.get("exit") != 0 or (Path(ctx["out"]) / "model.tflite").is_file() else
    ("wrong", "exit 0 but no model.tflite"))

# --- the benchmark commands: --help and a wrong flag, before TensorFlow ----------------------------------
LAYERS = ("harness", "speed", "quality", "page")


def bench_commands():
    out = []
    for layer in LAYERS:
        for path in sorted((REPO / "benchmarks" / layer).glob("*.py")):
            text = path.read_text()
            if '\nif __name__ == "__main__":' not in text or path.stem == "against_worker":
                continue
            out.append(f"benchmarks.{layer}" if path.stem == "__main__" else f"benchmarks.{layer}.{path.stem}")
    return out


for _mod in bench_commands():
    cli(f"bench-help-{_mod.split('.', 1)[1]}", _mod, ["-m", _mod, "--help"], "--help", expect="ok", max_s=1.0,
        early=True, check=lambda ctx, r: ("late", f"--help took {r['seconds']:.1f} s" + (" (TensorFlow imported)" if
                                                                                        r.get("tf") else ""))
        if r.get("exit") == 0 and (r.get("tf") or r["seconds"] > 1.0) else None, timeout=60)
    cli(f"bench-flag-{_mod.split('.', 1)[1]}", _mod, ["-m", _mod, "--no-such-flag"], "--no-such-flag",
        names=("--no-such-flag|required",), early=True, timeout=60)
