#!/usr/bin/env bash
# The rounds that made the shipped default (issue 14; docs/styles.md "Continued fine-tunes"),
# after scripts/make_styled_data.sh + scripts/train_styled.sh made the first styled default
# (commit 6687ee0) and its data in $WORK (default /tmp/xv_styled):
#   data  $WORK2: the 18 training worlds + 24 more of the same six families (seeds 19-42),
#         4800 pairs; $WORK3: 12 lens-varied worlds (seeds 43-54, plumb_bob / fisheye / 360 deg
#         panoramas, sim/lens.py) with 1200 pairs, merged with the 4800 into 6000 (pairs_mix)
#   round 2  1500 steps, lr 1.5e-4, from the first styled default, on the 4800
#   round 3  2000 steps, lr 1e-4, from round 2, on the 4800
#   round 4  1800 steps, lr 1e-4, from round 3, on the 6000 (the shipped default)
#   then covariance per depth kind (with the low-vote-mass inflation), the gate (both
#   orientations, precision 0.98) on the calibration pairs, and the benchmark table.
# Every round is resumable (--resume); MAX_MINUTES ends a session early, re-running goes on.
# Batch 4, mixed depth kinds, half the steps without a prior yaw, --augment, as train_styled.sh.
#   WORK=/tmp/xv_styled scripts/train_styled_rounds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-/tmp/xv_styled}
WORK2=${WORK2:-/tmp/xv_styled2}
WORK3=${WORK3:-/tmp/xv_lens}
MAX_MINUTES=${MAX_MINUTES:-}
JOBS=${JOBS:-2}
CAL=$WORK/pairs_cal_train_styles
[ -f "$CAL/meta.json" ] || { echo "needs $CAL (README, 'Training')" >&2; exit 2; }
export PY

# data: 42 worlds / 4800 pairs (the first 18 worlds are shared with $WORK)
mkdir -p "$WORK2"
[ -e "$WORK2/worlds" ] || ln -s "$WORK/worlds" "$WORK2/worlds"
WORK=$WORK2 N_TRAIN_WORLDS=42 N_TEST_WORLDS=4 TRAIN_PAIRS=4800 JOBS=$JOBS scripts/make_styled_data.sh
# 12 lens-varied worlds (the sim draws each ground image's lens) and 1200 pairs from them
fams=(town_grid suburb_curved rural_roads arterial_industrial autumn_town mediterranean_dry)
mkdir -p "$WORK3/worlds"
for i in $(seq 43 54); do echo "$i ${fams[$(( (i - 1) % 6 ))]}"; done > "$WORK3/jobs.txt"
export WORK3
# shellcheck disable=SC2016
xargs -P "$JOBS" -L 1 bash -c '[ -f "$WORK3/worlds/s$0/tiles/.done" ] || { rm -rf "$WORK3/worlds/s$0" &&
  $PY -m xview_localizer.cli sim world --seed "$0" --family "$1" --out "$WORK3/worlds/s$0" --size-m 400 \
      --zoom-min 18 --zoom-max 20 --no-mbtiles >/dev/null && touch "$WORK3/worlds/s$0/tiles/.done"; }' < "$WORK3/jobs.txt"
if [ ! -f "$WORK3/pairs_lens_train/meta.json" ]; then
  worlds=(); for i in $(seq 43 54); do worlds+=("$WORK3/worlds/s$i"); done
  for j in 0 1; do
    rm -rf "$WORK3/pairs.part$j"
    $PY -m xview_localizer.cli sim dataset --worlds "${worlds[@]}" --pairs 600 --out "$WORK3/pairs.part$j" \
        --width 512 --height 128 --seed $((4300 + j)) >/dev/null 2>&1 &
  done
  wait
  $PY -m xview_localizer.train.merge_pairs --out "$WORK3/pairs_lens_train" "$WORK3/pairs.part0" "$WORK3/pairs.part1"
  rm -rf "$WORK3/pairs.part0" "$WORK3/pairs.part1"
fi
[ -f "$WORK3/pairs_mix/meta.json" ] || $PY -c "
import sys
from pathlib import Path
from xview_localizer.train.merge_pairs import merge_pair_dirs
merge_pair_dirs([Path(sys.argv[1]), Path(sys.argv[2])], Path(sys.argv[3]), move=False)
" "$WORK2/pairs_styled_train" "$WORK3/pairs_lens_train" "$WORK3/pairs_mix"

# the first styled default (commit 6687ee0) is where round 2 starts
INIT0=${INIT0:-$WORK2/init_round2.pt}
[ -f "$INIT0" ] || git show 6687ee0:xview_localizer/checkpoints/sparse_depth_compact.pt > "$INIT0"

round() {  # out dataset init steps lr
  local args=(train --model sparse-depth --dataset "$2" --out "$1" --steps "$4" --batch-size 4 --lr "$5"
              --init "$3" --augment --depth-kind mixed --depth-noise 0.05 --depth-holes 0.1 --mixed-orientation
              --match-ce-weight 2 --vote-ce-weight 10 --log-every 10 --save-every 50 --resume --no-progress)
  [ -n "$MAX_MINUTES" ] && args+=(--max-minutes "$MAX_MINUTES")
  [ -f "$1/done" ] && return 0
  $PY -m xview_localizer.cli "${args[@]}"
  # --max-minutes leaves the run unfinished: stop here, re-running continues it
  $PY -c "import sys, torch; sys.exit(0 if torch.load(sys.argv[1], weights_only=True)['step'] >= int(sys.argv[2]) else 3)" \
      "$1/last.pt" "$4" || { echo "$1 not finished; re-run to continue" >&2; exit 3; }
  touch "$1/done"
}
round "$WORK2/run2" "$WORK2/pairs_styled_train" "$INIT0" 1500 1.5e-4
round "$WORK2/run3" "$WORK2/pairs_styled_train" "$WORK2/run2/model.pt" 2000 1e-4
round "$WORK3/run4" "$WORK3/pairs_mix" "$WORK2/run3/model.pt" 1800 1e-4

OUT=$WORK3/run4
cp "$OUT/model.pt" "$OUT/candidate.pt"
for k in none metric relative inverse; do
  $PY -m xview_localizer.cli calibrate-covariance --checkpoint "$OUT/candidate.pt" --dataset "$CAL" \
      --depth-kind "$k" --max-samples 150 --write
done
$PY -m xview_localizer.cli benchmark --set cal="$CAL" --matcher candidate="$OUT/candidate.pt" \
    --calibrate-gate candidate --gate-set cal --target-precision 0.98 --write --max-samples 150
$PY -m xview_localizer.cli benchmark --set train_styles="$WORK/pairs_test_train_styles" \
    --set heldout_styles="$WORK/pairs_test_heldout_styles" --matcher default= --matcher candidate="$OUT/candidate.pt" \
    --matcher dense_flow=dense_flow --max-samples 100 --markdown "$OUT/table.md" --out "$OUT/table.json"
echo "candidate: $OUT/candidate.pt (copy it to xview_localizer/checkpoints/sparse_depth_compact.pt when it beats the default)"
