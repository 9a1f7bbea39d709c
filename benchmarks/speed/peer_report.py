"""The printed report of `benchmarks.speed.peer` (it also adds `ratios_amp_tf_over_torch` to the results)."""

from __future__ import annotations


def report(res, args):
    print()
    print(f"CPU: {res['cpu_model']}; threads: {res['threads']}")
    if "training" in res and "inference" in res:
        report_peer(res, args)
    report_profile(res)


def report_peer(res, args):
    tr, inf = res["training"], res["inference"]
    mc = res["model_check"]
    print(f"model: resnet_small width {args.width}, 2-channel anchored input; params TF "
          f"{mc['params_tf']} (trainable {mc['trainable_params_tf']}), torch {mc.get('params_torch', '-')}")
    print(f"\ntraining (batch {args.batch_size}, {args.n_train} images/epoch, {args.rounds} rounds, medians)")
    print(f"  {'contender':<22}{'img/s':>9}{'s/epoch':>9}{'cpu-s/epoch':>13}")
    for n, r in tr.items():
        print(f"  {n:<22}{r['images_per_s']:>9.0f}{r['median_s']:>9.2f}{r['median_cpu_s']:>13.2f}")
    ratios = {}
    if "c_torch" in tr:
        ratios["train_a_fit_arrays/torch"] = tr["a_fit_arrays"]["images_per_s"] / tr["c_torch"]["images_per_s"]
        if "c_torch_noaug" in tr:
            ratios["train_a_fit_arrays/torch_noaug"] = (tr["a_fit_arrays"]["images_per_s"]
                                                       / tr["c_torch_noaug"]["images_per_s"])
        ratios["train_b_pipeline/torch"] = tr["b_train_pipeline"]["images_per_s"] / tr["c_torch"]["images_per_s"]
        ratios["train_b_pipeline/torch_1thread"] = (tr["b_train_pipeline"]["images_per_s"]
                                                   / tr["c_torch_1thread"]["images_per_s"])
        ratios["train_b_pipeline/torch (cpu time)"] = (tr["c_torch"]["median_cpu_s"]
                                                      / tr["b_train_pipeline"]["median_cpu_s"])
    print(f"\ninference (batch {args.batch_size}, K={args.k})")
    for n, r in inf.items():
        print(f"  {n:<22}{r['images_per_s']:>9.0f} img/s")
    if "torch_vanilla" in inf:
        ratios["infer_vanilla_tf/torch"] = inf["tf_vanilla"]["images_per_s"] / inf["torch_vanilla"]["images_per_s"]
        ratios["infer_amp_k_tf/torch_loop"] = (inf["tf_amp_call"]["images_per_s"]
                                              / inf["torch_amp_loop"]["images_per_s"])
        ratios["infer_amp_k_tf/torch_tiled"] = (inf["tf_amp_call"]["images_per_s"]
                                               / inf["torch_amp_tiled"]["images_per_s"])
    res["ratios_amp_tf_over_torch"] = ratios
    if ratios:
        print("\nratios amp-tf / PyTorch (images/s; > 1 = amp-tf faster)")
        for n, v in ratios.items():
            print(f"  {n:<34}{v:>7.3f}")
    else:
        print("\nPyTorch not installed: peer ratio skipped")


def report_profile(res):
    prof = res.get("profile")
    if prof:
        print("\nprofile: compute-only ms per step (fixed batch; Keras steps include T 1 step in 5; T_alone = per T call)")
        for n, v in prof["components_ms_per_step"].items():
            print(f"  {n:<36}{v:>8.2f}")
        print("input pipeline alone: ms per batch")
        for n, v in prof["pipeline_ms_per_batch"].items():
            print(f"  {n:<36}{v:>8.2f}")
        e = prof["end_to_end"]
        print("prototype fixes end to end (img/s; ratio vs the matching library default, wall and cpu time)")
        for n, r in e.items():
            if "error" in r:
                print(f"  {n:<36}  failed: {r['error'][:100]}")
                continue
            base = e.get("fit_arrays_spe1" if n.startswith("fit_arrays") else "pipeline_library", {})
            rat = r["images_per_s"] / base["images_per_s"] if "images_per_s" in base else float("nan")
            crat = base["median_cpu_s"] / r["median_cpu_s"] if "median_cpu_s" in base else float("nan")
            print(f"  {n:<36}{r['images_per_s']:>8.0f}  x{rat:.3f}  cpu x{crat:.3f}")
    if res.get("env_sweep"):
        print("TF thread / oneDNN settings (fit on arrays, child processes)")
        for n, r in res["env_sweep"].items():
            print(f"  {n:<36}{r['images_per_s_median']:>8.0f}  x{r['ratio_vs_default']:.3f}")
    if "machine_busy_share" in res:
        print(f"\nmachine CPU busy (all processes) during the run: {100 * res['machine_busy_share']:.0f}%")
    if (res.get("machine_steal_share") or 0) >= 0.005:
        print(f"the hypervisor took {100 * res['machine_steal_share']:.0f}% of the machine's CPU (steal)")
    print(f"wall time {res['wall_s']:.0f} s")
