"""Training and scoring of `benchmarks.quality.ood`: data, configs, selection, one seed, Table 8, anchor draws.

Everything heavy is imported inside the functions, so that the CLI answers
--help and flag errors without loading TensorFlow.
"""

from __future__ import annotations

import functools
import time

METRICS = ("fpr95", "auroc", "aupr_in", "aupr_out", "detection_accuracy")
LABELS = {"fpr95": "FPR95 ↓", "auroc": "AUROC", "aupr_in": "AUPR-in", "aupr_out": "AUPR-out",
          "detection_accuracy": "DetAcc"}
VANILLA_LOGIT_SCORES = ("msp", "energy", "odin", "max_logit", "entropy")
FITTED = ("mahalanobis", "gram", "temperature_scaling", "knn", "react")
TABLE8_TRANSFORMS = ("none", "jitter_blur", "flip_grayscale", "resized_crop", "all")
LIBRARY_CROP_SCALE = 0.25  # amp_tf.method.augment.resized_crop's default minimum area


def amp_variants():
    """The AMP variant names (`amp_tf.method.predictor.AMP_VARIANTS`; imported here, not at module level,
    so the CLI answers --help without TensorFlow)."""
    from amp_tf.method.predictor import AMP_VARIANTS

    return tuple(AMP_VARIANTS)


def amp_detector(model, d, num_anchors, seed):
    """The fitted AMP detector of `model`: `num_anchors` anchors of the training images drawn with `seed`
    (`score_all(images)` gives every AMP score and the predicted class from one pass)."""
    from amp_tf.detection import detectors

    return detectors.get("amp", anchored=True, num_anchors=num_anchors, seed=seed).fit(
        model, id_train=d["x_train"])


# --------------------------------------------------------------------------- config
def train_config(args, **overrides):
    """The `amp_tf.run.training.TrainConfig` of the benchmark's training flags, then `overrides`.

    The trainers' mapping (`amp_tf.run.flags.train_config`, one definition): the flags default to the
    main job's recipe (`amp_tf.run.presets.FMNIST_RECIPE`); a cosine schedule gets a warm-up of
    min(1, epochs / 10) epochs, milestones none; a vanilla model is never initialised from
    --init-from; an anchored one fine-tuned from it trains --finetune-epochs epochs (unless
    `overrides` set them).
    """
    from amp_tf.run.flags import train_config as from_flags

    return from_flags(args, **overrides)


# --------------------------------------------------------------------------- data
def load_suite(args, log=print):
    """`(suite, near splits)`: the Fashion-MNIST split and OOD suite as raw pixels, and (unless --no-near)
    per class-holdout split the same dict with its held-out classes as OOD: the main job's loader,
    `amp_tf.run.pipeline.load_fmnist_suite`, on the typed `DataConfig` of the flags."""
    from amp_tf.config import DataConfig, JobConfig
    from amp_tf.run.pipeline import load_fmnist_suite

    data = DataConfig("fashion_mnist", args.val_size, args.train_limit, args.eval_limit, near=not args.no_near)
    d, ood, near = load_fmnist_suite(JobConfig(data=data), seed=args.seed, data_dir=args.data_dir,
                                     download=args.download, log=log)
    return _suite_dict(d, ood), [_suite_dict(nd, n_ood) for nd, n_ood in near]


def _suite_dict(d, ood):
    """An `amp_tf.run.pipeline.IDData` and its OOD sets as the dict every function here takes (the
    `IDData` itself under "data": `_train` trains through `amp_tf.run.pipeline.train_models`)."""
    return {"id_set": d.name, "x_train": d.x_train, "y_train": d.y_train, "x_val": d.x_val,
            "y_val": d.y_val, "x_test": d.x_test, "y_test": d.y_test, "num_classes": d.num_classes,
            "ood": ood, "mean": d.mean, "std": d.std, "data": d}


def validation_sets(args, d):
    """(ID validation images, {validation OOD set: images}) used for every selection."""
    from amp_tf.data.corruptions import validation_ood_sets

    x = d["x_val"][: args.val_ood_size]
    return x, validation_ood_sets(x, seed=args.seed)


