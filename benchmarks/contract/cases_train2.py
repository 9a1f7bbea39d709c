"""Cases of trainers.cifar and trainers.imagenet (CIFAR and ImageNet are not on this machine: their
flags must be judged before the data is looked for), and --init-from models at every trainer."""
from __future__ import annotations

from pathlib import Path

from benchmarks.contract import checks
from benchmarks.contract.spec import FAST, cli

C = ["-m", "trainers.cifar"]
I = ["-m", "trainers.imagenet"]
F = ["-m", "trainers.fmnist"]

CIFAR = [
    ("no-data", [], "no flags (CIFAR-10 is not on this machine)", ["cifar"], None),
    ("epochs-0", ["--epochs", "0"], "--epochs 0", ["--epochs"], None),
    ("dataset-typo", ["--dataset", "cifar1000"], "--dataset cifar1000", ["--dataset"], None),
    ("arch-choice", ["--arch", "resnet50"], "--arch resnet50 (not offered)", ["--arch"], None),
    ("wrn-width", ["--arch", "wrn40_2", "--width", "8"], "--width 8 with --arch wrn40_2", ["--width"], 82),
    ("vanilla-callback", ["--vanilla", "--ood-callback-every", "1"], "--vanilla --ood-callback-every 1",
     ["--ood-callback-every", "--vanilla"], None),
    ("ood-unknown", ["--ood", "svhn"], "--ood svhn (the set is svhn_cropped)", ["svhn"], None),
    ("ood-empty", ["--ood", ""], "--ood ''", ["--ood"], None),
    ("ood-folder-missing", ["--ood", "folder:/no/such/folder"], "--ood folder:/no/such/folder",
     ["/no/such/folder"], None),
    ("resize-typo", ["--resize", "bilinear"], "--resize bilinear", ["--resize"], None),
    ("callback-every-neg", ["--ood-callback-every", "-1"], "--ood-callback-every -1", ["--ood-callback-every"], None),
    ("callback-size-0", ["--ood-callback-every", "1", "--ood-callback-size", "0"], "--ood-callback-size 0",
     ["--ood-callback-size"], None),
    ("callback-sigma-neg", ["--ood-callback-every", "1", "--ood-callback-sigma", "-3"], "--ood-callback-sigma -3",
     ["--ood-callback-sigma"], None),
    ("callback-sigma-nan", ["--ood-callback-every", "1", "--ood-callback-sigma", "nan"], "--ood-callback-sigma nan",
     ["--ood-callback-sigma"], None),
    ("finetune-no-init", ["--finetune-epochs", "2"], "--finetune-epochs 2 without --init-from",
     ["--finetune-epochs", "--init-from"], None),
    ("val-size-5", ["--val-size", "5"], "--val-size 5", ["--val-size"], None),
    ("preset-fmnist", ["--preset", "fmnist-offline"], "--preset fmnist-offline (trainers.fmnist's)",
     ["fmnist-offline"], None),
    ("preset-imagenet", ["--preset", "table5-imagenet-c"], "--preset table5-imagenet-c (trainers.imagenet's)",
     ["table5-imagenet-c"], None),
    ("data-dir-fmnist", ["--data-dir", "{dd_sub}"], "--data-dir of a Fashion-MNIST folder (no CIFAR in it)",
     ["cifar", "{dd_sub}"], None),
    ("lr-milestones-text", ["--lr-milestones", "60;120"], "--lr-milestones 60;120", ["--lr-milestones"], None),
    ("num-anchors-1", ["--num-anchors", "1"], "--num-anchors 1", ["--num-anchors"], None),
]
for _id, _argv, _input, _names, _row in CIFAR:
    cli(f"cifar-{_id}", "trainers.cifar", C + _argv, _input, names=tuple(_names), early=True, row=_row, timeout=60,
        check=checks.masked_by_data(_names))
cli("cifar-dry-run-preset", "trainers.cifar", C + ["--preset", "table2-cifar10", "--dry-run"],
    "--preset table2-cifar10 --dry-run (valid)", expect="ok", early=True)

