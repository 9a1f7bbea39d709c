"""The printed report of `benchmarks.speed`, and the notes on method stored with its results."""

from __future__ import annotations

import os

from benchmarks.harness.machine import cpu_model
from benchmarks.speed.core import TARGETS

NOTES = [
    "Training: both models are compiled with SGD(0.01, momentum 0.9) and sparse CE from logits "
    "(no metrics), warmed up by one train_on_batch and one full cycle. Each timed sample is one "
    "cycle of 5 consecutive calls of the compiled Keras train function (model.train_function, "
    "what fit runs per step) on an iterator over a repeated in-memory tf.data batch, so exactly "
    "one of the 5 anchored steps applies the consistency transform T (consistency_every=5), at "
    "its real frequency. train_overhead = median anchored cycle / median vanilla cycle. The "
    "per-step medians with and without T split the overhead into anchoring (permutation, "
    "concat, 2C-channel stem, label checks) and T.",
    "Inference: every path is a tf.function called on a tf.constant batch: vanilla = "
    "backbone(x) on the C-channel model; tiled = AnchoredPredictor's compiled call (one K*B "
    "batch, all AMP outputs); folded = FoldedAnchoredPredictor (same outputs); loop = a Python "
    "loop over anchors calling a compiled single-anchor forward (concat + backbone), then "
    "stack + the compiled AMP reduction. A sample repeats a call until it lasts >= "
    "min_sample_s; contenders are interleaved in rotating order and medians reported.",
    "Memory: TensorFlow's CPU allocator has no per-run peak query "
    "(tf.config.experimental.get_memory_info does not support CPU), so we report the analytic "
    "size of the K*B tiled input and of the K*B stem output (the same in tiled and folded), "
    "and VmHWM (the process' peak RSS, monotone) after each scaling row and at the end. VmHWM "
    "includes TensorFlow itself, the training benchmark and allocator caching; it only rises "
    "when a row needs more than all earlier ones.",
    "Contention: contention.other_processes_cpu_share is the CPU time used by other processes "
    "(from /proc/stat minus this process) over the run; above a few percent, wall-clock "
    "timings are disturbed. cpu_time_ratios repeat the headline ratios on this process' CPU "
    "time as a cross-check (less sensitive to sharing, though TF's spinning thread pools count).",
    "min_time_ratios: the headline ratios from the fastest sample of each contender (for "
    "training: the fastest whole cycle), the classic timeit estimator when noise is additive.",
    "tiled_chunked = AnchoredPredictor(max_batch=B): the same K*B rows run in K chunks of B "
    "(tf.map_fn), to separate the cost of one huge batch (cache-unfriendly on CPU) from "
    "tiling itself.",
    "Training ratio: train_overhead = ((median T step) + 4 x (median other anchored step)) / "
    "(median vanilla step), i.e. T weighted at its real 1-in-5 frequency, from per-step "
    "medians over all timed cycles (robust to single-step spikes); the ratio of whole-cycle "
    "medians is train_overhead_from_cycles.",
    "Threads: TensorFlow's defaults (intra/inter-op 0 = all cores); XLA is off (Keras' "
    "jit_compile='auto' disables it on CPU-only machines). Vanilla and anchored backbones have "
    "the same architecture except the stem's input channels (C vs 2C).",
]



