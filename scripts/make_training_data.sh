#!/usr/bin/env bash
# Training data of the shipped checkpoints (sourced by scripts/train_default.sh and
# scripts/train_sparse.sh, or run alone): synthetic worlds (training seeds 1..N_TRAIN_WORLDS,
# held-out test seeds 1001..) and their cross-view pairs with depth (KITTI protocol: prior offset
# +-20 m, yaw noise +-10 deg). Existing worlds / pair folders are reused.
# Needs: PY WORK N_TRAIN_WORLDS N_TEST_WORLDS WORLD_SIZE_M TRAIN_PAIRS TEST_PAIRS GROUND_W GROUND_H
#        SIM_DEVICE; writes $WORK/worlds/w<seed>, $WORK/pairs_train, $WORK/pairs_test.
set -euo pipefail
mkdir -p "$WORK/worlds"
train_worlds=(); test_worlds=()
for i in $(seq 1 "$N_TRAIN_WORLDS"); do train_worlds+=("$WORK/worlds/w$i"); done
for i in $(seq 1001 $((1000 + N_TEST_WORLDS))); do test_worlds+=("$WORK/worlds/w$i"); done
for w in "${train_worlds[@]}" "${test_worlds[@]}"; do
  seed=${w##*/w}
  [ -f "$w/world.json" ] || $PY -m xview_localizer.cli sim world --seed "$seed" --out "$w" \
      --size-m "$WORLD_SIZE_M" --zoom-min 18 --no-mbtiles
done
[ -f "$WORK/pairs_train/meta.json" ] || $PY -m xview_localizer.cli sim dataset --worlds "${train_worlds[@]}" \
    --pairs "$TRAIN_PAIRS" --out "$WORK/pairs_train" --width "$GROUND_W" --height "$GROUND_H" --seed 1 \
    --device "$SIM_DEVICE"
[ -f "$WORK/pairs_test/meta.json" ] || $PY -m xview_localizer.cli sim dataset --worlds "${test_worlds[@]}" \
    --pairs "$TEST_PAIRS" --out "$WORK/pairs_test" --width "$GROUND_W" --height "$GROUND_H" --seed 2 \
    --device "$SIM_DEVICE"
