#!/usr/bin/env bash
# Styled training and evaluation data (issue 14; docs/styles.md), in parallel (JOBS processes):
#   $WORK/worlds/s<seed>   training worlds, seeds 1..N_TRAIN_WORLDS, families cycled over the six
#                          training families (sim/style.py TRAINING_FAMILIES)
#   $WORK/worlds/s<seed>   held-out worlds in the training styles, seeds 1001..1000+N_TEST_WORLDS
#   $WORK/worlds/s<seed>   held-out worlds in the held-out styles (winter_snow, arid_sprawl),
#                          seeds 2001..2000+N_TEST_WORLDS
#   $WORK/pairs_styled_train, $WORK/pairs_test_train_styles, $WORK/pairs_test_heldout_styles
# (pairs with depth, KITTI protocol: prior +-20 m, yaw +-10 deg). Existing outputs are reused.
# Needs: PY WORK N_TRAIN_WORLDS N_TEST_WORLDS WORLD_SIZE_M TRAIN_PAIRS TEST_PAIRS GROUND_W GROUND_H JOBS
set -euo pipefail
PY=${PY:-.venv/bin/python}
WORK=${WORK:-/tmp/xview_styled}
N_TRAIN_WORLDS=${N_TRAIN_WORLDS:-18}
N_TEST_WORLDS=${N_TEST_WORLDS:-4}
WORLD_SIZE_M=${WORLD_SIZE_M:-400}
TRAIN_PAIRS=${TRAIN_PAIRS:-3000}
TEST_PAIRS=${TEST_PAIRS:-120}
GROUND_W=${GROUND_W:-512}
GROUND_H=${GROUND_H:-128}
JOBS=${JOBS:-2}
mkdir -p "$WORK/worlds"
train_fams=(town_grid suburb_curved rural_roads arterial_industrial autumn_town mediterranean_dry)
held_fams=(winter_snow arid_sprawl)
jobs_file="$WORK/world_jobs.txt"; : > "$jobs_file"
train=(); test_a=(); test_b=()
for i in $(seq 1 "$N_TRAIN_WORLDS"); do
  train+=("$WORK/worlds/s$i"); echo "$i ${train_fams[$(( (i - 1) % 6 ))]}" >> "$jobs_file"; done
for k in $(seq 1 "$N_TEST_WORLDS"); do
  s=$((1000 + k)); test_a+=("$WORK/worlds/s$s"); echo "$s ${train_fams[$(( (k - 1) % 6 ))]}" >> "$jobs_file"
  s=$((2000 + k)); test_b+=("$WORK/worlds/s$s"); echo "$s ${held_fams[$(( (k - 1) % 2 ))]}" >> "$jobs_file"
done
export PY WORK WORLD_SIZE_M
# shellcheck disable=SC2016
xargs -P "$JOBS" -L 1 bash -c '[ -f "$WORK/worlds/s$0/tiles/.done" ] || { rm -rf "$WORK/worlds/s$0" &&
  $PY -m xview_localizer.cli sim world --seed "$0" --family "$1" --out "$WORK/worlds/s$0" --size-m "$WORLD_SIZE_M" \
      --zoom-min 18 --zoom-max 20 --no-mbtiles >/dev/null && touch "$WORK/worlds/s$0/tiles/.done"; }' < "$jobs_file"
export_set() {  # name pairs seed worlds...
  local name=$1 n=$2 seed=$3; shift 3
  [ -f "$WORK/$name/meta.json" ] && return 0
  local parts=() per=$(( (n + JOBS - 1) / JOBS )) j
  for j in $(seq 0 $((JOBS - 1))); do
    rm -rf "$WORK/$name.part$j"
    $PY -m xview_localizer.cli sim dataset --worlds "$@" --pairs "$per" --out "$WORK/$name.part$j" \
        --width "$GROUND_W" --height "$GROUND_H" --seed "$((seed * 100 + j))" >/dev/null 2>&1 &
    parts+=("$WORK/$name.part$j")
  done
  wait
  $PY -m xview_localizer.train.merge_pairs --out "$WORK/$name" "${parts[@]}"
  rm -rf "${parts[@]}"
}
export_set pairs_styled_train "$TRAIN_PAIRS" 1 "${train[@]}"
export_set pairs_test_train_styles "$TEST_PAIRS" 2 "${test_a[@]}"
export_set pairs_test_heldout_styles "$TEST_PAIRS" 3 "${test_b[@]}"
echo "styled data in $WORK"
