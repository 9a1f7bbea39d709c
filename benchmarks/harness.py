"""What every benchmark shares: timing in alternation, machine info and contention, results.

Timing: contenders are called in rotating order (A B C, B C A, ...) so that slow
drifts of the machine hit all of them alike, and medians are reported.
`alternate` times one call per sample; `interleaved` first warms up and
calibrates each contender to a number of calls per sample.

Machine: `machine_info` (platform, CPU model and its vector extensions, cores,
GPUs, TF threads), `vector_extensions` (AVX2 / AVX-512 / AMX from /proc/cpuinfo),
`Contention` (the machine's CPU used by other processes, and the hypervisor's
steal share, over an interval, from /proc/stat), `vm_hwm_bytes` (peak RSS).

Results: `versions`, `write_json` (atomic), `Log` for a benchmark's `main` (which
answers user errors with `amp_tf.errors.cli_errors`, as the CLIs do).

TensorFlow is imported lazily (only `sync` and `machine_info` need it).

Example:

>>> from benchmarks import harness
>>> res = harness.alternate({"a": lambda: sum(range(100)), "b": lambda: None}, rounds=3)
>>> sorted(res), len(res["a"]["samples"])
(['a', 'b'], 3)
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

#: The repository root (benchmarks/ is one level below it).
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- timing
def sync(out):
    """Forces a result to the host (CPU execution is synchronous; this is a guard)."""
    import tensorflow as tf

    leaf = tf.nest.flatten(out)[0]
    return leaf.numpy() if hasattr(leaf, "numpy") else leaf


def calibrate(fn, min_sample_s):
    """Calls per sample so that one sample of `fn` lasts at least `min_sample_s`."""
    t = time.perf_counter()
    sync(fn())
    dt = time.perf_counter() - t
    return max(1, math.ceil(min_sample_s / max(dt, 1e-6)))


def rotate(fns, rounds, number=None, sync_out=False, log=None):
    """Raw samples: `rounds` rounds over `fns` in rotating order.

    Args:
        fns: `{name: callable}`.
        rounds: samples per contender.
        number: `{name: calls per sample}` (default 1); a sample is the mean call.
        sync_out: `sync` the last call's result inside the timed region.
        log: called with one line per round (the wall seconds of each sample).

    Returns:
        `({name: [wall s]}, {name: [process CPU s]})`, per call.
    """
    names = list(fns)
    samples = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            fn, n = fns[name], (number or {}).get(name, 1)
            c, t = time.process_time(), time.perf_counter()
            for _ in range(n):
                out = fn()
            if sync_out:
                sync(out)
            samples[name].append((time.perf_counter() - t) / n)
            cpu[name].append((time.process_time() - c) / n)
        if log:
            log("    round %d: " % (r + 1) + ", ".join(f"{n} {samples[n][-1]:.2f}s" for n in names))
    return samples, cpu


def summary(samples, cpu=None, number=1):
    """Median / min / max seconds of `samples` (and the median CPU seconds)."""
    out = {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "samples": len(samples),
        "calls_per_sample": number,
    }
    if cpu:
        out["median_cpu_s"] = statistics.median(cpu)
    return out


def interleaved(fns, repeats, min_sample_s, warmup=2):
    """Seconds per call of each fn: medians of `repeats` samples taken in rotating order.

    Every fn is warmed up (traced) first; a sample repeats a call `number` times
    so that it lasts >= `min_sample_s`. Interleaving makes slow drifts of the
    machine hit all contenders alike, which keeps their ratios honest.
    """
    for name in fns:
        for _ in range(warmup):
            sync(fns[name]())
    number = {name: calibrate(fns[name], min_sample_s) for name in fns}
    samples, cpu = rotate(fns, repeats, number, sync_out=True)
    return {name: summary(samples[name], cpu[name], number[name]) for name in fns}


def alternate(fns, rounds, warmup=1, log=None):
    """Wall seconds of each fn, called in rotating order `rounds` times after `warmup` calls.

    Returns `{name: {"median_s", "min_s", "samples" (list), "median_cpu_s"}}`.
    """
    for name in fns:
        for _ in range(warmup):
            fns[name]()
    samples, cpu = rotate(fns, rounds, log=log)
    return {n: {"median_s": statistics.median(s), "min_s": min(s), "samples": s,
                "median_cpu_s": statistics.median(cpu[n])} for n, s in samples.items()}


def repeat_to(fn, min_s):
    """A fn that calls `fn` enough times to last >= min_s; returns (wrapped, calls)."""
    fn()
    t = time.perf_counter()
    fn()
    n = max(1, math.ceil(min_s / max(time.perf_counter() - t, 1e-6)))

    def many():
        for _ in range(n):
            out = fn()
        return out
    return many, n


def median_or_none(values):
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------- machine
def _cpuinfo_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model():
    """The CPU's model name (/proc/cpuinfo), else `platform.processor()`, else "unknown"."""
    return _cpuinfo_model() or platform.processor() or "unknown"


