"""Run folders: resume after a kill, a finished run, a folder that disappears, refusals that leave nothing.

The end-to-end test SIGKILLs a trainers.fmnist run from the test side as soon as its first backup
(`training_metadata.json` after epoch 1) is on disk, reruns it with --resume, and checks that it ends
with the weights of an uninterrupted run. Exact under these settings: --deterministic (TF op
determinism), the default strategy, in-memory data (epoch order and augmentation are functions of
(seed, epoch)), BackupAndRestore at epoch ends (weights + optimizer state + epoch); the kill may land
anywhere after the first backup.
"""
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import amp_tf  # noqa: F401  (registers AnchoredModel for load_model)
from amp_tf.cli import fmnist
from amp_tf.run.pipeline import RunFolder, RunFolderLost, check_run_folder
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--train-limit", "768", "--epochs", "3", "--batch-size", "128", "--width", "8",
        "--skip-vanilla", "--finetune-epochs", "0", "--eval-limit", "40", "--val-size", "100", "--num-anchors", "2",
        "--deterministic", "--verbose", "0", "--seed", "3", "--no-plots"]
LOST_ARGS = [*ARGS]
LOST_ARGS[ARGS.index("--epochs") + 1] = "2"
LOST_ARGS[ARGS.index("--train-limit") + 1] = "512"
QUIET = lambda m: None  # noqa: E731


def _cmd(out, args=ARGS):
    return [sys.executable, "-m", "trainers.fmnist", *args, "--out", str(out)]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")


