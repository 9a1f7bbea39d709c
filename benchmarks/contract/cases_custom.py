"""Cases that need more than one process or a signal: two runs on one --out, Ctrl-C and kill -9 with
the advised --resume, a shared --backup-dir, a full disk; and run folders in odd places."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

from benchmarks.contract import checks, runner
from benchmarks.contract.spec import FAST, add, cli

F = ["-m", "trainers.fmnist"]
LONG = ["--epochs", "3", "--train-limit", "6000", "--eval-limit", "64", "--val-size", "64", "--batch-size", "64",
        "--width", "4", "--verbose", "2", "--no-plots", "--finetune-epochs", "1"]
_SCENARIOS, _SLOCK = {}, threading.Lock()


def scenario(name, fn, ctx):
    """Runs `fn(ctx, folder)` once for every case that reads its results."""
    with _SLOCK:
        if name not in _SCENARIOS:
            d = Path(ctx["ws"]) / "scenarios" / name
            d.mkdir(parents=True, exist_ok=True)
            _SCENARIOS[name] = fn(ctx, d)
        return _SCENARIOS[name]


def _lock_of(out):
    out = Path(out)
    return out.parent / f".{out.name}.partial" / ".run.lock"


def _complete(out):
    out = Path(out)
    need = ("job.json", "report.json", "anchored.keras", "vanilla.keras", "serving", "model.tflite")
    missing = [n for n in need if not (out / n).exists()]
    extra = sorted({p.name for p in out.iterdir()} - set(need) - {"report.md", "detector.json", "detector.npz",
                                                                  "anchored", "vanilla", "plots"}) if out.is_dir() else []
    return missing, extra


def _live(ctx, d):
    """One live run A; while it trains: B plain, B --resume, B --overwrite, and eval.ood into its --out."""
    out = d / "cc"
    argv = F + LONG + ["--out", str(out)]
    a = runner.spawn(argv, d / "A")
    res = {}
    if not runner.wait_for(lambda: _lock_of(out).exists(), 90):
        res["error"] = "the first run never took its lock"
    for key, extra in (("plain", []), ("resume", ["--resume"]), ("overwrite", ["--overwrite"])):
        res[key] = runner.run(argv + extra, d / f"B-{key}", 60)
        res[key]["a_alive"] = a.poll() is None
    ev = ["-m", "eval.ood", "--model", f"{ctx['run']}/anchored.keras", "--id", "fashion_mnist", "--ood", "digits",
          "--eval-limit", "64", "--train-limit", "256", "--no-plots", "--out", str(out)]
    res["eval"] = runner.run(ev, d / "B-eval", 120)
    res["eval"]["a_alive"] = a.poll() is None
    res["A"] = runner.finish(a, 400)
    res["A"]["missing"], res["A"]["extra"] = _complete(out)
    return res


def _pick(name, fn, key):
    def run(ctx, d):
        res = scenario(name, fn, ctx)
        r = dict(res.get(key) or {"exit": None, "seconds": 0, "answer": res.get("error", "not run")})
        return r
    return run


def _a_untouched(ctx, r):
    if r.get("exit") != 0:
        return "wrong", f"the live run failed (exit {r.get('exit')}): {r.get('answer')}"
    if r.get("missing") or r.get("extra"):
        return "wrong", f"the live run's folder is incomplete or mixed: missing {r['missing']}, foreign {r['extra']}"
    return "clear", "the live run completed; its folder holds only its own files"


def _while_alive(ctx, r):
    if r.get("exit") == 0:
        return "wrong", "a second command wrote into a live run's --out (exit 0)"
    if not r.get("a_alive", True):
        return "obscure", "the first run had already ended; the probe could not test the live case"
    return None


for _key, _row, _input in (("plain", 121, "a second identical run into the --out of a live run"),
                           ("resume", 121, "a second run with --resume into the --out of a live run"),
                           ("overwrite", 121, "a second run with --overwrite into the --out of a live run")):
    add(id=f"live-second-{_key}", door="trainers.fmnist --out", input=_input, kind="custom", row=_row, early=True,
        fn=_pick("live", _live, _key), names=("live run|in use",), check=_while_alive, heavy=True, timeout=600)
add(id="live-eval-into", door="eval.ood --out", input="eval.ood --out the --out of a live trainers.fmnist run",
    kind="custom", fn=_pick("live", _live, "eval"), names=("live run|in use",), check=_while_alive, heavy=True,
    early=True, timeout=600)
add(id="live-first-completes", door="trainers.fmnist --out", input="the live run, after the four intruders",
    kind="custom", fn=_pick("live", _live, "A"), expect="ok", check=_a_untouched, heavy=True, timeout=600)


def _interrupt(sig):
    def fn(ctx, d):
        out = d / "ci"
        argv = F + LONG + ["--out", str(out)]
        a = runner.spawn(argv, d / "A")
        started = runner.wait_for(lambda: "Epoch 1/" in a.files[0].read_text(errors="replace") or a.poll() is not None,
                                  120)
        time.sleep(1.0)
        if a.poll() is None:
            a.send_signal(sig)
        r1 = runner.finish(a, 60)
        r1["started"] = bool(started)
        res = {"stop": r1}
        line = r1.get("answer", "")
        if sig == signal.SIGINT and "--resume" in line:
            cmd = shlex.split(line.split("continue it with:", 1)[-1].strip())
            res["resume"] = runner.run(cmd[1:], d / "C", 400)
        else:
            res["rerun"] = runner.run(argv, d / "B", 60)
            res["resume"] = runner.run(argv + ["--resume"], d / "C", 400)
        res["resume"]["missing"], res["resume"]["extra"] = _complete(out) if out.exists() else (["everything"], [])
        return res
    return fn


def _resumed(ctx, r):
    if r.get("exit") != 0:
        return None
    if r.get("missing") or r.get("extra"):
        return "wrong", f"the resumed run's folder is incomplete or mixed: missing {r['missing']}, foreign {r['extra']}"
    return "clear", "resumed and completed"


def _ctrlc(ctx, r):
    if r.get("exit") != 130:
        return "obscure", f"exit {r.get('exit')} after Ctrl-C (expected 130 and one line)"
    return None


add(id="ctrlc-line", door="trainers.fmnist (Ctrl-C)", input="Ctrl-C (SIGINT) during training", kind="custom",
    row=138, fn=_pick("ctrlc", _interrupt(signal.SIGINT), "stop"), names=("--resume",), check=_ctrlc, heavy=True,
    timeout=900)
add(id="ctrlc-follow-advice", door="trainers.fmnist (Ctrl-C)", input="run the exact command the Ctrl-C line gives",
    kind="custom", fn=_pick("ctrlc", _interrupt(signal.SIGINT), "resume"), expect="ok", check=_resumed, heavy=True,
    timeout=900)
add(id="kill9-rerun", door="trainers.fmnist (kill -9)", input="the same command again after kill -9 mid-training",
    kind="custom", row=122, fn=_pick("kill9", _interrupt(signal.SIGKILL), "rerun"), names=("interrupted", "--resume"),
    early=True, heavy=True, timeout=900)
add(id="kill9-resume", door="trainers.fmnist (kill -9)", input="--resume after kill -9 mid-training", kind="custom",
    fn=_pick("kill9", _interrupt(signal.SIGKILL), "resume"), expect="ok", check=_resumed, heavy=True, timeout=900)


def _shared_backup(ctx, d):
    """Run A (seed 0) is killed after its first epoch's backup; run B (seed 1, another --out) shares --backup-dir."""
    bk = d / "bk"
    a = runner.spawn(F + LONG + ["--backup-dir", str(bk), "--out", str(d / "a")], d / "A")
    runner.wait_for(lambda: any(bk.rglob("training_metadata.json")) or a.poll() is not None, 180)
    if a.poll() is None:
        a.send_signal(signal.SIGKILL)
    runner.finish(a, 30)
    had = [str(p.relative_to(bk)) for p in bk.rglob("training_metadata.json")]
    b = runner.run(F + LONG + ["--seed", "1", "--backup-dir", str(bk), "--out", str(d / "b")], d / "B", 400)
    epochs = [ln.strip() for ln in b.get("stdout", "").splitlines() if ln.strip().startswith("Epoch ")]
    b["first_epoch"], b["backups"] = (epochs[0] if epochs else None), had
    return b


