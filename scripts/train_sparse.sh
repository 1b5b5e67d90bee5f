#!/usr/bin/env bash
# Makes the shipped sparse-depth checkpoint (xview_localizer/checkpoints/sparse_depth_compact.pt),
# the depth-prior sparse matcher of issue 6 (docs/sparse_depth.md):
#   1. generate training worlds (seeds 1..N_TRAIN_WORLDS) and held-out test worlds (seeds 1001..),
#      reusing those of scripts/train_default.sh when WORK is the same,
#   2. export cross-view pairs with depth (KITTI protocol: prior offset +-20 m, yaw noise +-10 deg),
#   3. train `--model sparse-depth` (compact preset; by default one depth kind per step drawn from
#      metric / relative / inverse / none, with depth noise and holes, prior yaw unknown),
#   4. evaluate on the held-out worlds (metric depth and relative depth), then
#   5. copy the half-precision weights into the package (< 25 MB; the node selects it with
#      checkpoint_path; load_matcher picks SparseMatcher from the checkpoint).
# Every knob is an environment variable; defaults are the full run (GPU recommended).
#   WORK=/tmp/xview_train N_TRAIN_WORLDS=20 N_TEST_WORLDS=3 TRAIN_PAIRS=20000 TEST_PAIRS=500 \
#   EPOCHS=25 BATCH=8 LR=2e-4 DEPTH_KIND=mixed DEPTH_NOISE=0.05 DEPTH_HOLES=0.1 NPROC=1 DEVICE=cuda \
#   scripts/train_sparse.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-/tmp/xview_train}
N_TRAIN_WORLDS=${N_TRAIN_WORLDS:-20}
N_TEST_WORLDS=${N_TEST_WORLDS:-3}
WORLD_SIZE_M=${WORLD_SIZE_M:-800}
TRAIN_PAIRS=${TRAIN_PAIRS:-20000}
TEST_PAIRS=${TEST_PAIRS:-500}
GROUND_W=${GROUND_W:-1024}
GROUND_H=${GROUND_H:-256}
PRESET=${PRESET:-compact}
MODEL_JSON=${MODEL_JSON:-}
EPOCHS=${EPOCHS:-25}
STEPS=${STEPS:-}
BATCH=${BATCH:-8}
LR=${LR:-2e-4}
DEPTH_KIND=${DEPTH_KIND:-mixed}
DEPTH_NOISE=${DEPTH_NOISE:-0.05}
DEPTH_HOLES=${DEPTH_HOLES:-0.1}
UNKNOWN_ORIENTATION=${UNKNOWN_ORIENTATION:-1}
NPROC=${NPROC:-1}
DEVICE=${DEVICE:-}
SIM_DEVICE=${SIM_DEVICE:-cpu}
OUT=${OUT:-$WORK/run_sparse_$PRESET}
DEST=${DEST:-xview_localizer/checkpoints/sparse_depth_compact.pt}

export PY WORK N_TRAIN_WORLDS N_TEST_WORLDS WORLD_SIZE_M TRAIN_PAIRS TEST_PAIRS GROUND_W GROUND_H SIM_DEVICE
scripts/make_training_data.sh

args=(train --model sparse-depth --dataset "$WORK/pairs_train" --out "$OUT" --preset "$PRESET"
      --epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR" --depth-kind "$DEPTH_KIND"
      --depth-noise "$DEPTH_NOISE" --depth-holes "$DEPTH_HOLES" --val-dataset "$WORK/pairs_test"
      --val-max-samples "$TEST_PAIRS" --resume)
[ "$UNKNOWN_ORIENTATION" = 1 ] && args+=(--unknown-orientation)
[ -n "$MODEL_JSON" ] && args+=(--model-json "$MODEL_JSON")
[ -n "$STEPS" ] && args+=(--steps "$STEPS")
[ -n "$DEVICE" ] && args+=(--device "$DEVICE")
start=$(date +%s)
if [ "$NPROC" -gt 1 ]; then
  $PY -m torch.distributed.run --nproc_per_node "$NPROC" -m xview_localizer.cli "${args[@]}"
else
  $PY -m xview_localizer.cli "${args[@]}"
fi
echo "training took $(( $(date +%s) - start )) s"
for kind in metric relative; do
  $PY -m xview_localizer.cli evaluate --checkpoint "$OUT/model.pt" --dataset "$WORK/pairs_test" \
      --depth-kind "$kind" --out "$OUT/eval_heldout_$kind.json"
done
mkdir -p "$(dirname "$DEST")"
cp "$OUT/model.pt" "$DEST"
ls -l "$DEST"