def val_fpr95(args, d, model, seed):
    """Mean FPR95 over the validation OOD sets of every AMP variant (validation data only)."""
    import numpy as np

    from amp_tf.detection import metrics

    x_val, val_ood = validation_sets(args, d)
    run = amp_detector(model, d, args.num_anchors, seed).score_all
    ref, ood = run(x_val), {k: run(v) for k, v in val_ood.items()}
    return {v: float(np.mean([metrics.ood_metrics(ref[v], o[v])["fpr95"] for o in ood.values()]))
            for v in amp_variants()}


def select_training(args, d, log):
    """Trains one anchored model per --select-grid point and keeps the best validation FPR95 (default AMP)."""
    import copy

    if not args.grid:
        return None
    rows = []
    anchored_only = {"consistency", "consistency_every", "consistency_mode", "finetune_epochs", "num_anchors"}
    base = None  # one vanilla twin for every grid point when the grid only changes the anchored model
    if args.finetune_epochs and not args.skip_vanilla and all(set(p) <= anchored_only for p in args.grid):
        base, _, _ = _train(args, d, log, anchored=False, seed=args.seed, tag="select-vanilla")
    for point in args.grid:
        a = copy.copy(args)
        for k, v in point.items():
            setattr(a, k, v)
        init = base
        if init is None and a.finetune_epochs and not a.skip_vanilla:
            init, _, _ = _train(a, d, log, anchored=False, seed=args.seed, tag="select-vanilla")
        model, _, _ = _train(a, d, log, anchored=True, seed=args.seed, tag="select", init_from=init)
        fpr = val_fpr95(a, d, model, args.seed)
        rows.append({"setting": point, "val_fpr95": fpr})
        log(f"  select {point}: validation FPR95 (amp) {100 * fpr['amp']:.1f}")
        del model
    best = min(rows, key=lambda r: r["val_fpr95"]["amp"])
    for k, v in best["setting"].items():
        setattr(args, k, v)
    log(f"selected on validation: {best['setting']}")
    return {"grid": rows, "selected": best["setting"]}


def consistency_with_crop_scale(consistency, min_area):
    """`consistency` with resized_crop's minimum area set to `min_area` (a registered copy)."""
    from amp_tf.method import augment

    names = augment.resolve(consistency)
    if min_area == LIBRARY_CROP_SCALE or "resized_crop" not in names:
        return consistency
    name = f"resized_crop_min{int(round(min_area * 100)):03d}"
    if name not in augment.TRANSFORMS:
        augment.register_transform(name)(functools.partial(augment.resized_crop, scale=(min_area, 1.0)))
    return "+".join(name if n == "resized_crop" else n for n in names)


# --------------------------------------------------------------------------- helpers
def _rows(model, values_by_set, sets, positive):
    """`{f"{model}/{score}": {ood_set: metrics}}` from `{set: {score: array}}` (set "id" = ID test)."""
    from amp_tf.detection.evaluation import ood_results

    return ood_results(values_by_set["id"], {k: values_by_set[k] for k in sets}, model, positive)


def _by_set(scores_by_name):
    """`{score: {set: array}}` -> `{set: {score: array}}`."""
    out = {}
    for score, per_set in scores_by_name.items():
        for s, v in per_set.items():
            out.setdefault(s, {})[score] = v
    return out