def print_core(results, args):
    t = results["training"]
    ips = results["inference"]["images_per_s"]
    cost = results["cost_model"]
    cpu = results["cpu_time_ratios"]
    print()
    print(f"amp-tf speed benchmark: {args.arch} {args.image_shape}, batch {args.batch_size}, "
          f"K={args.k}, repeats {args.repeats}{' (quick)' if args.quick else ''}")
    print(f"{'metric':<18}{'value':>8}  {'target':<9}{'status':<8}{'cpu-time':>9}{'min':>7}  detail")
    print("-" * 117)
    a = t["anchored"]
    detail = {
        "train_overhead": (
            f"anchored {1e3 * a['step_median_s']:.0f} ms/step (T step {1e3 * a['step_with_T_median_s']:.0f}, "
            f"others {1e3 * a['step_without_T_median_s']:.0f}) vs vanilla "
            f"{1e3 * t['vanilla']['step_median_s']:.0f}; from whole cycles "
            f"{results['train_overhead_from_cycles']:.3f}"),
        "amp_k_efficiency": (
            f"tiled {ips['tiled']:.0f} img/s x{args.k} vs vanilla {ips['vanilla']:.0f} img/s; "
            f"chunks of B: {results['amp_k_efficiency_tiled_chunked']:.3f}, folded: "
            f"{results['amp_k_efficiency_folded']:.3f}"),
        "folded_speedup": (
            f"stem = {100 * cost['stem_mac_fraction']:.2f}% of MACs, MAC bound "
            f"{cost['folded_speedup_upper_bound_from_macs']:.3f}; max |diff| "
            f"{results['inference']['folded_max_abs_diff_vs_tiled']:.1e}"),
        "tiled_vs_loop": (
            f"loop {ips['loop']:.0f} img/s vs tiled {ips['tiled']:.0f}, tiled in chunks of B "
            f"{ips['tiled_chunked']:.0f} (loop/chunked {results['tiled_chunked_vs_loop']:.3f})"),
    }
    for name in TARGETS:
        v = results["targets"][name]
        status = "info" if v["met"] is None else ("met" if v["met"] else "MISSED")
        print(f"{name:<18}{v['value']:>8.3f}  {v['target'] or '-':<9}{status:<8}"
              f"{cpu[name]:>9.3f}{results['min_time_ratios'][name]:>7.3f}  {detail[name]}")
    print()
    print("K scaling at batch %d (images/s; eff = K x vanilla time / time):" % args.batch_size)
    for row in results["k_scaling"]:
        parts = [f"{kind} {row[kind]['images_per_s']:7.1f} (eff {row[kind]['k_efficiency']:.3f})"
                 for kind in ("single", "tiled", "tiled_chunked", "folded") if kind in row]
        print(f"  K={row['k']:>3}  " + "  ".join(parts)
              + f"  | tiled input {row['tiled_input_bytes'] / 2**20:.1f} MiB, VmHWM "
                f"{(row['vm_hwm_after_bytes'] or 0) / 2**20:.0f} MiB")
    print("batch scaling at K=%d (images/s):" % args.k)
    for row in results["batch_scaling"]:
        print(f"  B={row['batch_size']:>4}  vanilla {row['vanilla']['images_per_s']:7.1f}  tiled "
              f"{row['tiled']['images_per_s']:7.1f}  chunked {row['tiled_chunked']['images_per_s']:7.1f}  "
              f"folded {row['folded']['images_per_s']:7.1f}  K-eff tiled {row['amp_k_efficiency_tiled']:.3f}"
              f"  chunked {row['amp_k_efficiency_tiled_chunked']:.3f}")
    share = results["contention"]["other_processes_cpu_share"]
    if share is not None:
        flag = "  <-- timings disturbed by other processes" if share > 0.05 else ""
        by = ", ".join(f"{k} {100 * v:.0f}%" for k, v in results["contention"]["by_section"].items()
                       if v is not None)
        print(f"other processes used {100 * share:.0f}% of the machine's CPU during the run "
              f"({by}){flag}")
    steal = results["contention"].get("steal_share")
    if steal is not None and steal >= 0.005:
        print(f"the hypervisor took {100 * steal:.0f}% of the machine's CPU for other guests (steal)")


def print_peer(results):
    peer = results["peer"]
    print()
    print(f"amp-tf vs PyTorch {peer['torch'] or '(not installed)'} on this CPU: resnet_small width "
          f"{peer['settings']['width']}, batch {peer['settings']['batch_size']}, "
          f"{peer['settings']['n_train']} images per epoch, {peer['settings']['rounds']} alternating rounds")
    for n, r in peer["training"].items():
        print(f"  train {n:<20}{r['images_per_s']:>8.0f} img/s  ({r['median_s']:.2f} s/epoch, "
              f"cpu {r['median_cpu_s']:.2f} s)")
    for n, r in peer["inference"].items():
        print(f"  infer {n:<20}{r['images_per_s']:>8.0f} img/s")
    if "skipped" in peer:
        print(f"  peer ratios skipped: {peer['skipped']}")
        return
    for n, v in peer["ratios"].items():
        t = results["targets"].get(n)
        status = "" if t is None else f"  target {t['target']}: {'met' if t['met'] else 'MISSED'}"
        print(f"  {n:<34}{v:>7.3f}{status}")


def print_internals(results):
    bn, td = results["internals"]["batchnorm"], results["internals"]["tf_data"]
    print()
    ms = bn["ms_per_step"]
    print(f"fused BatchNorm: training step {ms['step_fused_batchnorm']:.1f} ms vs Keras' BatchNormalization "
          f"{ms['step_keras_batchnorm']:.1f} ms -> x{bn['speedup']:.3f}")
    print(f"tf.data, fit epochs of {td['steps_per_epoch']} steps: fixed tuning (amp-tf) median "
          f"{td['median_s']['epoch_fixed_tuning']:.2f} s (max {td['max_s']['epoch_fixed_tuning']:.2f}, "
          f"{td['slow_epochs']['epoch_fixed_tuning']} slow) vs autotuning "
          f"{td['median_s']['epoch_autotune']:.2f} s (max {td['max_s']['epoch_autotune']:.2f}, "
          f"{td['slow_epochs']['epoch_autotune']} slow) -> x{td['speedup']:.3f}  (slow: > 1.3 x the fastest epoch)")
    fa = results["internals"].get("fit_arrays")
    if fa:
        med, avg = fa["median_s"], fa["mean_s"]
        print(f"AnchoredModel.fit on arrays ({fa['images']} images): amp-tf's batches median "
              f"{med['fit_arrays_amp_tf']:.2f} s (mean {avg['fit_arrays_amp_tf']:.2f}) vs Keras' array adapter "
              f"{med['fit_arrays_keras_adapter']:.2f} s (mean {avg['fit_arrays_keras_adapter']:.2f}) -> "
              f"x{fa['speedup']:.3f} (means: x{fa['speedup_mean']:.3f})")


def print_table(results, args, wall):
    if "training" in results:
        print_core(results, args)
    if "peer" in results:
        print_peer(results)
    if "internals" in results:
        print_internals(results)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores")
    print(f"peak RSS {results['peak_rss_bytes'] / 2**20:.0f} MiB; wall time {wall:.1f} s")
