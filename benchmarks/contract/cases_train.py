"""Cases of trainers.fmnist: flag ranges, types, names and combinations (answered before TensorFlow),
--out / --resume / --overwrite on odd folders, --data-dir variants and --init-from models."""
from __future__ import annotations

from benchmarks.contract import checks
from benchmarks.contract.spec import FAST, cli

F = ["-m", "trainers.fmnist"]
D = "trainers.fmnist"

# (id, argv after the module, input, names the answer must hold, row of docs/bad_inputs.md or None)
FLAG_ONLY = [
    ("epochs-0", ["--epochs", "0"], "--epochs 0", ["--epochs"], 44),
    ("lr-nan", ["--lr", "nan"], "--lr nan", ["--lr"], 45),
    ("num-anchors-1", ["--num-anchors", "1"], "--num-anchors 1", ["--num-anchors"], 46),
    ("train-limit-0", ["--train-limit", "0"], "--train-limit 0", ["--train-limit"], 47),
    ("batch-size-0", ["--batch-size", "0"], "--batch-size 0", ["--batch-size"], 48),
    ("arch-typo", ["--arch", "resnet19"], "--arch resnet19", ["--arch", "resnet_small"], 49),
    ("consistency-typo", ["--consistency", "blurr"], "--consistency blurr", ["--consistency"], 50),
    ("resume-overwrite", ["--resume", "--overwrite", "--out", "x"], "--resume --overwrite", ["--resume", "--overwrite"], 51),
    ("near-holdout", ["--near", "--holdout"], "--near --holdout", ["--near", "--holdout"], 83),
    ("skipvan-finetune", ["--skip-vanilla", "--finetune-epochs", "2"], "--skip-vanilla --finetune-epochs 2",
     ["--finetune-epochs"], 84),
    ("anchors-gt-limit", ["--num-anchors", "50", "--train-limit", "20"], "--num-anchors 50 --train-limit 20",
     ["--num-anchors"], 85),
    ("batch-gt-limit", ["--batch-size", "128", "--train-limit", "64"], "--batch-size 128 --train-limit 64",
     ["--batch-size"], 86),
    ("data-dir-empty-text", ["--data-dir", ""], "--data-dir ''", ["--data-dir"], 87),
    ("resume-no-out", ["--resume"], "--resume without --out", ["--resume", "--out"], 125),
    ("epochs-neg", ["--epochs", "-1"], "--epochs -1", ["--epochs"], None),
    ("epochs-text", ["--epochs", "abc"], "--epochs abc", ["--epochs"], None),
    ("epochs-float", ["--epochs", "1.5"], "--epochs 1.5", ["--epochs"], None),
    ("lr-neg", ["--lr", "-0.1"], "--lr -0.1", ["--lr"], None),
    ("lr-zero", ["--lr", "0"], "--lr 0", ["--lr"], None),
    ("lr-inf", ["--lr", "inf"], "--lr inf", ["--lr"], None),
    ("lr-text", ["--lr", "fast"], "--lr fast", ["--lr"], None),
    ("wd-neg", ["--weight-decay", "-1e-4"], "--weight-decay -1e-4", ["--weight-decay"], None),
    ("wd-nan", ["--weight-decay", "nan"], "--weight-decay nan", ["--weight-decay"], None),
    ("gamma-zero", ["--lr-gamma", "0"], "--lr-gamma 0", ["--lr-gamma"], None),
    ("gamma-nan", ["--lr-gamma", "nan"], "--lr-gamma nan", ["--lr-gamma"], None),
    ("milestones-text", ["--lr-milestones", "a,b"], "--lr-milestones a,b", ["--lr-milestones"], None),
    ("milestones-zero", ["--lr-milestones", "0"], "--lr-milestones 0", ["--lr-milestones"], None),
    ("milestones-neg", ["--lr-milestones", "2,-1"], "--lr-milestones 2,-1", ["--lr-milestones"], None),
    ("every-neg", ["--consistency-every", "-1"], "--consistency-every -1", ["--consistency-every"], None),
    ("consistency-empty", ["--consistency", ""], "--consistency ''", ["--consistency"], None),
    ("consistency-dangling", ["--consistency", "flip+"], "--consistency flip+ (a dangling +)", ["--consistency"], None),
    ("consistency-mode-typo", ["--consistency-mode", "batch"], "--consistency-mode batch", ["--consistency-mode"], None),
    ("wd-mode-typo", ["--weight-decay-mode", "l2"], "--weight-decay-mode l2", ["--weight-decay-mode"], None),
    ("augment-typo", ["--augment", "flip"], "--augment flip", ["--augment"], None),
    ("strategy-typo", ["--strategy", "mirror"], "--strategy mirror", ["--strategy"], None),
    ("verbose-3", ["--verbose", "3"], "--verbose 3", ["--verbose"], None),
    ("positive-typo", ["--positive", "in"], "--positive in", ["--positive"], None),
    ("seed-text", ["--seed", "one"], "--seed one", ["--seed"], None),
    ("width-0", ["--width", "0"], "--width 0", ["--width"], None),
    ("width-neg", ["--width", "-4"], "--width -4", ["--width"], None),
    ("anchors-0", ["--num-anchors", "0"], "--num-anchors 0", ["--num-anchors"], None),
    ("anchors-neg", ["--num-anchors", "-5"], "--num-anchors -5", ["--num-anchors"], None),
    ("val-size-0", ["--val-size", "0"], "--val-size 0", ["--val-size"], None),
    ("val-size-19", ["--val-size", "19"], "--val-size 19", ["--val-size"], None),
    ("val-size-neg", ["--val-size", "-1"], "--val-size -1", ["--val-size"], None),
    ("eval-limit-0", ["--eval-limit", "0"], "--eval-limit 0", ["--eval-limit"], None),
    ("eval-limit-neg", ["--eval-limit", "-1"], "--eval-limit -1", ["--eval-limit"], None),
    ("train-limit-neg", ["--train-limit", "-5"], "--train-limit -5", ["--train-limit"], None),
    ("finetune-neg", ["--finetune-epochs", "-1"], "--finetune-epochs -1", ["--finetune-epochs"], None),
    ("preset-unknown", ["--preset", "table9"], "--preset table9", ["table9|--preset"], None),
    ("preset-other-trainer", ["--preset", "table2-cifar10"], "--preset table2-cifar10 (a trainers.cifar preset)",
     ["table2-cifar10|--preset"], None),
    ("unknown-flag", ["--learning-rate", "0.1"], "--learning-rate 0.1 (no such flag)", ["--learning-rate"], None),
    ("positional", ["fashion_mnist"], "a positional argument", ["fashion_mnist"], None),
    ("out-dot", ["--out", "."], "--out .", ["--out"], None),
    ("out-dotdot", ["--out", ".."], "--out ..", ["--out"], None),
    ("out-root", ["--out", "/"], "--out /", ["--out"], None),
    ("out-proc", ["--out", "/proc/amp-probe-run"], "--out under /proc (not writable, even by root)",
     ["/proc"], None),
    ("out-sys", ["--out", "/sys/amp-probe/run"], "--out under /sys (a read-only file system)", ["/sys"], None),
    ("backup-dir-proc", ["--backup-dir", "/proc/amp-probe-bk"], "--backup-dir under /proc", ["--backup-dir"], None),
    ("out-file", ["--out", "{img_notes}"], "--out naming an existing file", ["--out", "notes.txt"], None),
    ("out-under-file", ["--out", "{img_notes}/run"], "--out under a file (notes.txt/run)", ["notes.txt"], 124),
    ("data-dir-file", ["--data-dir", "{img_notes}"], "--data-dir naming a file", ["--data-dir", "notes.txt"], None),
    ("data-dir-missing", ["--data-dir", "{ws}/no-such-data"], "--data-dir of a missing folder",
     ["--data-dir", "no-such-data"], None),
    ("data-dir-empty", ["--data-dir", "{img_empty}"], "--data-dir of an empty folder", ["--data-dir"], 88),
    ("data-dir-only-train", ["--data-dir", "{dd_only_train}"], "--data-dir holding only the training files",
     ["t10k"], 126),
    ("data-dir-pngs", ["--data-dir", "{dd_pngs}"], "--data-dir holding 30 PNGs, no Fashion-MNIST files",
     ["train-images"], 127),
    ("data-dir-zero-bytes", ["--data-dir", "{dd_zero_files}"] + FAST + ["--out", "{d}/r"],
     "--data-dir whose four IDX files are empty (0 bytes)", ["train-images|idx|empty|0 bytes"], None),
    ("init-missing", ["--init-from", "{ws}/nope.keras"], "--init-from a missing file", ["--init-from", "nope.keras"],
     None),
    ("init-text", ["--init-from", "{img_notes}"], "--init-from a text file", ["--init-from", "notes.txt"], None),
    ("init-dir", ["--init-from", "{img_gray28}"], "--init-from a folder of images", ["--init-from", "gray28"], None),
    ("init-npy", ["--init-from", "{npy_u8_nhwc}"], "--init-from an .npy array", ["--init-from", "u8_nhwc.npy"], None),
]
for _id, _argv, _input, _names, _row in FLAG_ONLY:
    # tiny settings first (the flag under test comes later and wins), so that a flag that is wrongly
    # accepted costs a tiny run, not the default job
    _pre = [] if _id.startswith("init-") else FAST + ([] if {"--out", "--resume"} & set(_argv) else
                                                       ["--out", "{d}/r"])
    cli(f"fmnist-{_id}", D, F + _pre + _argv, _input, names=tuple(_names), early=True, row=_row, timeout=90,
        check=checks.not_a_full_disk if _id in ("out-proc", "out-sys", "backup-dir-proc") else
        checks.ignored("an empty --consistency is silently read as 'no transform' (T off)") if _id == "consistency-empty"
        else None, expect="either" if _id == "consistency-dangling" else "error")

