#!/usr/bin/env bash
# Makes the shipped dense-flow checkpoint (xview_localizer/checkpoints/dense_flow_compact.pt):
#   1. generate training worlds (seeds 1..N_TRAIN_WORLDS) and held-out test worlds (seeds 1001..),
#   2. export cross-view pairs (KITTI protocol: prior offset +-20 m, yaw noise +-10 deg,
#      512 px satellite patches at 0.2 m/px, 1024x256 ground images as in the paper),
#   3. train the `compact` preset (torchrun when NPROC > 1), evaluate on the held-out worlds,
#   4. copy the half-precision weights into the package (xview_localizer/checkpoints/, the default the node loads).
# Every knob is an environment variable; defaults are the full run (GPU recommended: one H100
# does an epoch of 20k pairs in minutes; 2 shared CPU cores need ~12 s per sample).
#   WORK=/tmp/xview_train N_TRAIN_WORLDS=20 N_TEST_WORLDS=3 TRAIN_PAIRS=20000 TEST_PAIRS=500 \
#   EPOCHS=25 SWITCH_EPOCH=15 BATCH=8 LR=2e-4 NPROC=1 DEVICE=cuda scripts/train_default.sh
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
EPOCHS=${EPOCHS:-25}
SWITCH_EPOCH=${SWITCH_EPOCH:-15}
STEPS=${STEPS:-}
BATCH=${BATCH:-8}
LR=${LR:-2e-4}
ITERS=${ITERS:-4}
CORR_WEIGHT=${CORR_WEIGHT:-5}
NPROC=${NPROC:-1}
DEVICE=${DEVICE:-}
SIM_DEVICE=${SIM_DEVICE:-cpu}
OUT=${OUT:-$WORK/run_compact}
DEST=${DEST:-xview_localizer/checkpoints/dense_flow_compact.pt}

export PY WORK N_TRAIN_WORLDS N_TEST_WORLDS WORLD_SIZE_M TRAIN_PAIRS TEST_PAIRS GROUND_W GROUND_H SIM_DEVICE
scripts/make_training_data.sh

args=(train --dataset "$WORK/pairs_train" --out "$OUT" --preset compact --epochs "$EPOCHS"
      --switch-epoch "$SWITCH_EPOCH" --batch-size "$BATCH" --lr "$LR" --val-dataset "$WORK/pairs_test"
      --val-max-samples "$TEST_PAIRS" --iters "$ITERS" --corr-loss-weight "$CORR_WEIGHT" --resume)
[ -n "$STEPS" ] && args+=(--steps "$STEPS")
[ -n "$DEVICE" ] && args+=(--device "$DEVICE")
start=$(date +%s)
if [ "$NPROC" -gt 1 ]; then
  $PY -m torch.distributed.run --nproc_per_node "$NPROC" -m xview_localizer.cli "${args[@]}"
else
  $PY -m xview_localizer.cli "${args[@]}"
fi
echo "training took $(( $(date +%s) - start )) s"
$PY -m xview_localizer.cli evaluate --checkpoint "$OUT/model.pt" --dataset "$WORK/pairs_test" \
    --out "$OUT/eval_heldout.json"
# covariance scale for the localizer (NEES on held-out pairs), stored in the checkpoint
$PY -m xview_localizer.cli calibrate-covariance --checkpoint "$OUT/model.pt" --dataset "$WORK/pairs_test" \
    --max-samples 200 --out "$OUT/calibration.json" --write
mkdir -p "$(dirname "$DEST")"
cp "$OUT/model.pt" "$DEST"
ls -l "$DEST"
