"""The core section of `benchmarks.speed`: anchored training overhead, AMP inference, K and batch scaling.

Every path is timed with `benchmarks.harness.timing.interleaved` (rotating order,
medians); see `benchmarks.speed` for what each ratio means and
`benchmarks.speed.report.NOTES` for how it is measured.
"""

from __future__ import annotations

import datetime
import time

import keras
import numpy as np
import tensorflow as tf

from amp_tf.method.anchoring import AnchoredModel
from amp_tf.serve.folded import FoldedAnchoredPredictor, find_stem
from amp_tf.models import build_backbone
from amp_tf.method.predictor import AnchoredPredictor, amp_outputs
from benchmarks.harness.machine import Contention, load_average, vm_hwm_bytes
from benchmarks.harness.timing import interleaved, median_or_none, sync
from benchmarks.speed.targets import PEER_TARGETS, TARGETS, verdict  # noqa: F401  (importable from here)

CYCLE = 5  # training steps per timed cycle = consistency_every


# ---------------------------------------------------------------------- models
def make_backbone(args, anchored, seed):
    keras.utils.set_random_seed(seed)
    kwargs = {"width": args.width} if args.width else {}
    return build_backbone(args.arch, args.image_shape, args.num_classes, anchored=anchored, **kwargs)


def data(args, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 255.0, (n,) + args.image_shape).astype("float32")  # raw pixels
    y = rng.integers(0, args.num_classes, n).astype("int32")
    return x, y


def conv_macs(model):
    """Multiply-accumulates per image of every Conv2D / Dense layer: {name: macs}."""
    macs = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            macs[layer.name] = int(h * w * kh * kw * cin * cout)
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            macs[layer.name] = int(cin * cout)
    return macs


# -------------------------------------------------------------------- training
def bench_training(args, log):
    """Step times of AnchoredModel and the vanilla backbone, cycles of CYCLE steps."""
    b = args.batch_size
    x, y = data(args, b, args.seed)
    dataset = tf.data.Dataset.from_tensors((tf.constant(x), tf.constant(y))).repeat()
    models = {
        "anchored": AnchoredModel(
            make_backbone(args, True, args.seed), consistency="all", consistency_every=CYCLE,
            seed=args.seed,
        ),
        "vanilla": make_backbone(args, False, args.seed),
    }
    steps, iterators = {}, {}
    for name, model in models.items():
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True if args.jit_compile else "auto",
        )
        model.train_on_batch(x[:8], y[:8])  # builds weights, optimizer slots, train_function
        iterators[name] = iter(dataset)
        steps[name] = model.train_function

    per_step = {name: [] for name in models}  # (is_T_step, wall_s, cpu_s) per step

    def cycle(name):
        model, fn, it = models[name], steps[name], iterators[name]
        for _ in range(CYCLE):
            t_step = model.optimizer.iterations.numpy()
            c, t = time.process_time(), time.perf_counter()
            out = fn(it)
            sync(out)
            dt = time.perf_counter() - t
            is_t = name == "anchored" and t_step % CYCLE == 0
            per_step[name].append((is_t, dt, time.process_time() - c))
        return out

    log(f"  training: warm-up, then {args.repeats} interleaved cycles of {CYCLE} steps each ...")
    fns = {name: (lambda name=name: cycle(name)) for name in models}
    # Warm-up cycles are timed into per_step too; drop them afterwards.
    for name in fns:
        fns[name]()
    for name in per_step:
        per_step[name] = []
    res = interleaved(fns, args.repeats, min_sample_s=0.0, warmup=0)
    out = {}
    for name in models:
        steps_ = per_step[name]

        def med(is_t, col):
            return median_or_none([row[col] for row in steps_ if row[0] == is_t])

        out[name] = {
            "cycle": dict(res[name]),
            "cycle_step_median_s": res[name]["median_s"] / CYCLE,
            "step_without_T_median_s": med(False, 1),
            "steps_timed": len(steps_),
        }
        if name == "anchored":
            # T at its real frequency, 1 step in CYCLE; medians per kind are robust to spikes
            out[name]["step_with_T_median_s"] = med(True, 1)
            out[name]["step_median_s"] = (med(True, 1) + (CYCLE - 1) * med(False, 1)) / CYCLE
            out[name]["step_cpu_median_s"] = (med(True, 2) + (CYCLE - 1) * med(False, 2)) / CYCLE
        else:
            out[name]["step_median_s"] = med(False, 1)
            out[name]["step_cpu_median_s"] = med(False, 2)
    out["jit_compile"] = {name: bool(m.jit_compile) for name, m in models.items()}
    return out