# --- run folders (pure-Python checks: still early) -------------------------------------------------
cli("fmnist-out-user-files", D, F + FAST + ["--out", "{user}"], "--out a folder holding only a user's notes.txt",
    names=("--out", "notes.txt"), early=True, row=123, setup=checks.user_folder(),
    check=checks.untouched("user", ["notes.txt"]))
cli("fmnist-overwrite-user", D, F + FAST + ["--out", "{user}", "--overwrite"],
    "--overwrite of a folder that holds no run (a user's notes.txt)", names=("notes.txt",), early=True, row=91,
    setup=checks.user_folder(), check=checks.untouched("user", ["notes.txt"]))
cli("fmnist-resume-user", D, F + FAST + ["--out", "{user}", "--resume"], "--resume of a folder of a user's files",
    names=("--resume",), early=True, setup=checks.user_folder(), check=checks.untouched("user", ["notes.txt"]))
cli("fmnist-resume-missing", D, F + FAST + ["--out", "{d}/never", "--resume"], "--resume of a folder that does "
    "not exist", names=("--resume", "never"), early=True)
cli("fmnist-resume-emptydir", D, F + FAST + ["--out", "{user}", "--resume"], "--resume of an empty folder",
    names=("--resume",), early=True, setup=checks.user_folder(files=()))