IMAGENET = [
    ("no-data", [], "no flags (ImageNet is not on this machine)", ["imagenet"], None),
    ("image-size-0", ["--image-size", "0"], "--image-size 0", ["--image-size"], None),
    ("image-size-neg", ["--image-size", "-32"], "--image-size -32", ["--image-size"], None),
    ("anchor-pool-0", ["--anchor-pool", "0"], "--anchor-pool 0", ["--anchor-pool"], None),
    ("anchor-pool-lt-k", ["--anchor-pool", "3"], "--anchor-pool 3 (< 5 anchors)", ["--anchor-pool"], None),
    ("threshold-neg", ["--threshold-size", "-1"], "--threshold-size -1", ["--threshold-size"], None),
    ("eval-batch-0", ["--eval-batch-size", "0"], "--eval-batch-size 0", ["--eval-batch-size"], None),
    ("train-no-val", ["--train-folder", "{img_inet_train}"], "--train-folder without --val-folder",
     ["--val-folder"], None),
    ("train-missing", ["--train-folder", "{ws}/nope", "--val-folder", "{img_inet_val}"], "--train-folder missing",
     ["--train-folder", "nope"], None),
    ("train-file", ["--train-folder", "{img_notes}", "--val-folder", "{img_inet_val}"], "--train-folder a file",
     ["--train-folder", "notes.txt"], None),
    ("train-empty", ["--train-folder", "{img_empty}", "--val-folder", "{img_empty}"],
     "--train-folder and --val-folder empty folders", ["empty"], None),
    ("arch-choice", ["--arch", "wrn40_2"], "--arch wrn40_2 (not offered)", ["--arch"], None),
    ("width-resnet50", ["--arch", "resnet50_imagenet", "--width", "8"], "--width 8 with --arch resnet50_imagenet",
     ["--width"], None),
    ("shuffle-seed-text", ["--shuffle-seed", "x"], "--shuffle-seed x", ["--shuffle-seed"], None),
    ("ood-typo", ["--ood", "imagenet2012_corrupted/gaussian_blur_9"], "--ood .../gaussian_blur_9 (levels 1..5)",
     ["gaussian_blur_9"], None),
]
INET_PRE = ["--arch", "resnet_small", "--width", "4", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
            "--eval-limit", "48", "--threshold-size", "20", "--anchor-pool", "16", "--no-plots", "--verbose", "0",
            "--train-folder", "{img_inet_train}", "--val-folder", "{img_inet_val}", "--ood", "folder:{img_rgb64}",
            "--out", "{d}/r"]
for _id, _argv, _input, _names, _row in IMAGENET:
    # with class folders of images (ImageNet itself is not here), the flag under test last: it must be judged
    # before any work; "no-data" and the folder cases keep their own flags
    _pre = [] if _id in ("no-data", "arch-choice", "width-resnet50") or "--train-folder" in _argv else INET_PRE
    cli(f"imagenet-{_id}", "trainers.imagenet", I + _pre + _argv, _input, names=tuple(_names), early=True, row=_row,
        timeout=90, check=checks.masked_by_data(_names))

INET = ["--arch", "resnet_small", "--width", "4", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
        "--eval-limit", "48", "--threshold-size", "20", "--anchor-pool", "16", "--no-plots", "--verbose", "0"]
TV = ["--train-folder", "{img_inet_train}", "--val-folder", "{img_inet_val}"]


def _out(ctx, d):
    return {"out": f"{d}/r"}


cli("imagenet-folders-valid", "trainers.imagenet", I + INET + TV + ["--ood", "folder:{img_rgb64}", "--out", "{d}/r"],
    "class folders of 40x40 RGB PNGs, --image-size 32, an OOD folder of 64x64 images", expect="ok", heavy=True,
    setup=_out, check=checks.finished("out", ("job.json", "report.json", "report.md", "anchored.keras")))
cli("imagenet-val-other-classes", "trainers.imagenet", I + INET + ["--train-folder", "{img_inet_train}", "--val-folder",
    "{img_inet_val_other}", "--ood", "folder:{img_rgb64}", "--out", "{d}/r"],
    "--val-folder whose classes (b, c) differ from --train-folder's (a, b)", names=("class",), heavy=True)
