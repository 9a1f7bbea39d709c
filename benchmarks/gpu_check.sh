#!/usr/bin/env bash
# GPU check (issue: scale out and survive faults). Run by hand on a machine with a GPU:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# Measures, for resnet_small (28x28x1) and wrn40_2 (32x32x3): training step time of
# the anchored vs the vanilla model and AMP K=5 inference vs vanilla, with and without
# XLA and bfloat16, via `python -m benchmarks.speed` (one process per setting, headline ratios
# only). Prints one table and writes OUT_DIR/gpu_check.json. Budget: <= 8 minutes.
# No test needs it; on a CPU-only machine it runs too, slowly.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
"$PY" -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))" 2>/dev/null
for arch in resnet_small wrn40_2; do
  for flags in "" "--jit-compile" "--mixed-precision" "--jit-compile --mixed-precision"; do
    tag="${arch}$(echo "$flags" | tr -d ' -' | sed 's/^\(.\)/_\1/')"
    echo "== $arch $flags"
    timeout 110 "$PY" -m benchmarks.speed --sections core --arch "$arch" --batch-size 256 --repeats 5 --skip-scaling \
      --min-sample-s 0.2 $flags --json "$OUT/$tag.json" > "$OUT/$tag.log" 2>&1 || echo "   failed or timed out: see $OUT/$tag.log"
  done
done
"$PY" - "$OUT" <<'PYEOF'
import glob, json, os, sys
out = sys.argv[1]
rows = []
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    if path.endswith("gpu_check.json"):
        continue
    r = json.load(open(path))
    s, t, i = r.get("settings", {}), r["training"], r["inference"]
    b = i["batch_size"]
    rows.append({
        "setting": os.path.basename(path)[:-5],
        "train_img_s_anchored": b / t["anchored"]["step_median_s"],
        "train_img_s_vanilla": b / t["vanilla"]["step_median_s"],
        "train_overhead": r.get("train_overhead"),
        "amp_k5_img_s": i["images_per_s"]["tiled"],
        "vanilla_img_s": i["images_per_s"]["vanilla"],
        "amp_k_efficiency": r.get("amp_k_efficiency"),
    })
print(f"{'setting':38s} {'train img/s anch':>16s} {'vanilla':>9s} {'overhead':>9s} {'AMP K=5 img/s':>14s} {'vanilla':>9s} {'K-eff':>6s}")
for x in rows:
    print(f"{x['setting']:38s} {x['train_img_s_anchored']:16.0f} {x['train_img_s_vanilla']:9.0f} "
          f"{x['train_overhead']:9.3f} {x['amp_k5_img_s']:14.0f} {x['vanilla_img_s']:9.0f} {x['amp_k_efficiency']:6.3f}")
json.dump(rows, open(os.path.join(out, "gpu_check.json"), "w"), indent=2)
PYEOF
