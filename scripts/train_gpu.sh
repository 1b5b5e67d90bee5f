#!/usr/bin/env bash
# One CUDA GPU + 16 CPU cores, no network, <= 9 minutes (issue 14, requirement 6):
#   scripts/train_gpu.sh OUT_DIR
# 1. styled data in parallel on every core (scripts/make_styled_data.sh, JOBS = nproc): training
#    worlds of the six training style families, held-out worlds in the training styles and in the
#    held-out styles, pairs with depth;
# 2. fine-tunes the packaged sparse-depth matcher (the default) on them with photometric
#    augmentation, mixed depth kinds and orientations (scripts/train_styled.sh settings), resumable,
#    time-boxed by TRAIN_MINUTES;
# 3. calibrates the covariance per depth kind (flat ground and metric), the low-evidence gate and
#    the covariance again (its vote-peak inflation counts only frames the gate passes),
#    and evaluates it beside the packaged default, dense-flow and the prior (xview-localizer benchmark);
# 4. writes OUT_DIR/model.pt (the candidate), OUT_DIR/benchmark.json + benchmark.md (the status
#    table), OUT_DIR/train/ (log, last.pt), OUT_DIR/timings.json.
# Copy OUT_DIR/model.pt into xview_localizer/checkpoints/sparse_depth_compact.pt only when its
# held-out rows beat the shipped ones. Tiny CPU check (test/test_train_gpu_script.py):
#   TINY=1 DEVICE=cpu scripts/train_gpu.sh /tmp/out
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/train_gpu.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
JOBS=${JOBS:-$(nproc)}
if [ "${TINY:-0}" = 1 ]; then
  : "${N_TRAIN_WORLDS:=2}" "${N_TEST_WORLDS:=1}" "${WORLD_SIZE_M:=300}" "${TRAIN_PAIRS:=8}" "${TEST_PAIRS:=2}"
  : "${STEPS:=3}" "${BATCH:=2}" "${TRAIN_MINUTES:=2}" "${EVAL_SAMPLES:=2}" "${CAL_SAMPLES:=2}"
fi
N_TRAIN_WORLDS=${N_TRAIN_WORLDS:-48}
N_TEST_WORLDS=${N_TEST_WORLDS:-4}
WORLD_SIZE_M=${WORLD_SIZE_M:-400}
TRAIN_PAIRS=${TRAIN_PAIRS:-9600}
TEST_PAIRS=${TEST_PAIRS:-200}
STEPS=${STEPS:-4000}
BATCH=${BATCH:-16}
LR=${LR:-3e-4}
TRAIN_MINUTES=${TRAIN_MINUTES:-3.5}
EVAL_SAMPLES=${EVAL_SAMPLES:-200}
CAL_SAMPLES=${CAL_SAMPLES:-150}
WORK=${WORK:-$OUT/data}
export PY WORK N_TRAIN_WORLDS N_TEST_WORLDS WORLD_SIZE_M TRAIN_PAIRS TEST_PAIRS JOBS
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per data process: JOBS processes share the cores
t0=$(date +%s)
scripts/make_styled_data.sh
t1=$(date +%s)
unset OMP_NUM_THREADS MKL_NUM_THREADS
WORK=$WORK OUT=$OUT/train STEPS=$STEPS BATCH=$BATCH LR=$LR DEVICE=$DEVICE MAX_MINUTES=$TRAIN_MINUTES \
  scripts/train_styled.sh
t2=$(date +%s)
cp "$OUT/train/model.pt" "$OUT/model.pt"
dev=$DEVICE; [ "$dev" = cuda ] || dev=cpu
calibrate_covariance() {
  for kind in none metric; do
    $PY -m xview_localizer.cli calibrate-covariance --checkpoint "$OUT/model.pt" \
        --dataset "$WORK/pairs_test_train_styles" --depth-kind "$kind" --max-samples "$CAL_SAMPLES" --write \
        --device "$dev" --out "$OUT/calibration_$kind.json" > /dev/null
  done
}
# covariance, then the low-evidence gate, then the covariance again: its vote-peak inflation
# counts only the frames the gate passes
calibrate_covariance
$PY -m xview_localizer.cli benchmark --device "$dev" --max-samples "$EVAL_SAMPLES" \
    --set "train_styles=$WORK/pairs_test_train_styles" --matcher "candidate=$OUT/model.pt" \
    --calibrate-gate candidate --gate-set train_styles --write --out "$OUT/gate.json" > "$OUT/gate.log"
calibrate_covariance
$PY -m xview_localizer.cli benchmark --device "$dev" --max-samples "$EVAL_SAMPLES" \
    --set "train_styles=$WORK/pairs_test_train_styles" --set "heldout_styles=$WORK/pairs_test_heldout_styles" \
    --matcher "candidate=$OUT/model.pt" --matcher "default=" --matcher "dense_flow=dense_flow" \
    --out "$OUT/benchmark.json" --markdown "$OUT/benchmark.md" > "$OUT/benchmark.log"
t3=$(date +%s)
cat "$OUT/benchmark.md"
printf '{"data_s": %d, "train_s": %d, "eval_s": %d, "total_s": %d, "device": "%s", "jobs": %d}\n' \
  $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) $((t3 - t0)) "$DEVICE" "$JOBS" | tee "$OUT/timings.json"