cli("imagenet-train-flat", "trainers.imagenet", I + INET + ["--train-folder", "{img_inet_flat}", "--val-folder",
    "{img_inet_val}", "--ood", "folder:{img_rgb64}", "--out", "{d}/r"], "--train-folder of images without class "
    "subfolders", names=("inet_flat", "subfolder"), heavy=True)
def _no_ood(ctx, r):
    if r.get("exit") != 0:
        return None
    md = "there" if (Path(ctx["d"]) / "r" / "report.md").exists() else "not written, though the last line names it"
    return "wrong", ("exit 0 with no OOD evaluation: the named OOD set is dropped with one '[imagenet] skipped' line, "
                     f"report.json lists it under skipped_ood_sets, report.md is {md}")


cli("imagenet-ood-folder-missing", "trainers.imagenet", I + INET + TV + ["--ood", "folder:{ws}/no-such-ood",
    "--out", "{d}/r"], "--ood folder:<a path that does not exist> (a typo)", names=("no-such-ood",), heavy=True,
    check=_no_ood)
cli("imagenet-ood-folder-empty", "trainers.imagenet", I + INET + TV + ["--ood", "folder:{img_empty}",
    "--out", "{d}/r"], "--ood folder:<an empty folder>", names=("empty",), heavy=True, check=_no_ood)

# --- --init-from models (made by the worker group "fixtures") ------------------------------------------
INIT = [
    ("anchored", "{run}/anchored.keras", "an anchored model (anchored.keras of a run)", ["anchored"], 76, ("run",)),
    ("truncated", "{m}/truncated.keras", "a truncated .keras file", ["truncated"], 77, ("models",)),
    ("softmax", "{m}/softmax28.keras", "a model ending in softmax", ["softmax"], 130, ("models",)),
    ("sigmoid", "{m}/sigmoid28.keras", "a model ending in sigmoid", ["sigmoid"], 131, ("models",)),
    ("act-softmax", "{m}/act_softmax28.keras", "a model ending in a separate Activation('softmax') layer",
     ["softmax"], None, ("models",)),
    ("softmax-layer", "{m}/softmax_layer28.keras", "a model ending in a keras.layers.Softmax layer", ["softmax"],
     None, ("models",)),
    ("log-softmax", "{m}/logsoftmax28.keras", "a model ending in log_softmax", ["log_softmax"], None, ("models",)),
    ("rgb32", "{m}/rgb32.keras", "a 32x32 RGB model for 28x28 grayscale data", ["--init-from", "32"], None,
     ("models",)),
    ("dense-vec", "{m}/dense_vec.keras", "a model over 784-vectors (not images)", ["--init-from"], None, ("models",)),
    ("two-out", "{m}/two_out.keras", "a model with two outputs", ["--init-from", "output"], None, ("models",)),
    ("h5", "{m}/legacy.h5", "a legacy .h5 model file", ["--init-from", "legacy.h5"], None, ("models",)),
    ("weights-only", "{m}/plain28.weights.h5", "a weights-only file (model.save_weights)",
     ["--init-from", "weights"], None, ("models",)),
]
for _id, _path, _input, _names, _row, _needs in INIT:
    cli(f"fmnist-init-{_id}", "trainers.fmnist --init-from", F + ["--init-from", _path, "--finetune-epochs", "1",
        "--train-limit", "256", "--eval-limit", "64", "--val-size", "64", "--batch-size", "64", "--verbose", "0",
        "--no-plots", "--out", "{d}/r"], f"--init-from {_input}", names=tuple(_names), early=True, row=_row,
        needs=_needs, timeout=120)
TINY_INIT = ["--finetune-epochs", "1", "--train-limit", "256", "--eval-limit", "64", "--val-size", "64",
             "--batch-size", "64", "--verbose", "0", "--no-plots", "--out", "{d}/r"]
cli("fmnist-init-with-width", "trainers.fmnist --init-from", F + ["--init-from", "{run}/vanilla.keras", "--width",
    "8"] + TINY_INIT, "--init-from with --width 8", names=("--width",), early=True, row=78, needs=("run",))