def _train(args, d, log, *, anchored, seed, consistency=None, dropout=0.0, tag, init_from=None):
    """One model; with `init_from` (a trained vanilla twin) the anchored model is fine-tuned from it
    for --finetune-epochs (the main job's way), else trained from scratch for --epochs."""
    from amp_tf.run.pipeline import GivenModel, train_models

    kw = {"width": args.width}
    if dropout:
        kw["dropout"] = dropout
    over = dict(anchored=anchored, seed=seed, backbone_kwargs=kw)
    if anchored:
        over["consistency"] = consistency_with_crop_scale(consistency or args.consistency, args.crop_scale)
    models = {}
    if init_from is not None:  # the trained twin, fine-tuned into the anchored model (as in the main job)
        models["vanilla"] = GivenModel("(the vanilla twin, in memory)", model=init_from)
        over.update(epochs=args.finetune_epochs, init_from="job:vanilla")
    name = f"{tag}-seed{seed}"
    models[name] = train_config(args, **over)
    log(f"training {tag}{' (fine-tuned from the vanilla twin)' if init_from is not None else ''} "
        f"(seed {seed}, {models[name].epochs} epochs, consistency "
        f"{models[name].consistency if anchored else '-'}, dropout {dropout}) on {len(d['x_train'])} images ...")
    t = time.time()
    model, cfg, _ = train_models(d["data"], models, args.out, verbose=args.verbose, backup=not args.no_backup,
                                 log=lambda *_: None)[name]  # the pipeline's training: statistics, init
    dt = time.time() - t
    log(f"  trained {tag} in {dt:.0f} s")
    return model, cfg.to_dict(), dt


# --------------------------------------------------------------------------- one seed
def run_seed(args, d, seed, log):
    """Trains the twins of one seed and scores every row.

    The anchored model is scored as the library ships it, exactly as `benchmarks.quality.converged` does
    (`benchmarks.quality.converged_scoring`): `select_detector` fits every candidate on the ID training /
    validation images and selects on the validation OOD sets; every candidate is a row
    (`anchored/<candidate label>`: every AMP score, the anchored knn / mahalanobis / gram, every
    amp+feature combination, and each family's validation-best `amp+knn` / `amp+mahalanobis` / `amp+gram`),
    and `info["anchored"]` records the selection (`selection_info`: every candidate's validation FPR95 and
    AUROC, the selected one, its threshold). The same for a near split's own twins.

    Returns ``(rows, models, info, timing, train_configs)``.
    """
    from amp_tf.detection.evaluation import evaluate_model
    from benchmarks.quality.converged_scoring import candidate_scorer, select_anchored, selection_info

    rows, info, timing, configs = {}, {}, {}, {}
    finetune = bool(args.finetune_epochs) and not args.skip_vanilla
    model_v = None
    if finetune:  # the main job's way: the vanilla twin first, the anchored model fine-tuned from it
        model_v, configs["vanilla"], timing["train_vanilla"] = _train(args, d, log, anchored=False,
                                                                      seed=seed, tag="vanilla")
    model_a, configs["anchored"], timing["train_anchored"] = _train(args, d, log, anchored=True,
                                                                    seed=seed, tag="anchored", init_from=model_v)
    t = time.time()
    det = select_anchored(model_a, d["data"], args, seed, log)
    res, _, acc = evaluate_model(model_a, d["x_test"], d["y_test"], d["ood"], "anchored",
                                 scorer=candidate_scorer(det), positive=args.positive)
    timing["score_anchored"] = time.time() - t
    rows.update(res)
    info["anchored"] = {"id_accuracy": acc, "params": int(model_a.count_params()), **selection_info(det)}
    log(f"  anchored: ID acc {acc:.4f}, selected {det.label}; {len(res)} candidate rows scored in "
        f"{timing['score_anchored']:.0f} s (selection included)")
    models = {"anchored": model_a}
    if args.skip_vanilla:
        return rows, models, info, timing, configs

    if model_v is None:
        model_v, configs["vanilla"], timing["train_vanilla"] = _train(args, d, log, anchored=False,
                                                                      seed=seed, tag="vanilla")
    t = time.time()
    res, _, acc = evaluate_model(model_v, d["x_test"], d["y_test"], d["ood"], "vanilla",
                                 positive=args.positive)
    timing["score_vanilla"] = time.time() - t
    rows.update(res)
    info["vanilla"] = {"id_accuracy": acc, "params": int(model_v.count_params())}
    log(f"  vanilla: ID acc {acc:.4f}, scored in {timing['score_vanilla']:.0f} s")
    models["vanilla"] = model_v

    fitted_baselines(args, d, model_v, rows, timing, log)
    if args.mc_dropout > 0:
        mc_dropout(args, d, seed, rows, info, timing, configs, log)
    return rows, models, info, timing, configs