cli("fmnist-out-finished", D, F + FAST + ["--out", "{copy}"], "--out a folder holding an earlier run",
    names=("--resume", "--overwrite"), early=True, row=52, setup=checks.copy_run(), needs=("run",))
cli("fmnist-resume-finished", D, F + FAST + ["--out", "{copy}", "--resume"], "--resume of a finished run",
    names=("already complete",), early=True, row=90, setup=checks.copy_run(), needs=("run",))
cli("fmnist-resume-eval-folder", D, F + FAST + ["--out", "{user}", "--resume"],
    "--resume of an eval.ood report folder (report.json, no job.json)", names=("--resume", "job.json|no amp-tf run"),
    early=True, setup=checks.user_folder(files=("report.json", "report.md")),
    check=checks.untouched("user", ["report.json"]))
cli("fmnist-resume-other-seed", D, F + FAST + ["--out", "{iv}", "--resume", "--seed", "3"],
    "--resume of a killed run with another --seed", names=("seed",), early=True, row=53,
    setup=checks.partial_of_run(lock=checks.lock_text()), needs=("run",))
cli("fmnist-dead-lock", D, F + FAST + ["--out", "{iv}"], "a .partial whose lock names a process that is gone",
    names=("interrupted", "--resume"), early=True, row=122, setup=checks.partial_of_run(lock=checks.lock_text()),
    needs=("run",))
cli("fmnist-foreign-lock", D, F + FAST + ["--out", "{iv}", "--resume"],
    "--resume of a .partial locked by a process on another host", names=("another machine|other host", ".run.lock"),
    early=True, setup=checks.partial_of_run(lock=checks.lock_text(host="elsewhere-host")), needs=("run",))
cli("fmnist-garbage-lock", D, F + FAST + ["--out", "{iv}", "--resume"],
    "--resume of a .partial whose lock file is garbage (a crash while it was written)",
    names=(".run.lock|lock",), early=True, setup=checks.partial_of_run(lock="\x00garbage"), needs=("run",),
    note="a garbage lock reads as 'a run that is starting' forever")
cli("fmnist-garbage-job", D, F + FAST + ["--out", "{iv}", "--resume"],
    "--resume of a .partial whose job.json is garbage", names=("job.json",), early=True,
    setup=checks.partial_of_run(lock=checks.lock_text(), job="{not json"), needs=("run",))