# ------------------------------------------------------------------- inference
class Inference:
    """Compiled forward functions sharing one anchored and one vanilla backbone."""

    def __init__(self, args):
        self.args = args
        self.anchored = make_backbone(args, True, args.seed)
        self.vanilla = make_backbone(args, False, args.seed)
        pool, _ = data(args, max(64, max(args.k_list)), args.seed + 1)
        self.anchor_pool = pool
        self._vanilla_fn = tf.function(lambda x: self.vanilla(x, training=False), reduce_retracing=True)
        self._single_fn = tf.function(self._single, reduce_retracing=True)
        self._amp_fn = tf.function(amp_outputs, reduce_retracing=True)
        self._predictors = {}

    def _single(self, x, c):
        """One anchored forward: [c, x - c] for one anchor c (H, W, C)."""
        cs = tf.broadcast_to(c[None], tf.shape(x))
        return self.anchored(tf.concat([cs, x - cs], axis=-1), training=False)

    def predictor(self, kind, k, max_batch="auto"):
        """`tiled` / `folded`: the library's default execution (`max_batch="auto"`); `tiled_chunked`:
        chunks of B rows; `tiled_one_batch`: one K*B batch (max_batch=None)."""
        key = (kind, k, max_batch)
        if key not in self._predictors:
            cls = AnchoredPredictor if kind.startswith("tiled") else FoldedAnchoredPredictor
            p = cls(self.anchored, self.anchor_pool[:k], max_batch=max_batch, mean=127.5, std=127.5)
            self._predictors[key] = (p, p._predict_fn())
        return self._predictors[key]

    def fns(self, x, k, kinds=("vanilla", "tiled", "tiled_chunked", "tiled_one_batch", "folded", "loop")):
        b = len(x)
        x = tf.constant(x)
        anchors = tf.constant(self.anchor_pool[:k])
        out = {}
        for kind in kinds:
            if kind == "vanilla":
                out[kind] = lambda: self._vanilla_fn(x)
            elif kind == "single":
                out[kind] = lambda: self._single_fn(x, anchors[0])
            elif kind == "loop":
                def loop():
                    logits = [self._single_fn(x, anchors[i]) for i in range(k)]
                    return self._amp_fn(tf.stack(logits))["amp_score"]
                out[kind] = loop
            else:  # tiled_chunked: the K*B rows in chunks of B (max_batch=B)
                mb = {"tiled_chunked": b, "tiled_one_batch": None}.get(kind, "auto")
                _, fn = self.predictor(kind, k, mb)
                out[kind] = lambda fn=fn: fn(x)["amp_score"]
        return out


def check_folded_equals_tiled(inf, x, k):
    tiled, _ = inf.predictor("tiled", k)
    folded, _ = inf.predictor("folded", k)
    a, b = tiled(tf.constant(x)), folded(tf.constant(x))
    return max(float(np.max(np.abs(np.asarray(a[key], "float64") - np.asarray(b[key], "float64"))))
               for key in ("logits", "tau", "amp_score", "probabilities"))


