"""The main job, offline: Fashion-MNIST, AMP vs the standard scores.

Trains the anchored `resnet_small` and its vanilla twin (same backbone, same
schedule, 1-channel input), scores AMP (and its variants) on the anchored model
and MSP, Energy, ODIN, MaxLogit, Entropy on the vanilla one, over the offline
OOD suite (scikit-learn's handwritten digits; Fashion-MNIST test under Gaussian
blur of rising strength; or, with --holdout, 4 held-out classes), and writes to
--out: report.json, report.md, PNG plots, both .keras models, and serving/ (the
SavedModel: uint8 images -> prediction, tau, amp_score, is_ood).

    python -m trainers.fmnist                 # defaults: <= 10 minutes on 2 CPU cores
    python -m trainers.fmnist --epochs 10 --width 32 --out runs/fmnist-long
"""

from __future__ import annotations

import sys
import time

from trainers.common import (
    backup_arg,
    add_preset_flags,
    base_parser,
    cli_errors,
    parse_cli,
    run_dir,
    train_config,
    versions,
)

DEFAULTS = dict(arch="resnet_small", epochs=3, batch_size=128, lr=0.1, weight_decay=5e-4,
                consistency="all", consistency_every=5, num_anchors=5)


def parser():
    p = base_parser(__doc__.split("\n\n")[0], DEFAULTS)
    g = p.add_argument_group("Fashion-MNIST job")
    g.add_argument("--width", type=int, default=16, help="resnet_small base width")
    g.add_argument("--holdout", action="store_true",
                   help="near-OOD mode: train on classes 0-5, classes 6-9 are the OOD set")
    g.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    g.add_argument("--val-size", type=int, default=5000,
                   help="ID validation images held out of training (serving threshold, OOD callback)")
    g.add_argument("--eval-limit", type=int, default=None, help="score at most N images per test/OOD set")
    g.add_argument("--skip-vanilla", action="store_true", help="train and score the anchored model only")
    return add_preset_flags(p)


@cli_errors
def main(argv=None):
    args = parse_cli(parser(), argv, "train", "trainers.fmnist",
                     default_ood=("digits",) + tuple(f"fmnist_blur_{i}" for i in range(1, 6)))
    t0 = time.time()

    from amp_tf import data
    from amp_tf.evaluation import evaluate_model
    from amp_tf.export import export_for_serving
    from amp_tf.predictor import AnchoredPredictor, select_anchors
    from amp_tf.report import render, write_report
    from amp_tf.training import train, write_json

    out = run_dir(args, "fmnist")
    print(f"[fmnist] run folder: {out}")
    d = data.load_fmnist_suite(data_dir=args.data_dir, download=args.download, seed=args.seed,
                               val_size=args.val_size, train_limit=args.train_limit,
                               eval_limit=args.eval_limit, holdout=args.holdout)
    xtr, y_train, xva, y_val, xte, y_test = (d[k] for k in ("x_train", "y_train", "x_val", "y_val",
                                                             "x_test", "y_test"))
    ood, mean, std, num_classes = d["ood"], d["mean"], d["std"], d["num_classes"]
    print(f"[fmnist] ID {d['id_set']}: train {len(xtr)}, val {len(xva)}, test {len(xte)}; "
          f"OOD: " + ", ".join(f"{k} ({len(v)})" for k, v in ood.items()))

    models, results_scores, values, configs = {}, {}, {}, {}
    runs = [("anchored", True)] + ([] if args.skip_vanilla else [("vanilla", False)])
    for name, anchored in runs:
        cfg = train_config(args, anchored=anchored, backbone_kwargs={"width": args.width},
                           value_range=d["value_range"])
        configs[name] = cfg.to_dict()
        print(f"[fmnist] training the {name} {cfg.arch} for {cfg.epochs} epochs ...")
        t = time.time()
        model, _ = train(cfg, xtr, y_train, num_classes, val=(xva, y_val), out_dir=out / name,
                         verbose=args.verbose, backup=backup_arg(args, name))
        models[name] = {"model": model, "train_time_s": time.time() - t,
                        "params": int(model.count_params())}
    anchors = select_anchors(xtr, args.num_anchors, seed=args.seed)
    model_info = {}
    for name, m in models.items():
        print(f"[fmnist] scoring the {name} model ...")
        res, vals, acc = evaluate_model(m["model"], xte, y_test, ood, name,
                                        anchors=anchors if name == "anchored" else None,
                                        positive=args.positive)
        results_scores.update(res)
        values.update(vals)
        model_info[name] = {"id_accuracy": acc, "params": m["params"],
                            "train_time_s": round(m["train_time_s"], 1)}
        m["model"].save(out / f"{name}.keras")
    predictor = AnchoredPredictor(models["anchored"]["model"].backbone, anchors)
    export_for_serving(predictor, out / "serving", mean, std, id_images=d["x_val_uint8"])
    results = {
        "title": f"{d['id_set']} (ID) vs " + ", ".join(d["ood_names"]),
        "id_set": d["id_set"], "ood_sets": list(ood), "positive": args.positive, "seed": args.seed,
        "wall_time_s": round(time.time() - t0, 1), "versions": versions(),
        "config": {"args": vars(args), "train": configs, "num_anchors": args.num_anchors,
                   "mean": mean.tolist(), "std": std.tolist()},
        "models": model_info, "scores": results_scores,
    }
    paths = write_report(out, results, values)
    write_json(out / "normalization.json", {"mean": mean.tolist(), "std": std.tolist()})
    print(render(results, "md").split("## Per OOD set")[0])
    print(f"[fmnist] done in {time.time() - t0:.0f} s; report: {paths.get('report.md', out / 'report.md')}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
