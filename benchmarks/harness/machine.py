"""The machine a benchmark ran on, and how busy it was.

`machine_info` (platform, CPU model and its vector extensions, cores, GPUs, TF
threads), `vector_extensions` (AVX2 / AVX-512 / AMX from /proc/cpuinfo),
`Contention` (the machine's CPU used by other processes, and the hypervisor's
steal share, over an interval, from /proc/stat), `vm_hwm_bytes` (peak RSS),
`versions` (Python, TensorFlow, Keras, NumPy, amp_tf and its git revision).
TensorFlow is imported lazily (`machine_info`, `thread_settings`, `versions`).
"""

from __future__ import annotations

import os
import platform
import subprocess

from benchmarks.harness import ROOT


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


#: Environment variables that cap the vector extensions the kernels use (oneDNN in TF and PyTorch; PyTorch's
#: own ATen kernels): `ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2` runs AVX2 kernels on an AVX-512 CPU.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def isa_cap_note():
    """`" (kernels capped: ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2)"` when a cap is set, else ""."""
    caps = [f"{k}={os.environ[k]}" for k in ISA_CAPS if os.environ.get(k)]
    return f" (kernels capped: {', '.join(caps)})" if caps else ""


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
    info["vector_extensions"] = vector_extensions()["summary"] + isa_cap_note()
    info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    info["tf_threads"] = {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "note": "0 = TensorFlow's default (all cores); left at the defaults",
    }
    info["env"] = {k: os.environ.get(k) for k in (
        "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
        "TF_ENABLE_ONEDNN_OPTS", "KERAS_BACKEND", *ISA_CAPS) if os.environ.get(k) is not None}
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