def _start(out, args=ARGS):
    return subprocess.Popen(_cmd(out, args), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_first_backup(proc, out, model="anchored", timeout=600):
    """Polls until `out`'s run has written its first epoch's backup; False if the process ended first."""
    meta = out.parent / f".{out.name}.partial" / model / "backup" / "training_metadata.json"
    end = time.time() + timeout
    while proc.poll() is None and time.time() < end:
        try:
            if json.loads(meta.read_text())["epoch"] >= 1:
                return True
        except (OSError, ValueError, KeyError):  # not there yet, or being written
            pass
        time.sleep(0.02)
    return False


def _refused(argv):
    """trainers.fmnist in-process: its error line (it must exit with code 2)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_cli(fmnist.main, argv) == 2, err.getvalue()
    return err.getvalue()


def _files(folder):
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_is_exact_and_a_finished_run_is_not_redone(tmp_path):
    run, ref_out, lost_out = tmp_path / "run", tmp_path / "ref", tmp_path / "lost"
    ref = _start(ref_out)
    victim = _start(run)
    assert _wait_for_first_backup(victim, run), victim.communicate()[1][-3000:]
    victim.send_signal(signal.SIGKILL)  # the kill comes from outside, as a preemption would
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    # the run folder deleted mid-run: the run fails loudly and commits nothing
    lost = _start(lost_out, LOST_ARGS)
    assert _wait_for_first_backup(lost, lost_out)
    shutil.rmtree(lost_out.parent / f".{lost_out.name}.partial", ignore_errors=True)
    partial = tmp_path / ".run.partial"
    assert (partial / "anchored" / "backup" / "training_metadata.json").exists()
    assert not run.exists()  # a killed run never looks finished
    argv = [*ARGS, "--out", run]
    assert "has an interrupted run" in _refused(argv)  # never silently resumed
    assert "['lr']" in _refused(argv + ["--resume", "--lr", "0.05"])  # the settings must match
    resumed = subprocess.run(_cmd(run) + ["--resume"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the interrupted run" in resumed.stdout
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]
    a = keras.models.load_model(ref_out / "anchored.keras")
    b = keras.models.load_model(run / "anchored.keras")
    wa, wb = a.backbone.get_weights(), b.backbone.get_weights()
    assert len(wa) == len(wb) > 0
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)
    assert a.optimizer.iterations.numpy() == b.optimizer.iterations.numpy() == 3 * (768 // 128)
    # --resume of the finished run: refused, nothing retrained, no file touched
    before = _files(run)
    assert "already complete" in _refused(argv + ["--resume"])
    assert _files(run) == before and not partial.exists()
    # the run whose folder was deleted: exit code 2, no "done", nothing committed
    out, err = lost.communicate(timeout=600)
    assert lost.returncode == 2 and "done: job time" not in out, out[-2000:] + err[-2000:]
    assert "error: " in err and "was deleted or taken over" in err and not lost_out.exists()


def _wait_for_lock(proc, out, timeout=600):
    lock = out.parent / f".{out.name}.partial" / RunFolder.OWNER
    end = time.time() + timeout
    while proc.poll() is None and time.time() < end and not lock.exists():
        time.sleep(0.02)
    return lock.exists()


@pytest.mark.slow
def test_a_second_run_into_a_live_runs_folder_is_refused_at_once_and_the_first_completes_untouched(tmp_path):
    run, ref_out = tmp_path / "run", tmp_path / "ref"
    ref, first = _start(ref_out), _start(run)
    assert _wait_for_lock(first, run), first.communicate()[1][-3000:]
    took = {}
    for extra in ([], ["--resume"], ["--overwrite"]):
        t = time.time()
        second = subprocess.run(_cmd(run) + extra, cwd=ROOT, env=_env(), capture_output=True, text=True,
                                timeout=120)
        took[" ".join(extra) or "plain"] = round(time.time() - t, 2)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"is in use by a live run (process {first.pid} on " in second.stderr, second.stderr
        assert "--resume to continue" not in second.stderr and "Traceback" not in second.stderr
    print(f"the second process was refused in {took} s")
    assert max(took.values()) < 10  # measured well under 2 s: refused before TensorFlow is imported
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]
    assert not (tmp_path / ".run.partial").exists() and not (run / RunFolder.OWNER).exists()
    assert json.loads((run / "job.json").read_text()) == json.loads((ref_out / "job.json").read_text())
    a, b = (keras.models.load_model(p / "anchored.keras") for p in (ref_out, run))
    for x, y in zip(a.backbone.get_weights(), b.backbone.get_weights()):
        np.testing.assert_array_equal(x, y)  # nothing mixed: the same weights as a run alone
    assert json.loads((run / "report.json").read_text())["scores"] == json.loads(
        (ref_out / "report.json").read_text())["scores"]


# ------------------------------------------------------------------ RunFolder (fast)
def _finished(out, config):
    folder = RunFolder(out, config, log=QUIET)
    (folder.work / "report.md").write_text("first")
    return folder.commit()


def test_resume_of_a_finished_run_is_refused_and_leaves_it_untouched(tmp_path):
    out = _finished(tmp_path / "run", {"seed": 0})
    before = _files(out)
    for config in ({"seed": 0}, {"seed": 1}):
        with pytest.raises(ValueError, match="already complete; there is nothing to resume"):
            RunFolder(out, config, resume=True)
    assert _files(out) == before and not (tmp_path / ".run.partial").exists()
    assert list(tmp_path.iterdir()) == [out]


def test_a_deleted_work_folder_fails_the_commit_and_commits_nothing(tmp_path):
    out = tmp_path / "run"
    folder = RunFolder(out, {"seed": 0}, log=QUIET)
    shutil.rmtree(folder.work)  # deleted mid-run; training recreates sub-folders as it writes
    (folder.work / "anchored" / "checkpoints").mkdir(parents=True)
    (folder.work / "report.md").write_text("x")
    with pytest.raises(RunFolderLost, match="deleted or taken over.*nothing was committed"):
        folder.commit()
    assert not out.exists()
    with pytest.raises(RunFolderLost):
        with folder.guard():
            shutil.rmtree(folder.work)
            (folder.work / "anchored.keras").write_bytes(b"")


def test_a_live_run_owns_its_folder_and_one_taken_over_is_not_committed(tmp_path):
    out = tmp_path / "run"
    first = RunFolder(out, {"seed": 0}, log=QUIET)
    (first.work / "report.md").write_text("first")
    for kw in ({}, {"resume": True}, {"overwrite": True}):  # same settings, same --out: refused at once
        with pytest.raises(ValueError, match=rf"in use by a live run \(process {os.getpid()} on "):
            RunFolder(out, {"seed": 0}, log=QUIET, **kw)
    assert (first.work / "report.md").read_text() == "first" and first.held()
    lock = json.loads((first.work / RunFolder.OWNER).read_text())
    assert lock["pid"] == os.getpid() and lock["host"] and lock["started"]
    (first.work / RunFolder.OWNER).write_text(json.dumps({**lock, "token": "another run's"}))  # taken over
    with pytest.raises(RunFolderLost):
        first.commit()
    assert not out.exists()


def test_a_lock_whose_process_is_gone_is_an_interrupted_run(tmp_path):
    out = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    first = RunFolder(out, {"seed": 0}, log=QUIET)
    lock = json.loads((first.work / RunFolder.OWNER).read_text())
    first.release()
    (first.work / RunFolder.OWNER).write_text(json.dumps({**lock, "pid": int(dead.stdout), "token": "x"}))
    with pytest.raises(ValueError, match=rf"has an interrupted run .*process {int(dead.stdout)} .* is gone.*--resume"):
        RunFolder(out, {"seed": 0}, log=QUIET)
    said = []
    resumed = RunFolder(out, {"seed": 0}, resume=True, log=said.append)  # takes the dead run's lock over
    assert "resuming" in said[0] and resumed.held()
    assert resumed.commit() == out and sorted(p.name for p in out.iterdir()) == ["job.json"]


def test_overwrite_keeps_the_earlier_run_until_the_new_one_is_complete(tmp_path):
    out = _finished(tmp_path / "run", {"seed": 0})
    new = RunFolder(out, {"seed": 1}, overwrite=True, log=QUIET)
    assert (out / "report.md").read_text() == "first"
    new.discard()  # e.g. a check that needs the data refused the run
    assert not new.work.exists() and (out / "report.md").read_text() == "first"
    again = RunFolder(out, {"seed": 1}, overwrite=True, log=QUIET)
    (again.work / "report.md").write_text("second")
    again.commit()
    assert (out / "report.md").read_text() == "second"
    assert json.loads((out / "job.json").read_text()) == {"seed": 1} and not (out / RunFolder.OWNER).exists()


def test_refusals_touch_nothing(tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.txt").write_text("keep")
    with pytest.raises(ValueError, match="no job.json, so it is no amp-tf run folder and is left alone"):
        RunFolder(mine, {"seed": 0}, overwrite=True)
    with pytest.raises(ValueError, match="holds no amp-tf run"):
        RunFolder(mine, {"seed": 0}, resume=True)
    with pytest.raises(ValueError, match=r"holds files that are no amp-tf run \(thesis.txt; no job.json\); "
                                         "they are left alone"):
        RunFolder(mine, {"seed": 0})
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a run folder"):
        RunFolder(tmp_path / "file", {"seed": 0})
    killed = RunFolder(tmp_path / "killed", {"seed": 0}, log=QUIET)
    killed.release()  # its process ended
    (killed.work / "job.json").unlink()
    with pytest.raises(ValueError, match="has no job.json"):
        RunFolder(tmp_path / "killed", {"seed": 0}, resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".killed.partial", "file", "notes"]
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]
    assert check_run_folder(tmp_path / "new", {"seed": 0}) == "new" and not (tmp_path / "new").exists()
    for cwd in (".", "..", "runs/.."):
        with pytest.raises(ValueError, match="name a run folder of its own"):
            check_run_folder(cwd, {"seed": 0}, overwrite=True)


def test_resume_continues_an_interrupted_run_and_replaces_a_stale_copy(tmp_path):
    out = _finished(tmp_path / "run", {"seed": 0})
    killed = RunFolder(tmp_path / "run", {"seed": 0}, overwrite=True, log=QUIET)
    (killed.work / "backup").mkdir()
    killed.release()  # its process ended
    said = []
    resumed = RunFolder(out, {"seed": 0}, resume=True, log=said.append)
    assert resumed.state == "interrupted" and "resuming the interrupted run" in said[0]
    assert (resumed.work / "backup").is_dir()
    resumed.commit()
    assert (out / "backup").is_dir() and not (out / "report.md").exists()


# --------------------------------------------------------------------------- #
# --backup-dir belongs to one run (issue 30: a shared one restored another run's model)
# --------------------------------------------------------------------------- #
def _run_args(out, backup_dir, seed=0, **kw):
    import argparse

    return argparse.Namespace(out=str(out) if out else None, backup_dir=str(backup_dir), seed=seed, no_backup=False,
                              resume=kw.get("resume", False), overwrite=kw.get("overwrite", False))


def test_a_backup_dir_holding_another_runs_backup_is_refused_and_a_replaced_runs_is_cleared(tmp_path):
    from amp_tf.cli.runs import check_out, run_folder
    from amp_tf.run.backupdir import MARKER

    bk, a_out, b_out = tmp_path / "bk", tmp_path / "a", tmp_path / "b"
    a = run_folder(_run_args(a_out, bk), "fmnist", log=QUIET)  # run A claims bk ...
    meta = bk / "anchored" / "chief" / "training_metadata.json"
    meta.parent.mkdir(parents=True)
    meta.write_text('{"epoch": 1}')  # ... writes its first epoch's backup, and is killed
    a.release()
    assert json.loads((bk / MARKER).read_text())["out"] == str(a_out.absolute())
    for b in (_run_args(b_out, bk, seed=1), _run_args(None, bk, seed=1)):  # another run: refused, naming both
        with pytest.raises(ValueError, match=r"holds the backup of another run \(--out .*/a, .*this run \("):
            check_out(b)
    # the same refusal from the command, before TensorFlow, naming both runs and the fix
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "trainers.fmnist", "--seed", "1", "--backup-dir",
                           str(bk), "--out", str(b_out)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=120)
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 2 and err and str(a_out) in err[0] and str(b_out) in err[0], proc.stderr[-2000:]
    assert "Pass another --backup-dir, or remove" in err[0]
    assert "tensorflow" not in {ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines()}
    assert not b_out.exists() and meta.exists()
    # A itself: --resume keeps its backup, --overwrite starts afresh without it
    resumed = run_folder(_run_args(a_out, bk, resume=True), "fmnist", log=QUIET)
    assert resumed.state == "interrupted" and meta.exists()
    resumed.release()
    replaced = run_folder(_run_args(a_out, bk, overwrite=True), "fmnist", log=QUIET)
    assert not meta.exists() and json.loads((bk / MARKER).read_text())["out"] == str(a_out.absolute())
    replaced.release()
    # files that no run claimed are no backup to restore
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "weights.h5").write_text("x")
    with pytest.raises(ValueError, match=r"holds files that no amp-tf run claimed \(weights.h5"):
        check_out(_run_args(b_out, tmp_path / "other"))


def test_a_live_run_keeps_its_backup_dir_and_one_inside_out_is_refused(tmp_path):
    from amp_tf.cli.runs import check_out
    from amp_tf.run.backupdir import MARKER
    from amp_tf.run.runlock import proc_start

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        bk = tmp_path / "bk"
        bk.mkdir()
        import socket

        (bk / MARKER).write_text(json.dumps({"out": str(tmp_path / "a"), "pid": live.pid, "host": socket.gethostname(),
                                             "proc_start": proc_start(live.pid), "claimed": "now"}))
        with pytest.raises(ValueError, match=f"by process {live.pid}"):  # no backup yet, but its run is alive
            check_out(_run_args(tmp_path / "b", bk))
    finally:
        live.kill()
        live.wait()
    check_out(_run_args(tmp_path / "b", bk))  # its process gone and no backup left: free
    for backup in (tmp_path / "r" / "bk", tmp_path / "r"):
        with pytest.raises(ValueError, match=r"--backup-dir .* and --out .*/r lie inside one another"):
            check_out(_run_args(tmp_path / "r", backup))


def test_a_run_that_fails_on_a_full_disk_says_so_and_keeps_its_work(tmp_path):
    import errno

    run = RunFolder(tmp_path / "run", {"seed": 0}, log=QUIET)
    with pytest.raises(OSError, match=r"the disk that holds .* is full .*OSError: .*No space left.*the run.s work is "
                                      r"kept in .*\.run\.partial: free some space, then rerun with --resume"):
        with run.guard():
            raise OSError(errno.ENOSPC, "No space left on device", str(run.work / "events"))
    assert not run.held() and run.work.is_dir()
    other = RunFolder(tmp_path / "other", {"seed": 0}, log=QUIET)
    with pytest.raises(ValueError, match="^unrelated$"):  # a disk with room: the error as it was
        with other.guard():
            raise ValueError("unrelated")


TINY = ["--train-limit", "256", "--epochs", "1", "--batch-size", "64", "--width", "4", "--skip-vanilla",
        "--finetune-epochs", "0", "--eval-limit", "40", "--val-size", "64", "--num-anchors", "2", "--no-plots"]


@pytest.mark.slow
def test_resume_of_a_run_killed_after_its_export_finishes_it(tmp_path):
    """A run killed after its export (its .partial holds every file, serving/ included) is resumed with only
    --verbose changed (a flag that changes no result): the export is replaced, the run completes."""
    import socket

    done = tmp_path / "done"
    assert fmnist.main([*TINY, "--verbose", "0", "--out", str(done)])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    partial = tmp_path / ".iv.partial"
    shutil.copytree(done, partial)
    (partial / RunFolder.OWNER).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(),
                                                       "started": "earlier", "token": "killed"}))
    assert (partial / "serving").is_dir() and (partial / "model.tflite").is_file()
    results = fmnist.main([*TINY, "--verbose", "2", "--out", str(tmp_path / "iv"), "--resume"])
    out = tmp_path / "iv"
    assert results["out"] == str(out) and not partial.exists()
    assert (out / "serving" / "saved_model.pb").is_file() and (out / "report.json").is_file()
    assert not (out / RunFolder.OWNER).exists()