cli("fmnist-init-with-epochs", "trainers.fmnist --init-from", F + ["--init-from", "{run}/vanilla.keras", "--epochs",
    "5"] + TINY_INIT, "--init-from with --epochs 5", names=("--epochs",), early=True, row=79, needs=("run",))
cli("fmnist-init-near", "trainers.fmnist --init-from", F + ["--init-from", "{run}/vanilla.keras", "--near"] +
    TINY_INIT, "--init-from with --near", names=("--near",), early=True, row=80, needs=("run",))
cli("fmnist-init-vanilla-of-run", "trainers.fmnist --init-from", F + ["--init-from", "{run}/vanilla.keras"] +
    TINY_INIT, "--init-from the vanilla.keras of a run (the documented path)", expect="ok", heavy=True,
    needs=("run",), setup=_out, check=checks.finished("out"))
def _lost(ctx, r):
    """A valid --init-from that fails after the training: the run's work is lost."""
    if r.get("exit") not in (0, None) and "features" in str(r.get("answer")):
        return "wrong", ("accepted up front, trained, then failed at detector selection (no layer 'features' in the "
                         "user's model): the run is lost (left in .r.partial)")
    return checks.finished("out")(ctx, r)


cli("fmnist-init-plain", "trainers.fmnist --init-from", F + ["--init-from", "{m}/plain28.keras"] + TINY_INIT,
    "--init-from a user's plain conv model (Rescaling(1/255), Conv2D, pooling, Dense logits)", expect="ok",
    heavy=True, needs=("models",), setup=_out, check=_lost)
cli("fmnist-init-plain-features", "trainers.fmnist --init-from", F + ["--init-from", "{m}/plain28f.keras"] +
    TINY_INIT, "--init-from the same model with its pooling layer named 'features'", expect="ok", heavy=True,
    needs=("models",), setup=_out, check=checks.finished("out"))
cli("fmnist-init-anysize", "trainers.fmnist --init-from", F + ["--init-from", "{m}/anysize.keras"] + TINY_INIT,
    "--init-from a model that takes any image size", expect="ok", heavy=True, row=134, needs=("models",),
    setup=_out, check=_lost)
cli("fmnist-init-classes5", "trainers.fmnist --init-from", F + ["--init-from", "{m}/classes5.keras"] + TINY_INIT,
    "--init-from a 5-class model for the 10 Fashion-MNIST classes", names=("5", "10"), heavy=True, early=True,
    needs=("models",))
cli("fmnist-init-flatten-dense", "trainers.fmnist --init-from", F + ["--init-from", "{m}/flat_dense.keras"] +
    TINY_INIT, "--init-from an MLP (Flatten -> Dense) over the image", names=("Dense|Flatten",), heavy=True,
    needs=("models",))
cli("fmnist-init-nan-weights", "trainers.fmnist --init-from", F + ["--init-from", "{m}/nan28.keras"] + TINY_INIT,
    "--init-from a model whose weights hold NaN", names=("nan",), heavy=True, needs=("models",),
    check=lambda ctx, r: ("wrong", "exit 0: a model with a NaN weight is fine-tuned, scored and exported without a "
                          "word (the NaN stays in the exported models)") if r.get("exit") == 0 else None)
cli("cifar-init-fmnist-model", "trainers.cifar --init-from", C + ["--init-from", "{m}/plain28.keras"],
    "--init-from a 28x28x1 model for CIFAR's 32x32x3 images", names=("--init-from", "32"), early=True,
    needs=("models",), timeout=60, check=checks.masked_by_data(("--init-from", "32")))
cli("cifar-init-softmax", "trainers.cifar --init-from", C + ["--init-from", "{m}/softmax28.keras"],
    "--init-from a softmax model", names=("softmax",), early=True, needs=("models",), timeout=60)
cli("imagenet-init-size", "trainers.imagenet --init-from", I + ["--init-from", "{m}/rgb32.keras"],
    "--init-from a 32x32 model with the default --image-size 224", names=("224|--image-size",), early=True,
    needs=("models",), timeout=60)
cli("imagenet-init-vanilla", "trainers.imagenet --init-from", I + ["--init-from", "{m}/rgb32.keras", "--vanilla"],
    "--init-from with --vanilla", names=("--vanilla",), early=True, needs=("models",), timeout=60)
