#!/usr/bin/env bash
# Makes the shipped sparse-depth checkpoint (xview_localizer/checkpoints/sparse_depth_compact.pt),
# the depth-prior sparse matcher of issue 6 (docs/sparse_depth.md):
#   1. generate training worlds (seeds 1..N_TRAIN_WORLDS) and held-out test worlds (seeds 1001..),
#      reusing those of scripts/train_default.sh when WORK is the same,
#   2. export cross-view pairs with depth (KITTI protocol: prior offset +-20 m, yaw noise +-10 deg),
#   3. train `--model sparse-depth` in the three stages of the shipped checkpoint
#      (docs/sparse_depth.md, "Shipped checkpoint"):
#        a. STEPS_A metric-depth steps, keypoint cross-entropy (weight 20), no pose vote;
#        b. STEPS_B steps of mixed depth (metric / relative / inverse / none, with noise and holes),
#           unknown orientation, same losses, no pose vote;
#        c. STEPS_C steps with the pose vote switched on (vote cross-entropy 10, keypoint
#           cross-entropy 2), mixed depth, half the steps without the prior yaw;
#   4. evaluate on the held-out worlds (metric and relative depth), then
#   5. copy the half-precision weights into the package (< 25 MB; the node selects it with
#      checkpoint_path: sparse_depth_compact.pt; load_matcher picks SparseMatcher from the checkpoint).
# Every knob is an environment variable. The defaults are the shipped CPU run (6000 pairs of
# 16 worlds at 512x128, stages 120 / 1100 / 1600 steps at batch 4: ~2.5 h on 2 CPU cores):
#   WORK=/tmp/xview_train N_TRAIN_WORLDS=16 TRAIN_PAIRS=6000 GROUND_W=512 GROUND_H=128 \
#   STEPS_A=120 STEPS_B=1100 STEPS_C=1600 BATCH=4 DEVICE=cpu scripts/train_sparse.sh
# On a GPU, scale the data and the last stage up (e.g. TRAIN_PAIRS=20000 GROUND_W=1024 GROUND_H=256
# STEPS_C=30000 BATCH=8 DEVICE=cuda); not measured here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-/tmp/xview_train}
N_TRAIN_WORLDS=${N_TRAIN_WORLDS:-16}
N_TEST_WORLDS=${N_TEST_WORLDS:-3}
WORLD_SIZE_M=${WORLD_SIZE_M:-400}
TRAIN_PAIRS=${TRAIN_PAIRS:-6000}
TEST_PAIRS=${TEST_PAIRS:-300}
GROUND_W=${GROUND_W:-512}
GROUND_H=${GROUND_H:-128}
PRESET=${PRESET:-compact}
STEPS_A=${STEPS_A:-120}
STEPS_B=${STEPS_B:-1100}
STEPS_C=${STEPS_C:-1600}
BATCH=${BATCH:-4}
DEVICE=${DEVICE:-}
SIM_DEVICE=${SIM_DEVICE:-cpu}
OUT=${OUT:-$WORK/run_sparse_$PRESET}
DEST=${DEST:-xview_localizer/checkpoints/sparse_depth_compact.pt}

export PY WORK N_TRAIN_WORLDS N_TEST_WORLDS WORLD_SIZE_M TRAIN_PAIRS TEST_PAIRS GROUND_W GROUND_H SIM_DEVICE
scripts/make_training_data.sh

common=(train --model sparse-depth --dataset "$WORK/pairs_train" --preset "$PRESET" --batch-size "$BATCH"
        --log-every 10 --save-every 100 --resume)
[ -n "$DEVICE" ] && common+=(--device "$DEVICE")
mixed=(--depth-kind mixed --depth-noise 0.05 --depth-holes 0.1)
start=$(date +%s)
# a. metric depth, keypoint cross-entropy, no vote (refine window 2 as in the shipped run)
$PY -m xview_localizer.cli "${common[@]}" --out "$OUT/a" --steps "$STEPS_A" --lr 5e-4 --depth-kind metric \
    --match-ce-weight 20 --vote-ce-weight 0 --model-json '{"vote_radius_cells": 0, "refine_radius_cells": 2}'
# b. mixed depth, unknown orientation, same losses, no vote
$PY -m xview_localizer.cli "${common[@]}" --out "$OUT/b" --steps "$STEPS_B" --lr 5e-4 "${mixed[@]}" \
    --unknown-orientation --match-ce-weight 20 --vote-ce-weight 0 --init "$OUT/a/last.pt"
# c. the pose vote on: vote cross-entropy (pose only) 10, keypoint cross-entropy 2, mixed orientation
$PY -m xview_localizer.cli "${common[@]}" --out "$OUT/c" --steps "$STEPS_C" --lr 3e-4 "${mixed[@]}" \
    --mixed-orientation --match-ce-weight 2 --vote-ce-weight 10 --init "$OUT/b/last.pt" \
    --model-json '{"vote_radius_cells": 16, "refine_radius_cells": 3}' \
    --val-dataset "$WORK/pairs_test" --val-max-samples "$TEST_PAIRS"
echo "training took $(( $(date +%s) - start )) s"
for kind in metric relative; do
  $PY -m xview_localizer.cli evaluate --checkpoint "$OUT/c/model.pt" --dataset "$WORK/pairs_test" \
      --depth-kind "$kind" --out "$OUT/c/eval_heldout_$kind.json"
done
$PY -m xview_localizer.cli calibrate-covariance --checkpoint "$OUT/c/model.pt" --dataset "$WORK/pairs_test" \
    --depth-kind metric --write --out "$OUT/c/calibration.json"
mkdir -p "$(dirname "$DEST")"
cp "$OUT/c/model.pt" "$DEST"
ls -l "$DEST"