def cpu_flags():
    """The CPU's feature flags (the first `flags` line of /proc/cpuinfo), an empty set off Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


#: AVX-512 subsets worth naming (oneDNN picks kernels by them), flag -> label.
AVX512_SUBSETS = {"avx512f": "F", "avx512bw": "BW", "avx512vl": "VL", "avx512_vnni": "VNNI",
                  "avx512_bf16": "BF16", "avx512_fp16": "FP16"}
AMX_FLAGS = {"amx_tile": "TILE", "amx_bf16": "BF16", "amx_int8": "INT8", "amx_fp16": "FP16"}


def vector_extensions(flags=None):
    """The SIMD extensions that decide TF/oneDNN's kernels: `{"avx2", "avx512", "amx", "summary"}`.

    `summary` is one line such as "AVX2, AVX-512 (F, BW, VL, VNNI, BF16), no AMX": our
    machine kinds differ by more than the CPU model name says.

    Example:

    >>> vector_extensions({"avx2", "avx512f", "avx512bw"})["summary"]
    'AVX2, AVX-512 (F, BW), no AMX'
    >>> vector_extensions(set())["summary"]
    'no AVX2, no AVX-512, no AMX'
    """
    flags = cpu_flags() if flags is None else set(flags)
    avx512 = [label for flag, label in AVX512_SUBSETS.items() if flag in flags]
    amx = [label for flag, label in AMX_FLAGS.items() if flag in flags]
    parts = ["AVX2" if "avx2" in flags else "no AVX2",
             f"AVX-512 ({', '.join(avx512)})" if avx512 else "no AVX-512",
             f"AMX ({', '.join(amx)})" if amx else "no AMX"]
    return {"avx2": "avx2" in flags, "avx512": avx512, "amx": amx, "summary": ", ".join(parts)}


def machine_info():
    """Platform, cores (and affinity), CPU model, GPUs, TF thread settings, thread env vars."""
    import tensorflow as tf

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        pass
    if _cpuinfo_model():
        info["cpu_model"] = _cpuinfo_model()
    info["vector_extensions"] = vector_extensions()["summary"]
    info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    info["tf_threads"] = {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "note": "0 = TensorFlow's default (all cores); left at the defaults",
    }
    info["env"] = {k: os.environ.get(k) for k in (
        "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
        "TF_ENABLE_ONEDNN_OPTS", "KERAS_BACKEND") if os.environ.get(k) is not None}
    return info


def thread_settings(torch=None):
    """Cores, TF intra/inter-op threads, oneDNN / OpenMP env vars (and torch's threads)."""
    import tensorflow as tf

    out = {
        "cores": os.cpu_count(),
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: on)"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
    }
    if torch is not None:
        out["torch_threads"] = torch.get_num_threads()
        out["torch_interop_threads"] = torch.get_num_interop_threads()
    return out


