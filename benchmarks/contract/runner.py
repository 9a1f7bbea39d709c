"""How the probe runs a command and reads its answer (pure Python: no TensorFlow).

Every command runs as ``python -X importtime ...`` so that the answer tells whether TensorFlow was
imported (a flag-only mistake must be answered before it is); the import-time lines and
TensorFlow's start-up log lines are removed from what is kept.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
_TF_LINE = re.compile(r"\|\s*tensorflow\s*$")
_NOISE = re.compile(r"^(import time:|WARNING: All log messages|[IWE]\d{4} |To enable the following|"
                    r".*(cpu_feature_guard|oneDNN custom operations|port\.cc|absl::InitializeLog))")


def env():
    """The environment of every probed command: the repository importable, unbuffered output, offline."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO)
    e["PYTHONUNBUFFERED"] = "1"
    e.pop("AMP_TF_DEBUG", None)
    e.setdefault("NO_GCE_CHECK", "true")
    return e


def command(argv):
    """The full command line of a case's `argv` (already formatted)."""
    return [PY, "-X", "importtime", *argv]


def spawn(argv, cwd, **kw):
    """Starts a probed command (stdout/stderr to files in `cwd`); returns the Popen with ``t0`` set."""
    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    n = len(list(cwd.glob("stdout*.txt")))
    out, err = open(cwd / f"stdout{n}.txt", "w"), open(cwd / f"stderr{n}.txt", "w")
    # a user's terminal delivers Ctrl-C: undo the SIG_IGN that a background (`&`) probe passes on, or Python
    # would install no KeyboardInterrupt handler in the command
    kw.setdefault("preexec_fn", lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    p = subprocess.Popen(command(argv), cwd=cwd, env=env(), stdout=out, stderr=err, text=True, **kw)
    p.t0, p.files, p.argv = time.time(), (cwd / f"stdout{n}.txt", cwd / f"stderr{n}.txt"), argv
    out.close()
    err.close()
    return p


def finish(p, timeout):
    """Waits for a spawned command (killing it after `timeout` s); returns its result dict."""
    timed_out = False
    try:
        p.wait(timeout=max(0.1, timeout - (time.time() - p.t0)))
    except subprocess.TimeoutExpired:
        timed_out = True
        p.send_signal(signal.SIGKILL)
        p.wait()
    seconds = time.time() - p.t0
    stdout, stderr = (f.read_text(errors="replace") for f in p.files)
    return parse(p.returncode, stdout, stderr, seconds, timed_out, p.argv)


def run(argv, cwd, timeout):
    """Runs one probed command to its end."""
    return finish(spawn(argv, cwd), timeout)


def parse(code, stdout, stderr, seconds, timed_out=False, argv=()):
    """The result dict of a command: exit code, seconds, whether TensorFlow was imported, its answer."""
    err_lines = stderr.splitlines()
    tf = any(_TF_LINE.search(line) for line in err_lines if line.startswith("import time:"))
    kept = [line for line in err_lines if not _NOISE.match(line)]
    out_lines = [line for line in stdout.splitlines() if line.strip()]
    traceback = any(line.startswith("Traceback (most recent call last)") for line in kept)
    answer = ""
    if code != 0 or timed_out:
        if traceback:
            answer = next((ln for ln in reversed(kept) if ln.strip() and not ln.startswith(" ")), "")
        else:
            answer = next((ln for ln in kept if "error:" in ln or "error " in ln.lower()[:12]), "") or next(
                (ln for ln in reversed(kept) if ln.strip()), "") or (out_lines[-1] if out_lines else "")
    else:
        answer = (out_lines[0] if out_lines else "") or next((ln for ln in kept if ln.strip()), "")
    return {"exit": code, "seconds": round(seconds, 2), "tf": tf, "timeout": timed_out, "traceback": traceback,
            "answer": answer.strip()[:600], "stderr_tail": "\n".join(kept[-8:])[-1500:],
            "stdout_tail": "\n".join(out_lines[-6:])[-1200:], "stdout": stdout[-20000:],
            "cmd": " ".join(_quote(a) for a in argv)}


def _quote(a):
    a = str(a)
    return a if a and re.fullmatch(r"[\w@%+=:,./-]+", a) else "'" + a.replace("'", "'\"'\"'") + "'"


def wait_for(predicate, timeout, step=0.1):
    """Polls `predicate()` until it is true or `timeout` s pass; returns its last value."""
    end = time.time() + timeout
    while time.time() < end:
        v = predicate()
        if v:
            return v
        time.sleep(step)
    return predicate()