def fitted_baselines(args, d, model_v, rows, timing, log):
    """The fitted baselines of --baselines on the vanilla twin, into `rows` and `timing`."""
    from amp_tf.detection import detectors

    all_sets = {"id": d["x_test"], **d["ood"]}
    n_fit = args.fit_limit or len(d["x_train"])
    for name in (b for b in args.baselines if b in FITTED):
        t = time.time()
        det = detectors.get(name, anchored=False).fit(
            model_v, id_train=(d["x_train"][:n_fit], d["y_train"][:n_fit]), id_val=(d["x_val"], d["y_val"]))
        out = {k: det.score(v) for k, v in all_sets.items()}
        timing[f"baseline_{name}"] = time.time() - t
        rows.update(_rows("vanilla", _by_set({name: out}), list(d["ood"]), args.positive))
        log(f"  vanilla/{name} in {timing[f'baseline_{name}']:.0f} s")


def mc_dropout(args, d, seed, rows, info, timing, configs, log):
    """A vanilla twin with dropout before the classifier: its MSP and MC dropout, into the dicts given."""
    import amp_tf.detection.baselines as bl
    from amp_tf.detection.evaluation import evaluate_model

    sets, all_sets = list(d["ood"]), {"id": d["x_test"], **d["ood"]}
    model_d, configs["dropout"], timing["train_dropout"] = _train(
        args, d, log, anchored=False, seed=seed, dropout=args.mc_dropout, tag="dropout")
    t = time.time()
    res, _, acc = evaluate_model(model_d, d["x_test"], d["y_test"], d["ood"], "dropout",
                                 vanilla_names=("msp",), positive=args.positive)
    rows.update(res)
    mc = {k: bl.mc_dropout_scores(model_d, v, num_passes=args.mc_passes, seed=seed)
          for k, v in all_sets.items()}
    vals = {k: {f"mc_dropout_{s}": a for s, a in v.items()} for k, v in mc.items()}
    rows.update(_rows("dropout", vals, sets, args.positive))
    timing["score_dropout"] = time.time() - t
    info["dropout"] = {"id_accuracy": acc, "params": int(model_d.count_params()),
                       "dropout": args.mc_dropout, "mc_passes": args.mc_passes}
    log(f"  dropout: ID acc {acc:.4f} (deterministic), MC dropout scored in "
        f"{timing['score_dropout']:.0f} s")
    del model_d


def vanilla_logits(model, d):
    """`{set: packed float16 logits}` of a vanilla twin on the ID test images ("id") and every OOD set: what the
    deep ensemble needs of a member, kept in its seed's cache file (`benchmarks.harness.model_store.pack`)."""
    from amp_tf.method.inference import model_logits
    from benchmarks.harness.model_store import pack

    return {k: pack(model_logits(model, x)) for k, x in {"id": d["x_test"], **d["ood"]}.items()}


def run_ensemble(args, d, member_logits, log):
    """The deep ensemble of the seeds' vanilla twins, from their stored logits (`vanilla_logits`; float16, so
    the scores equal `amp_tf.detection.baselines.ensemble_scores` of the models up to that rounding)."""
    import numpy as np

    from benchmarks.harness.model_store import unpack
    from benchmarks.quality.converged_scoring import ensemble_scores

    t = time.time()
    vals, probs = ensemble_scores([{k: unpack(v) for k, v in m.items()} for m in member_logits])
    rows = _rows("ensemble", vals, list(d["ood"]), args.positive)
    acc = float(np.mean(probs["id"].mean(axis=0).argmax(-1) == d["y_test"]))
    dt = time.time() - t
    log(f"ensemble of {len(member_logits)}: ID acc {acc:.4f}, scored in {dt:.0f} s")
    return rows, {"id_accuracy": acc, "members": len(member_logits)}, dt