def load_average():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def vm_hwm_bytes():
    """Peak resident set size of this process (VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except Exception:  # pragma: no cover
        return None


def proc_stat():
    """CPU jiffies since boot from /proc/stat, or None off Linux.

    Returns `{"total", "busy", "steal", "own"}`: all CPU time of the machine,
    its busy part (all but idle and iowait), the hypervisor's steal, and this
    process' user + system time.
    """
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total = sum(vals[:8])
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return {"total": total, "busy": total - idle, "steal": vals[7] if len(vals) > 7 else 0,
                "own": int(fields[11]) + int(fields[12])}
    except (OSError, ValueError, IndexError):
        return None


class Contention:
    """How busy the machine was between construction and a call (Linux /proc/stat).

    `share()`: CPU time used by OTHER processes / all CPU time available; on a
    quiet machine ~0, above a few percent wall-clock timings (and to a lesser
    degree their ratios) are noisy. `busy_share()`: all processes, this one
    included. `steal_share()`: the time the hypervisor gave to other guests.
    Each is None off Linux.

    Example:

    >>> c = Contention()
    >>> c.share() is None or 0.0 <= c.share() <= 1.0
    True
    """

    def __init__(self):
        self.start = proc_stat()

    def _delta(self):
        end = proc_stat()
        if self.start is None or end is None or end["total"] <= self.start["total"]:
            return None
        return {k: end[k] - self.start[k] for k in end}

    def share(self):
        d = self._delta()
        return None if d is None else max(0.0, (d["busy"] - d["own"]) / d["total"])

    def busy_share(self):
        d = self._delta()
        return None if d is None else d["busy"] / d["total"]

    def steal_share(self):
        d = self._delta()
        return None if d is None else d["steal"] / d["total"]


# --------------------------------------------------------------------------- results
def versions():
    """Python, TensorFlow, Keras, NumPy, amp_tf versions, the machine, and amp_tf's git revision."""
    import keras
    import numpy as np
    import tensorflow as tf

    import amp_tf

    v = {"amp_tf": amp_tf.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
         "numpy": np.__version__, "python": platform.python_version(),
         "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
        if rev.returncode == 0:
            v["amp_tf_git"] = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return v


def _json_default(o):
    if hasattr(o, "item") and getattr(o, "ndim", None) == 0:  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):  # arrays
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def write_json(path, obj, indent=2):
    """Writes `obj` as JSON (indented unless `indent=None`), atomically (a temporary file, then a rename).

    NumPy scalars and arrays become numbers and lists, paths strings.

    Example:

    >>> import json, tempfile, numpy as np
    >>> p = Path(tempfile.mkdtemp()) / "sub" / "r.json"
    >>> write_json(p, {"x": np.float32(0.5), "n": np.int64(3)})
    >>> json.loads(p.read_text())
    {'x': 0.5, 'n': 3}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent, default=_json_default))
    os.replace(tmp, path)


class Log:
    """Prints a line at once (flushed), prefixed by `[name <seconds since t0> s]` when named.

    `t0`: a `time.time()` to count from (default: now).
    """

    def __init__(self, name=None, width=7, t0=None):
        self.name, self.width, self.t0 = name, width, time.time() if t0 is None else t0

    def __call__(self, msg):
        if self.name:
            msg = f"[{self.name} {time.time() - self.t0:{self.width}.0f} s] {msg}"
        print(msg, flush=True)


def ints(text):
    """'1, 2,5' -> [1, 2, 5]."""
    return [int(v) for v in str(text).replace(" ", "").split(",") if v]


def parse_quick(parser, argv, quick):
    """`(args, argv)`: `argv` (None: the command line) parsed with `quick` as the defaults when
    `--quick` is given, so explicit flags still override the quick settings."""
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    if "--quick" in argv:
        parser.set_defaults(**quick)
    return parser.parse_args(argv), argv
