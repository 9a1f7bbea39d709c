"""Timing in alternation: contenders called in rotating order, medians reported.

Contenders are called in rotating order (A B C, B C A, ...) so that slow drifts
of the machine hit all of them alike. `alternate` times one call per sample;
`interleaved` first warms up and calibrates each contender to a number of calls
per sample; `rotate` returns the raw samples. TensorFlow is imported lazily
(only `sync` needs it).

Example:

>>> from benchmarks.harness import timing
>>> res = timing.alternate({"a": lambda: sum(range(100)), "b": lambda: None}, rounds=3)
>>> sorted(res), len(res["a"]["samples"])
(['a', 'b'], 3)
"""

from __future__ import annotations

import math
import statistics
import time


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