def k_scaling(args, inf, x_main, res, log):
    """Images/s and K-efficiency per K at the headline batch (the headline K reuses `res`)."""
    b, (h, w, c) = args.batch_size, args.image_shape
    rows = []
    for kk in sorted(args.k_list):
        kinds = ("vanilla", "single") if kk == 1 else ("vanilla", "tiled", "tiled_chunked", "folded")
        if kk == args.k:  # the headline measurement (same K and batch): reuse it
            r = res
        else:
            r = interleaved(inf.fns(x_main, kk, kinds), args.repeats, args.min_sample_s, warmup=2)
        row = {"k": kk, "batch_size": b}
        for kind in kinds[1:]:
            t = r[kind]["median_s"]
            row[kind] = {
                "median_s": t,
                "images_per_s": b / t,
                "rows_per_s": kk * b / t,
                "k_efficiency": kk * r["vanilla"]["median_s"] / t,
            }
        row["vanilla_images_per_s"] = b / r["vanilla"]["median_s"]
        row["tiled_input_bytes"] = kk * b * h * w * 2 * c * 4
        row["vm_hwm_after_bytes"] = vm_hwm_bytes()
        rows.append(row)
        log(f"    K={kk:>3}: " + ", ".join(
            f"{kind} {row[kind]['images_per_s']:8.1f} img/s (eff {row[kind]['k_efficiency']:.3f})"
            for kind in kinds[1:]) + f"; vanilla {row['vanilla_images_per_s']:8.1f} img/s")
    return rows


def batch_scaling(args, inf, res, log):
    """Images/s and K-efficiency per batch size at the headline K (the headline batch reuses `res`)."""
    k, (h, w, c) = args.k, args.image_shape
    rows = []
    for bb in sorted(args.batch_list):
        kinds = ("vanilla", "tiled", "tiled_chunked", "folded")
        if bb == args.batch_size:  # the headline measurement: reuse it
            r = res
        else:
            xb, _ = data(args, bb, args.seed + 3)
            r = interleaved(inf.fns(xb, k, kinds), args.repeats, args.min_sample_s)
        row = {"batch_size": bb, "k": k}
        for kind in kinds:
            row[kind] = {"median_s": r[kind]["median_s"], "images_per_s": bb / r[kind]["median_s"]}
        row["amp_k_efficiency_tiled"] = k * r["vanilla"]["median_s"] / r["tiled"]["median_s"]
        row["amp_k_efficiency_tiled_chunked"] = k * r["vanilla"]["median_s"] / r["tiled_chunked"]["median_s"]
        row["amp_k_efficiency_folded"] = k * r["vanilla"]["median_s"] / r["folded"]["median_s"]
        row["tiled_input_bytes"] = k * bb * h * w * 2 * c * 4
        row["vm_hwm_after_bytes"] = vm_hwm_bytes()
        rows.append(row)
        log(f"    B={bb:>4}: vanilla {row['vanilla']['images_per_s']:8.1f}, tiled "
            f"{row['tiled']['images_per_s']:8.1f}, chunked {row['tiled_chunked']['images_per_s']:8.1f}, "
            f"folded {row['folded']['images_per_s']:8.1f} img/s; K-efficiency tiled "
            f"{row['amp_k_efficiency_tiled']:.3f}, chunked {row['amp_k_efficiency_tiled_chunked']:.3f}")
    return rows


def cost_model(inf, args):
    """Analytic: the stem's share of the work, and what folding can save."""
    k, b, (h, w, c) = args.k, args.batch_size, args.image_shape
    macs = conv_macs(inf.anchored)
    stem, stem_out = find_stem(inf.anchored)
    total = sum(macs.values())
    stem_frac = macs[stem.name] / total
    # folded: the stem over 2C channels for K*B rows becomes C channels for K + B rows
    folded_macs = total - stem_frac * total * (1 - (k + b) / (2 * k * b))
    stem_out_bytes = k * b * int(np.prod(stem_out.shape[1:])) * 4
    return {
        "macs_per_image_anchored": total,
        "macs_per_image_vanilla": sum(conv_macs(inf.vanilla).values()),
        "stem_mac_fraction": stem_frac,
        "folded_speedup_upper_bound_from_macs": total / folded_macs,
        "tiled_input_bytes_at_k_b": k * b * h * w * 2 * c * 4,
        "stem_output_bytes_at_k_b": stem_out_bytes,
        "folded_stem_terms_bytes_at_k_b": (k + b) * int(np.prod(stem_out.shape[1:])) * 4,
    }