# --------------------------------------------------------------------------- Table 8
def run_table8(args, d, seed, main_model, log):
    """FPR95 (mean over OOD sets) of every AMP variant per transform x K, one seed."""
    import numpy as np

    from amp_tf.detection import metrics
    from amp_tf.detection.evaluation import ood_results

    n = args.table8_eval_limit or None
    sets = {"id": d["x_test"][:n] if n else d["x_test"],
            **{k: (v[:n] if n else v) for k, v in d["ood"].items()}}
    y_id = d["y_test"][: len(sets["id"])]
    out, timing = {}, {}
    for transform in args.table8_transforms:
        if transform == args.consistency and main_model is not None:
            model, t_train = main_model, 0.0
            log(f"table8 {transform}: reusing the main anchored model of seed {seed}")
        else:
            model, _, t_train = _train(args, d, log, anchored=True, seed=seed,
                                       consistency=transform, tag=f"table8-{transform}")
        t = time.time()
        per_k = {}
        for k in args.table8_k:
            run = amp_detector(model, d, k, seed).score_all
            vals = {name: run(x) for name, x in sets.items()}
            acc = float(np.mean(vals["id"]["predicted_class"] == y_id))
            res = ood_results(vals["id"], {k2: v for k2, v in vals.items() if k2 != "id"},
                              "anchored", args.positive)
            per_k[str(k)] = {
                "id_accuracy": acc,
                "mean": {key.split("/", 1)[1]: metrics.metrics_table(r).mean for key, r in res.items()},
                "per_set": {key.split("/", 1)[1]: r for key, r in res.items()},
            }
            log(f"  table8 {transform} K={k}: amp FPR95 {per_k[str(k)]['mean']['amp']['fpr95']:.4f}, "
                f"amp[mean,divide] {per_k[str(k)]['mean']['amp[mean,divide]']['fpr95']:.4f}, acc {acc:.4f}")
        timing[transform] = {"train_s": round(t_train, 1), "score_s": round(time.time() - t, 1)}
        out[transform] = {"consistency": consistency_with_crop_scale(transform, args.crop_scale),
                          "K": per_k}
        if model is not main_model:
            del model
    return {"seed": seed, "images_per_set": {k: len(v) for k, v in sets.items()},
            "transforms": out, "timing": timing}


# --------------------------------------------------------------------------- anchor draws
def run_anchor_draws(args, d, model, log):
    """FPR95 (mean over OOD sets) per AMP variant for several anchor sets of one model,
    and quantiles of tau (mean reduction; the sum reduction is exactly num_classes x it)
    with the exp calibration's divisor 1 + exp(tau), per set, for each draw."""
    import numpy as np

    from amp_tf.data.groups import group_summary
    from amp_tf.detection.evaluation import ood_results

    sets = {"id": d["x_test"], **d["ood"]}
    draws = []
    for s in range(args.anchor_draws):
        run = amp_detector(model, d, args.num_anchors, s).score_all
        vals = {name: run(x) for name, x in sets.items()}
        res = ood_results(vals["id"], {k: v for k, v in vals.items() if k != "id"}, "anchored", args.positive)
        q = (0.05, 0.5, 0.95)
        tau = {name: {"tau_q05_q50_q95": [float(np.quantile(-v["neg_tau"], p)) for p in q],
                      "one_plus_exp_tau_q05_q50_q95": [float(np.quantile(1 + np.exp(-v["neg_tau"]), p))
                                                       for p in q]}
               for name, v in vals.items()}
        draws.append({"anchor_seed": s,
                      "id_accuracy": float(np.mean(vals["id"]["predicted_class"] == d["y_test"])),
                      "fpr95": {key.split("/", 1)[1]: group_summary(r, True)["overall"]["fpr95"]
                                for key, r in res.items()},
                      "auroc": {key.split("/", 1)[1]: group_summary(r, True)["overall"]["auroc"]
                                for key, r in res.items()},
                      "tau": tau})
        log(f"  anchor draw {s}: amp FPR95 {draws[-1]['fpr95']['amp']:.4f}, amp[mean,divide] "
            f"{draws[-1]['fpr95']['amp[mean,divide]']:.4f}")
    summary = {}
    for score in draws[0]["fpr95"]:
        v = np.array([x["fpr95"][score] for x in draws])
        summary[score] = {"fpr95_mean": float(v.mean()), "fpr95_std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                          "fpr95_min": float(v.min()), "fpr95_max": float(v.max())}
    return {"K": args.num_anchors, "draws": draws, "summary": summary}
