"""The seeds of `benchmarks.quality.ood`, each cached when complete (`benchmarks.harness.seed_cache`): one seed's
twins trained and scored (main split and near splits), the first seed's anchor draws and Table 8, and the
--select-grid training selection, cached like a seed. No TensorFlow at import (the CLI answers --help without it).
"""

from __future__ import annotations

import os
import time

from benchmarks.harness.machine import Contention, cpu_model
from benchmarks.harness.seed_cache import SeedCache

#: Bump when a change moves a seed's numbers: cached seeds (and the cached training selection) of another
#: version are redone, with a line.
#: ood-2 (2026-12-07): per-seed cache; the anchored model scored by the library's select_detector as
#: benchmarks.quality.converged (every candidate, the selected one recorded, near splits too); the ensemble from
#: the seeds' float16 vanilla logits.
CODE_VERSION = "ood-3 (2026-12-07: select_detector's candidates include amp+mahalanobis+gram)"


def run_one_seed(args, d, near, seed, first, log):
    """One seed's complete result, as stored in its cache file: the twins of the main split and of each near
    split trained and scored (`ood_runs.run_seed`), the vanilla twin's logits for the ensemble and, on the
    first seed, the anchor draws and Table 8 (they need its anchored model)."""
    import copy

    from benchmarks.quality.ood_runs import run_seed, vanilla_logits

    t0, c0, contention = time.time(), time.process_time(), Contention()
    rows, models, info, timing, configs = run_seed(args, d, seed, log)
    out = {"rows": rows, "models": info, "timing": timing, "train_configs": configs}
    if "vanilla" in models and "ensemble" in args.baselines:
        out["vanilla_logits"] = vanilla_logits(models["vanilla"], d)
    if first:
        out["anchor_draws"], out["table8"] = extras(args, d, seed, models["anchored"], timing, log)
    del models
    for nd in near:  # each near split: its own twins, scored on its held-out classes only
        a = copy.copy(args)
        a.mc_dropout = 0.0
        n_rows, n_models, n_info, n_t, _ = run_seed(a, nd, seed, log)
        for key, per_set in n_rows.items():
            rows.setdefault(key, {}).update(per_set)
        info.update({f"{k}@{nd['id_set']}": v for k, v in n_info.items()})
        timing.update({f"{nd['id_set']}_{k}": v for k, v in n_t.items()})
        del n_models
    out["timing"] = {k: round(v, 1) for k, v in timing.items()}
    out.update(wall_s=round(time.time() - t0, 1), cpu_s=round(time.process_time() - c0, 1),
               machine={"cpu": cpu_model(), "cores": os.cpu_count(), "others_cpu_share": contention.share()})
    return out


def extras(args, d, seed, first_anchored, timing, log):
    """`(anchor_draws, table8)` results, each None unless asked for."""
    from benchmarks.quality.ood_runs import run_anchor_draws, run_table8

    anchor_draws = table8 = None
    if args.anchor_draws > 0:
        t = time.time()
        log(f"anchor draws: {args.anchor_draws} anchor sets of K={args.num_anchors} for seed {seed}")
        anchor_draws = run_anchor_draws(args, d, first_anchored, log)
        timing["anchor_draws"] = time.time() - t
    if args.table8:
        t = time.time()
        table8 = run_table8(args, d, seed, first_anchored, log)
        timing["table8"] = time.time() - t
    return anchor_draws, table8


def training_selection(args, d, log):
    """--select-grid's choice (`ood_runs.select_training`, validation only), applied to `args`; cached under
    `<cache>/select_training/` like a seed (the selection of seed --seed), so --resume trains no grid again."""
    from benchmarks.quality.ood_runs import select_training

    if not args.grid:
        return None, None
    cache = SeedCache(args.cache / "select_training", args.settings, CODE_VERSION, log=log)
    sel = cache.load(args.seed)
    if sel is not None:
        for k, v in sel["selected"].items():
            setattr(args, k, v)
        log(f"training setting selected on validation: {sel['selected']} (reused from {cache.path(args.seed)})")
        return sel, sel.get("seconds")
    t = time.time()
    sel = select_training(args, d, log)
    sel["seconds"] = round(time.time() - t, 1)
    cache.save(args.seed, sel)
    return sel, sel["seconds"]


def check_caches(args, log):
    """The seed cache (and the training selection's) checked before anything is loaded or trained: files
    there without --resume, or stored with other settings, are refused. Returns (the seed cache, seeds reused)."""
    cache = SeedCache(args.cache, args.settings, CODE_VERSION, log=log)
    reused = cache.check(args.resume)
    if args.grid:
        SeedCache(args.cache / "select_training", args.settings, CODE_VERSION, log=log).check(args.resume)
    return cache, reused