def headline_ratios(k, train, res):
    """The headline ratios from medians, from process CPU time, and from the fastest samples."""
    t = {n: res[n]["median_s"] for n in res}
    c = {n: res[n]["median_cpu_s"] for n in res}
    mins = {n: res[n]["min_s"] for n in res}
    a, v = train["anchored"], train["vanilla"]
    return {
        "train_overhead": a["step_median_s"] / v["step_median_s"],
        "amp_k_efficiency": k * t["vanilla"] / t["tiled"],
        "amp_k_efficiency_tiled_chunked": k * t["vanilla"] / t["tiled_chunked"],
        "amp_k_efficiency_folded": k * t["vanilla"] / t["folded"],
        "folded_speedup": t["tiled"] / t["folded"],
        "tiled_vs_loop": t["loop"] / t["tiled"],
        "tiled_chunked_vs_loop": t["loop"] / t["tiled_chunked"],
        "amp_k_efficiency_one_batch": k * t["vanilla"] / t["tiled_one_batch"],  # the old default: one K*B batch
        "one_batch_vs_loop": t["loop"] / t["tiled_one_batch"],
        # the same ratios on process CPU time (less sensitive to other processes on the machine)
        "cpu_time_ratios": {
            "train_overhead": a["step_cpu_median_s"] / v["step_cpu_median_s"],
            "amp_k_efficiency": k * c["vanilla"] / c["tiled"],
            "folded_speedup": c["tiled"] / c["folded"],
            "tiled_vs_loop": c["loop"] / c["tiled"],
        },
        "min_time_ratios": {  # fastest sample of each: least disturbed by other processes
            "train_overhead": a["cycle"]["min_s"] / v["cycle"]["min_s"],
            "amp_k_efficiency": k * mins["vanilla"] / mins["tiled"],
            "folded_speedup": mins["tiled"] / mins["folded"],
            "tiled_vs_loop": mins["loop"] / mins["tiled"],
        },
        "train_overhead_from_cycles": a["cycle_step_median_s"] / v["cycle_step_median_s"],
    }


def run_core(args, log=print):
    """Training overhead, headline inference at K, K and batch scaling, cost model, ratios."""
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    contention = Contention()
    results["load_average_at_start"] = load_average()
    k, b = args.k, args.batch_size
    sections = {}
    log(f"[1/4] training step, anchored vs vanilla ({args.arch}, batch {b})")
    sec = Contention()
    train = bench_training(args, log)
    sections["training"] = sec.share()
    results["training"] = train

    log(f"[2/4] inference at K={k}, batch {b}: vanilla, tiled (the default execution), tiled in chunks of B, "
        "one K*B batch, folded, Python loop")
    sec = Contention()
    inf = Inference(args)
    x_main, _ = data(args, b, args.seed + 2)
    max_abs_diff = check_folded_equals_tiled(inf, x_main[:16], k)
    res = interleaved(inf.fns(x_main, k), 2 * args.repeats, args.min_sample_s)  # headline: 2x samples
    results["inference"] = {
        "k": k, "batch_size": b, "timings": res,
        "images_per_s": {n: b / res[n]["median_s"] for n in res},
        "folded_max_abs_diff_vs_tiled": max_abs_diff,
    }
    sections["inference"] = sec.share()

    log(f"[3/4] K scaling at batch {b}: K in {args.k_list}")
    sec = Contention()
    results["k_scaling"] = k_scaling(args, inf, x_main, res, log)
    sections["k_scaling"] = sec.share()

    log(f"[4/4] batch scaling at K={k}: batch in {args.batch_list}")
    sec = Contention()
    results["batch_scaling"] = batch_scaling(args, inf, res, log)
    sections["batch_scaling"] = sec.share()

    results["cost_model"] = cost_model(inf, args)
    results.update(headline_ratios(k, train, res))
    results["contention"] = {
        "other_processes_cpu_share": contention.share(),
        "by_section": sections,
        "load_average_at_end": load_average(),
        "steal_share": contention.steal_share(),
    }
    results["targets"] = {name: verdict(name, results[name]) for name in TARGETS}
    return results