def _backup_check(ctx, r):
    if not r.get("backups"):
        return "obscure", "the probe could not make a backup to share (run A ended first)"
    if r.get("exit") == 0 and r.get("first_epoch") and not r["first_epoch"].startswith("Epoch 1/"):
        return "wrong", (f"run B (--seed 1) silently restored run A's backup and began at '{r['first_epoch']}': its "
                         "model continues another run's training")
    return None


add(id="backup-dir-shared", door="trainers.fmnist --backup-dir", input="a --backup-dir that holds a killed run's "
    "backup, given to another run (other --seed, other --out)", kind="custom", fn=_shared_backup,
    names=("--backup-dir",), check=_backup_check, heavy=True, timeout=700)


def _tmpfs(size_mb, fill_mb):
    """A set-up: a tmpfs of `size_mb` MiB in the case folder with `fill_mb` MiB taken; ctx['fs'] is its path."""
    def setup(ctx, d):
        fs = Path(d) / "fs"
        fs.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(fs)], check=True)
        with open(fs / "ballast", "wb") as f:
            f.write(b"\0" * (fill_mb << 20))
        return {"fs": str(fs)}
    return setup


def _umount_after(check=None):
    def fn(ctx, r):
        v = check(ctx, r) if check else None
        subprocess.run(["umount", "-l", ctx["fs"]], capture_output=True)
        return v
    return fn


