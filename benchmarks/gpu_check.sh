#!/usr/bin/env bash
# GPU check (issue: scale out and survive faults). Run by hand on a machine with a GPU:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# Measures, for resnet_small (28x28x1) and wrn40_2 (32x32x3): training step time of
# the anchored vs the vanilla model and AMP K=5 inference vs vanilla, with and without
# XLA and bfloat16, via `python -m benchmarks.speed` (one process per setting, headline ratios
# only). Prints one table and writes OUT_DIR/gpu_check.json. Then the converged benchmark's GPU
# variant (issue 20): `python -m benchmarks.quality.converged` with a wider model and more epochs, one seed,
# every group and detector, into OUT_DIR/converged.{json,md} (step 2, its own timeout).
# Budget: <= 8 minutes in all: step 2 keeps CONVERGED_S seconds, the speed settings share the rest
# (each at most 110 s, skipped when the budget is spent).
# No test needs it; on a CPU-only machine it runs too, slowly (step 2 then times out).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-470}        # 8 minutes, less a margin for the summaries
CONVERGED_S=${CONVERGED_S:-240}  # step 2: the converged GPU variant
"$PY" -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))" 2>/dev/null
for arch in resnet_small wrn40_2; do
  for flags in "" "--jit-compile" "--mixed-precision" "--jit-compile --mixed-precision"; do
    tag="${arch}$(echo "$flags" | tr -d ' -' | sed 's/^\(.\)/_\1/')"
    left=$((BUDGET_S - CONVERGED_S - SECONDS))
    if [ "$left" -lt 30 ]; then echo "== $arch $flags: skipped (budget spent)"; continue; fi
    echo "== $arch $flags"
    timeout $((left < 110 ? left : 110)) "$PY" -m benchmarks.speed --sections core --arch "$arch" --batch-size 256 --repeats 5 --skip-scaling \
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
# Step 2: the converged benchmark on a GPU (one seed; width 48, 30 epochs; no ensemble with one seed).
echo "== converged GPU variant (resnet_small width 48, 30 epochs, seed 0)"
left=$((BUDGET_S - SECONDS)); left=$((left < 60 ? 60 : left))  # never `timeout 0` (= no limit)
timeout $((left < CONVERGED_S + 30 ? left : CONVERGED_S + 30)) "$PY" -m benchmarks.quality.converged --seeds 0 --width 48 \
  --epochs 30 --resume --cache "$OUT/converged/seeds" --models "$OUT/converged/models" --json "$OUT/converged.json" \
  --verbose 0 > "$OUT/converged.log" 2>&1 && sed -n '/^ID accuracy/,/^## Mean/p' "$OUT/converged.md" \
  || echo "   failed or timed out after ${SECONDS}s in all: see $OUT/converged.log (a rerun reuses its trained models)"
echo "gpu_check: ${SECONDS}s"