def _garbage_lock_check(ctx, r):
    text = (r.get("answer") or "").lower()
    if r.get("exit") == 2 and "starting" in text and "lock" not in text.replace("locked", ""):
        return "obscure", "calls a stale, unreadable lock 'a run that is starting' and gives no way out"
    return None


# --- heavy: the command runs (TensorFlow, data) ------------------------------------------------------
cli("fmnist-tiny-run", D, F + FAST + ["--out", "{run}"], "a tiny valid run (the fixture run of the probe)",
    expect="ok", check=checks.finished("run", ("job.json", "report.json", "anchored.keras", "vanilla.keras",
                                               "detector.json", "model.tflite", "serving")), heavy=True, timeout=240)
cli("fmnist-seed-neg", D, F + FAST + ["--seed", "-1", "--out", "{d}/r"], "--seed -1", names=("--seed",),
    early=True, heavy=True, needs=("run",))
cli("fmnist-seed-huge", D, F + FAST + ["--seed", str(2**64), "--out", "{d}/r"], "--seed 2**64",
    names=("--seed",), early=True, heavy=True, needs=("run",))
cli("fmnist-out-empty-text", D, F + FAST + ["--out", ""], "--out '' (empty text)", names=("--out",), early=True,
    heavy=True, needs=("run",), check=checks.ignored("--out '' is silently ignored: the run goes to runs/<name>-<time>"))
cli("fmnist-no-backup-and-dir", D, F + FAST + ["--no-backup", "--backup-dir", "{d}/bk", "--out", "{d}/r"],
    "--no-backup with --backup-dir (contradictory)", names=("--backup-dir", "--no-backup"), early=True, heavy=True,
    needs=("run",), check=checks.ignored("--backup-dir is silently ignored under --no-backup"))
cli("fmnist-backup-dir-empty-text", D, F + FAST + ["--backup-dir", "", "--out", "{d}/r"], "--backup-dir ''",
    names=("--backup-dir",), early=True, heavy=True, needs=("run",),
    check=checks.ignored("--backup-dir '' is silently ignored (backups go to the default place)"))
cli("fmnist-data-dir-sub", D, F + FAST + ["--data-dir", "{dd_sub}", "--out", "{d}/r"],
    "--data-dir whose fashion-mnist/ subfolder holds the IDX files", expect="ok", heavy=True, needs=("run",),
    setup=lambda ctx, d: {"out": f"{d}/r"}, check=checks.job_records("out", "dd_sub"))
cli("fmnist-data-dir-plain", D, F + FAST + ["--data-dir", "{dd_plain}", "--out", "{d}/r"],
    "--data-dir of uncompressed IDX files", expect="ok", heavy=True, needs=("run",),
    setup=lambda ctx, d: {"out": f"{d}/r"}, check=checks.job_records("out", "dd_plain"))
cli("fmnist-data-dir-symlink", D, F + FAST + ["--data-dir", "{dd_link_to_system}", "--out", "{d}/r"],
    "--data-dir a symlink to the system copy", expect="ok", heavy=True, needs=("run",),
    setup=lambda ctx, d: {"out": f"{d}/r"}, check=checks.finished("out"))
cli("fmnist-data-dir-corrupt-gz", D, F + FAST + ["--data-dir", "{dd_corrupt_gz}", "--out", "{d}/r"],
    "--data-dir whose train-images .gz is truncated", names=("train-images",), heavy=True, needs=("run",),
    max_s=20, check=lambda ctx, r: _no_folder(ctx, r))
cli("fmnist-data-dir-label-count", D, F + FAST + ["--data-dir", "{dd_swapped_labels}", "--out", "{d}/r"],
    "--data-dir whose test labels file has 60000 labels for 10000 images", names=("labels",), heavy=True,
    needs=("run",), max_s=20, check=lambda ctx, r: _no_folder(ctx, r))


def _no_folder(ctx, r):
    """A refused run leaves no run folder (and no work folder) behind."""
    from pathlib import Path

    d = Path(ctx["d"])
    if r.get("exit") not in (0, None) and ((d / "r").exists() or (d / ".r.partial").exists()):
        return "wrong", "refused, but a run folder / work folder was left behind"
    return None


# patch the garbage-lock case's check (defined above the function)
from benchmarks.contract.spec import CASES as _CASES  # noqa: E402

for _c in _CASES:
    if _c.id == "fmnist-garbage-lock":
        _c.check = _garbage_lock_check