cli("out-disk-full", "trainers.fmnist --out", F + FAST + ["--out", "{fs}/run"], "--out on a disk with 1 MiB free",
    names=("disk|space",), early=True, setup=_tmpfs(8, 7), check=_umount_after(), heavy=True)


def _fill_later(ctx, d):
    """--out on a disk that fills up while the run trains (a tmpfs, filled by another process)."""
    _tmpfs(66, 0)(ctx, d)
    fs = Path(d) / "fs"
    argv = F + FAST + ["--out", str(fs / "run")]
    a = runner.spawn(argv, d / "A")
    runner.wait_for(lambda: _lock_of(fs / "run").exists() or a.poll() is not None, 90)
    subprocess.run(["dd", "if=/dev/zero", f"of={fs}/ballast", "bs=1M"], capture_output=True)
    r = runner.finish(a, 300)
    r["left"] = sorted(p.name for p in fs.iterdir())
    (fs / "ballast").unlink()
    subprocess.run(["umount", "-l", str(fs)], capture_output=True)
    return r


add(id="out-disk-fills", door="trainers.fmnist --out", input="the disk of --out fills up during the run",
    kind="custom", fn=_fill_later, names=("space",), heavy=True, timeout=400)


def _copy_and(mutate):
    def setup(ctx, d):
        return checks.copy_run(mutate=mutate)(ctx, d)
    return setup


cli("out-dangling-symlink", "trainers.fmnist --out", F + FAST + ["--out", "{d}/link"],
    "--out a dangling symlink (its target folder does not exist)", names=("link",), heavy=True, needs=("run",),
    setup=lambda ctx, d: os.symlink(f"{d}/no-target", f"{d}/link") or {}, max_s=10)
cli("out-inside-run", "trainers.fmnist --out", F + FAST + ["--out", "{copy}/sub"],
    "--out a new folder inside a finished run's folder", names=("run",), heavy=True, needs=("run",),
    setup=checks.copy_run(), early=True,
    check=lambda ctx, r: ("wrong", "a finished run's folder now holds another run (sub/)")
    if (Path(ctx["copy"]) / "sub").exists() else None)
cli("backup-inside-out", "trainers.fmnist --backup-dir", F + FAST + ["--backup-dir", "{d}/r/bk", "--out", "{d}/r"],
    "--backup-dir inside --out", names=("--backup-dir", "--out"), early=True, heavy=True, needs=("run",),
    note="refused at once naming both flags (issue 30 allows either): --out is written as a .partial and moved "
         "into place, so a --backup-dir inside it is no place of its own; the default backups already live there")
cli("resume-early-kill", "trainers.fmnist --resume", F + FAST + ["--out", "{iv}", "--resume"],
    "--resume of a run killed before its first epoch ended (.partial holds job.json and a dead lock)", expect="ok",
    heavy=True, needs=("run",), setup=lambda ctx, d: _early_partial(ctx, d), check=checks.finished("iv"))


def _early_partial(ctx, d):
    import shutil

    work = Path(d) / ".iv.partial"
    work.mkdir()
    shutil.copy(Path(ctx["run"]) / "job.json", work / "job.json")
    (work / ".run.lock").write_text(checks.lock_text())
    return {"iv": str(Path(d) / "iv")}


cli("resume-verbose-differs", "trainers.fmnist --resume", F + FAST[:-3] + ["--verbose", "2", "--no-plots", "--out",
    "{iv}", "--resume"], "--resume of a run killed after its export (a .partial holding every file), only "
    "--verbose changed", expect="ok",
    heavy=True, needs=("run",), setup=checks.partial_of_run(lock=checks.lock_text()),
    check=checks.finished("iv"))


def _stale(path):
    (Path(path) / "stale-from-old-run.txt").write_text("x")
    (Path(path) / "report.json").write_text(json.dumps({"old": True}))


cli("overwrite-finished", "trainers.fmnist --overwrite", F + FAST + ["--out", "{copy}", "--overwrite"],
    "--overwrite of a finished run", expect="ok", heavy=True, needs=("run",), setup=_copy_and(_stale),
    check=lambda ctx, r: None if r.get("exit") != 0 else (
        ("wrong", "the replaced run's files survive in the new run folder")
        if (Path(ctx["copy"]) / "stale-from-old-run.txt").exists() or "old" in (Path(ctx["copy"]) / "report.json")
        .read_text()[:20] else ("clear", "replaced")))
